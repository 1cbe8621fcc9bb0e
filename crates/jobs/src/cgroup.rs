//! One cgroup v2 directory per job, under a root the runtime owns (default
//! `/sys/fs/cgroup/clump`), so the job's CPU time and memory are counted exactly, and jobs are
//! bounded: all of them together leave the node's own daemons [`reserve`] of its memory (the
//! kernel's OOM killer then picks among jobs, never clumpd or PID 1), and each may have at most
//! [`PIDS_MAX`] tasks (a fork bomb stays in its job). CPU is shared by equal weights (the
//! kernel's default `cpu.weight`), so no job starves the others.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// Tasks (processes and threads) one job may have.
pub const PIDS_MAX: u32 = 4096;

/// Memory kept from jobs for the node itself: an eighth of it, at least 128 MiB, at most 1 GiB.
pub fn reserve(total: u64) -> u64 {
    (total / 8).clamp(128 << 20, 1 << 30).min(total / 2)
}

/// The node's memory in bytes, from `/proc/meminfo`'s `MemTotal`.
fn mem_total(meminfo: &str) -> Option<u64> {
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[derive(Debug)]
pub struct Cgroups {
    root: PathBuf,
}

impl Cgroups {
    /// The root ready for jobs, or why jobs go without cgroups.
    pub fn prepare(root: &Path) -> Result<Cgroups, String> {
        let parent = root.parent().unwrap_or(Path::new("/"));
        let fs = rustix::fs::statfs(parent).map_err(|e| format!("cannot stat {}: {e}", parent.display()))?;
        if fs.f_type != CGROUP2_SUPER_MAGIC {
            return Err(format!("{} is not a cgroup v2 file system", parent.display()));
        }
        std::fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        // Memory is counted and bounded per job only where the controller reaches us; CPU time
        // always is (cpu.stat exists in every cgroup).
        for dir in [parent, root] {
            for controller in ["+memory", "+cpu", "+pids"] {
                if let Err(e) = std::fs::write(dir.join("cgroup.subtree_control"), controller) {
                    tracing::debug!(dir = %dir.display(), controller, %e, "cgroup controller not enabled");
                }
            }
        }
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| mem_total(&m));
        if let Some(total) = total {
            let max = total - reserve(total);
            match std::fs::write(root.join("memory.max"), max.to_string()) {
                Ok(()) => tracing::info!(max_mib = max >> 20, "jobs together may use this much memory"),
                Err(e) => tracing::warn!("jobs' memory is not bounded: {e}"),
            }
        }
        Ok(Cgroups {
            root: root.to_owned(),
        })
    }

    /// A new directory for the job and a directory fd for `CLONE_INTO_CGROUP`.
    pub fn create(&self, job: &str) -> std::io::Result<(PathBuf, OwnedFd)> {
        let dir = self.root.join(job);
        std::fs::create_dir(&dir)?;
        if let Err(e) = std::fs::write(dir.join("pids.max"), PIDS_MAX.to_string()) {
            tracing::debug!(job, "the job's tasks are not bounded: {e}");
        }
        let fd = rustix::fs::open(
            &dir,
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        );
        match fd {
            Ok(fd) => Ok((dir, fd)),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_keeps_an_eighth_of_its_memory_within_bounds() {
        const MIB: u64 = 1 << 20;
        assert_eq!(reserve(1024 * MIB), 128 * MIB);
        assert_eq!(reserve(4096 * MIB), 512 * MIB);
        assert_eq!(reserve(64 * 1024 * MIB), 1024 * MIB);
        // A tiny node still leaves jobs half.
        assert_eq!(reserve(128 * MIB), 64 * MIB);
    }

    #[test]
    fn mem_total_is_read_from_meminfo() {
        let m = "MemTotal:        1012908 kB\nMemFree:          800000 kB\n";
        assert_eq!(mem_total(m), Some(1_012_908 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total("MemTotal: lots kB\n"), None);
    }
}
