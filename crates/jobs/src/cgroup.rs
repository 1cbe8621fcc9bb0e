//! One cgroup v2 directory per job, under a root the runtime owns (default
//! `/sys/fs/cgroup/clump`), so the job's CPU time and memory are counted exactly and, later,
//! CRIU can freeze it as a whole.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

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
        // Memory is counted per job only where the controller reaches us; CPU time always is
        // (cpu.stat exists in every cgroup).
        for controller in ["+memory", "+cpu"] {
            if let Err(e) = std::fs::write(root.join("cgroup.subtree_control"), controller) {
                tracing::debug!(controller, %e, "cgroup controller not enabled for jobs");
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
