//! The filesystems every node needs, as a table: each failure is logged and skipped (u-root style),
//! because a node without /dev/shm is still a node.

use rustix::mount::{mount, MountFlags};
use std::ffi::CStr;
use std::path::Path;

struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MountFlags,
    data: &'static CStr,
}

const fn m(
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MountFlags,
    data: &'static CStr,
) -> Mount {
    Mount {
        source,
        target,
        fstype,
        flags,
        data,
    }
}

const SECURE: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);

/// In order: /dev first so /dev/kmsg works for the log.
const TABLE: &[Mount] = &[
    m("devtmpfs", "/dev", "devtmpfs", MountFlags::NOSUID, c"mode=0755"),
    // Users and their jobs see only their own processes, not the node's (SECURITY.md, G5).
    m("proc", "/proc", "proc", SECURE, c"hidepid=invisible"),
    m("sysfs", "/sys", "sysfs", SECURE, c""),
    m(
        "devpts",
        "/dev/pts",
        "devpts",
        MountFlags::NOSUID.union(MountFlags::NOEXEC),
        c"gid=5,mode=0620,ptmxmode=0666",
    ),
    m(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        MountFlags::NOSUID.union(MountFlags::NODEV),
        c"mode=1777",
    ),
    m(
        "tmpfs",
        "/run",
        "tmpfs",
        MountFlags::NOSUID.union(MountFlags::NODEV),
        c"mode=0755",
    ),
    m(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MountFlags::NOSUID.union(MountFlags::NODEV),
        c"mode=1777",
    ),
    m("cgroup2", "/sys/fs/cgroup", "cgroup2", SECURE, c"nsdelegate"),
];

/// Directories the services write to, made after the mounts (`/` is the initramfs, writable; `/run`
/// a tmpfs): PID 1's log and netd's lease in /run/clump, clumpd's `mosix.map` in /etc/clump, state
/// in /var/lib.
pub const DIRS: &[&str] = &["/run/clump", "/etc/clump", "/var/lib"];

/// Creates [`DIRS`] under `root` (`/` on a node). Returns how many could not be made.
pub fn make_dirs(root: &Path) -> usize {
    let mut failed = 0;
    for dir in DIRS {
        let path = root.join(dir.trim_start_matches('/'));
        if let Err(e) = std::fs::create_dir_all(&path) {
            failed += 1;
            tracing::warn!(dir = %path.display(), error = %e, "cannot create directory");
        }
    }
    failed
}

/// Mounts the table. Returns how many mounts failed.
pub fn mount_all() -> usize {
    let mut failed = 0;
    for entry in TABLE {
        if let Err(e) = mount_one(entry) {
            failed += 1;
            tracing::warn!(target = entry.target, fstype = entry.fstype, error = %e, "mount failed");
        }
    }
    failed
}

fn mount_one(entry: &Mount) -> std::io::Result<()> {
    std::fs::create_dir_all(entry.target)?;
    if is_mountpoint(entry.target) {
        return Ok(());
    }
    let data = (!entry.data.is_empty()).then_some(entry.data);
    match mount(entry.source, entry.target, entry.fstype, entry.flags, data) {
        // An option this kernel does not know (hidepid=invisible before 5.8): mounted without
        // options rather than not at all.
        Err(rustix::io::Errno::INVAL) if data.is_some() => {
            tracing::warn!(target = entry.target, options = ?entry.data, "mount options refused; mounting without them");
            mount(entry.source, entry.target, entry.fstype, entry.flags, None).map_err(std::io::Error::from)
        }
        other => other.map_err(std::io::Error::from),
    }
}

/// A directory is a mount point when its device differs from its parent's.
fn is_mountpoint(path: &str) -> bool {
    let Some(parent) = Path::new(path).parent() else {
        return true;
    };
    match (std::fs::metadata(path), std::fs::metadata(parent)) {
        (Ok(a), Ok(b)) => std::os::unix::fs::MetadataExt::dev(&a) != std::os::unix::fs::MetadataExt::dev(&b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_directories_are_made_under_the_root() {
        let root = std::env::temp_dir().join(format!("clump-init-dirs-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        assert_eq!(make_dirs(&root), 0);
        assert_eq!(make_dirs(&root), 0, "existing directories are fine");
        for dir in ["run/clump", "etc/clump", "var/lib"] {
            assert!(root.join(dir).is_dir(), "{dir}");
        }
        // A file where a directory should be is reported, not fatal.
        std::fs::remove_dir_all(root.join("var")).unwrap();
        std::fs::write(root.join("var"), b"").unwrap();
        assert_eq!(make_dirs(&root), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
