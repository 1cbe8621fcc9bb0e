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
    m("proc", "/proc", "proc", SECURE, c""),
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
    mount(entry.source, entry.target, entry.fstype, entry.flags, data).map_err(std::io::Error::from)
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
