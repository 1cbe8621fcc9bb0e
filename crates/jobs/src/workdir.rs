//! A job's working directory travels with it (issue 6, "Files"): scanned on the node it leaves,
//! written at the same path on the node it goes to, and at its end or return written back into
//! the home node's copy. System directories are the image's and the same on every node: they
//! never travel. Paths inside are checked on the way in: relative, no `..`, no symlink followed.

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// The default bound on what travels: a larger working directory keeps the job home.
pub const DEFAULT_LIMIT: u64 = 256 << 20;
/// The most entries one directory may carry.
pub const MAX_ENTRIES: usize = 100_000;

/// Trees every node has from the image (or the kernel): never staged.
const SYSTEM: &[&str] = &[
    "/bin", "/sbin", "/lib", "/lib64", "/usr", "/etc", "/proc", "/sys", "/dev", "/run", "/var/lib",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Kind {
    Dir,
    File { size: u64 },
    Symlink { target: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the working directory.
    pub path: String,
    pub mode: u32,
    /// Modification time, unix seconds.
    pub mtime: i64,
    #[serde(flatten)]
    pub kind: Kind,
}

/// A working directory on its way: where it is (the same absolute path on every node) and
/// what is in it, files' bytes following in entry order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workdir {
    pub root: String,
    pub entries: Vec<Entry>,
}

impl Workdir {
    /// The bytes of its files, at most `u64::MAX`: sizes from another node must not wrap
    /// around to a small total that passes [`check`]'s limit.
    pub fn bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                Kind::File { size } => size,
                _ => 0,
            })
            .fold(0, u64::saturating_add)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkdirError {
    #[error("its working directory {dir} holds more than {limit} MiB (the most that travels)", limit = .limit >> 20)]
    TooBig { dir: String, limit: u64 },
    #[error("its working directory {dir} holds more than {MAX_ENTRIES} entries")]
    TooMany { dir: String },
    #[error("its working directory holds {0}, which cannot travel (a device, fifo or socket)")]
    Special(String),
    #[error("{0:?} is not a path inside a working directory")]
    BadPath(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Whether a job working in `dir` needs it carried: not a system tree, not `/`.
pub fn travels(dir: &Path) -> bool {
    dir.is_absolute() && dir != Path::new("/") && !SYSTEM.iter().any(|s| dir.starts_with(s))
}

/// The working directory of a job's program (the reaper's first child), else the reaper's.
pub fn of(reaper: i32) -> Option<PathBuf> {
    let pids = crate::stat::tree(reaper);
    let pid = pids.get(1).copied().unwrap_or(reaper);
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// Lists `dir` for the journey; more than `limit` bytes of files is refused.
pub fn scan(dir: &Path, limit: u64) -> Result<Workdir, WorkdirError> {
    let root = dir
        .to_str()
        .ok_or_else(|| WorkdirError::BadPath(dir.display().to_string()))?
        .to_owned();
    let mut entries = Vec::new();
    let mut total = 0u64;
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for item in std::fs::read_dir(dir.join(&rel))? {
            let item = item?;
            let rel = rel.join(item.file_name());
            let path = rel
                .to_str()
                .ok_or_else(|| WorkdirError::BadPath(rel.display().to_string()))?
                .to_owned();
            let meta = std::fs::symlink_metadata(item.path())?;
            let kind = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(item.path())?;
                Kind::Symlink {
                    target: target
                        .to_str()
                        .ok_or_else(|| WorkdirError::BadPath(target.display().to_string()))?
                        .to_owned(),
                }
            } else if meta.is_dir() {
                todo.push(rel.clone());
                Kind::Dir
            } else if meta.is_file() {
                total += meta.len();
                if total > limit {
                    return Err(WorkdirError::TooBig { dir: root, limit });
                }
                Kind::File { size: meta.len() }
            } else {
                return Err(WorkdirError::Special(path));
            };
            entries.push(Entry {
                path,
                mode: meta.mode() & 0o7777,
                mtime: meta.mtime(),
                kind,
            });
            if entries.len() > MAX_ENTRIES {
                return Err(WorkdirError::TooMany { dir: root });
            }
        }
    }
    // Parents before children: a directory is created before what it holds.
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Workdir { root, entries })
}

/// A path from another node, as a relative path with nothing but normal components.
pub fn safe_path(rel: &str) -> Result<PathBuf, WorkdirError> {
    let path = Path::new(rel);
    let ok = !rel.is_empty()
        && !rel.contains('\0')
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(path.to_owned())
    } else {
        Err(WorkdirError::BadPath(rel.to_owned()))
    }
}

/// Checks a working directory from another node before anything is written: an absolute root
/// that travels, safe entry paths, files within `limit`.
pub fn check(wd: &Workdir, limit: u64) -> Result<PathBuf, WorkdirError> {
    let root = PathBuf::from(&wd.root);
    if !travels(&root) || safe_path(wd.root.trim_start_matches('/')).is_err() {
        return Err(WorkdirError::BadPath(wd.root.clone()));
    }
    if wd.entries.len() > MAX_ENTRIES {
        return Err(WorkdirError::TooMany { dir: wd.root.clone() });
    }
    for e in &wd.entries {
        safe_path(&e.path)?;
    }
    if wd.bytes() > limit {
        return Err(WorkdirError::TooBig {
            dir: wd.root.clone(),
            limit,
        });
    }
    Ok(root)
}

/// Writes a checked working directory under its root, the files' bytes read from `next` (a
/// source of chunks) in entry order, as root for a job of `owner`.
///
/// The directory is often one its user can change meanwhile (home's copy, or the job itself on
/// the target), so nothing here follows a path twice: every directory, from `/` down, is opened
/// with `O_NOFOLLOW` relative to the one before (a symlink anywhere on the way refuses the
/// entry), a file is always a new inode (`O_EXCL` after removing what was there: no write
/// through a hard link), modes are set on open fds and lose set-uid and set-gid, and what is
/// created belongs to `owner` (a directory that was there keeps its owner, and its mode unless it
/// is `owner`'s).
pub fn write(
    wd: &Workdir,
    owner: Option<u32>,
    mut next: impl FnMut() -> Result<Vec<u8>, WorkdirError>,
) -> Result<(), WorkdirError> {
    let root = open_root(Path::new(&wd.root), owner)?;
    for e in &wd.entries {
        let rel = safe_path(&e.path)?;
        let (Some(name), Some(parent)) = (rel.file_name(), rel.parent()) else {
            return Err(WorkdirError::BadPath(e.path.clone()));
        };
        let mut dir = root.try_clone()?;
        for up in parent.components() {
            dir = open_dir(&dir, up.as_os_str(), &e.path)?;
            users_own(&dir, owner, &e.path)?;
        }
        let existing = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).ok();
        let is_dir = existing
            .as_ref()
            .is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        let mode = Mode::from_raw_mode(e.mode & 0o1777);
        match &e.kind {
            Kind::Dir => {
                if existing.is_some() && !is_dir {
                    rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(io)?;
                }
                if !is_dir {
                    rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)).map_err(io)?;
                }
                let fd = open_dir(&dir, name, &e.path)?;
                let theirs = existing
                    .as_ref()
                    .filter(|_| is_dir)
                    .is_some_and(|st| owner.is_some_and(|o| o != st.st_uid));
                if !theirs {
                    own(&fd, owner)?;
                    rustix::fs::fchmod(&fd, mode).map_err(io)?;
                }
            }
            Kind::Symlink { target } => {
                if is_dir {
                    return Err(WorkdirError::BadPath(format!("{} (a directory here)", e.path)));
                }
                if existing.is_some() {
                    rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(io)?;
                }
                rustix::fs::symlinkat(target.as_str(), &dir, name).map_err(io)?;
                if let Some(uid) = owner {
                    rustix::fs::chownat(
                        &dir,
                        name,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        None,
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(io)?;
                }
            }
            Kind::File { size } => {
                if is_dir {
                    return Err(WorkdirError::BadPath(e.path.clone()));
                }
                if existing.is_some() {
                    rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(io)?;
                }
                let fd = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io)?;
                let mut file = std::fs::File::from(fd);
                let mut left = *size;
                while left > 0 {
                    let chunk = next()?;
                    if chunk.len() as u64 > left {
                        return Err(WorkdirError::BadPath(format!(
                            "{} (longer than announced)",
                            e.path
                        )));
                    }
                    std::io::Write::write_all(&mut file, &chunk)?;
                    left -= chunk.len() as u64;
                }
                own(&file, owner)?;
                rustix::fs::fchmod(&file, mode).map_err(io)?;
                let mtime = UNIX_EPOCH + Duration::from_secs(u64::try_from(e.mtime).unwrap_or(0));
                let _ = file.set_modified(mtime);
            }
        }
    }
    Ok(())
}

fn io(e: rustix::io::Errno) -> WorkdirError {
    WorkdirError::Io(e.into())
}

/// Opens directory `name` in `dir`, never through a symlink.
fn open_dir(dir: impl AsFd, name: impl rustix::path::Arg, shown: &str) -> Result<OwnedFd, WorkdirError> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => {
            WorkdirError::BadPath(format!("{shown} (a symlink or not a directory on the way)"))
        }
        e => io(e),
    })
}

/// The root of a working directory, opened from `/` one component at a time without following
/// a symlink; the missing ones are made (the root itself then belongs to `owner`).
fn open_root(root: &Path, owner: Option<u32>) -> Result<OwnedFd, WorkdirError> {
    let shown = root.display().to_string();
    if !root.is_absolute() {
        return Err(WorkdirError::BadPath(shown));
    }
    let mut dir = open_dir(rustix::fs::CWD, "/", &shown)?;
    let mut made = false;
    for c in root.components() {
        let name = match c {
            Component::RootDir => continue,
            Component::Normal(name) => name,
            _ => return Err(WorkdirError::BadPath(shown)),
        };
        made = false;
        dir = match open_dir(&dir, name, &shown) {
            Err(WorkdirError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)).map_err(io)?;
                made = true;
                open_dir(&dir, name, &shown)?
            }
            opened => opened?,
        };
    }
    if made {
        own(&dir, owner)?;
    }
    users_own(&dir, owner, &shown)?;
    Ok(dir)
}

/// Root writes into a directory for a job only when the job's user owns it (or the job is
/// root's): a job may work in a directory it can enter but not write, another user's say, and
/// its copy coming back must not plant files there that its user could not.
fn users_own(dir: impl AsFd, owner: Option<u32>, shown: &str) -> Result<(), WorkdirError> {
    let Some(uid) = owner.filter(|u| *u != 0) else {
        return Ok(());
    };
    let st = rustix::fs::fstat(dir).map_err(io)?;
    if st.st_uid == uid {
        Ok(())
    } else {
        Err(WorkdirError::BadPath(format!(
            "{shown} (in a directory of uid {}, not of the job's uid {uid})",
            st.st_uid
        )))
    }
}

/// Gives what was made for a job to its user (the group stays: only the uid travels).
fn own(fd: impl AsFd, owner: Option<u32>) -> Result<(), WorkdirError> {
    match owner {
        Some(uid) => rustix::fs::fchown(fd, Some(rustix::fs::Uid::from_raw(uid)), None).map_err(io),
        None => Ok(()),
    }
}

/// Reads the files of a scanned working directory in entry order, in chunks of at most `max`.
pub fn read_files(
    wd: &Workdir,
    max: usize,
    mut send: impl FnMut(&[u8]) -> Result<(), WorkdirError>,
) -> Result<(), WorkdirError> {
    let root = Path::new(&wd.root);
    let mut buf = vec![0u8; max];
    for e in &wd.entries {
        let Kind::File { size } = e.kind else { continue };
        let mut file = std::fs::File::open(root.join(&e.path))?;
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(max);
            // A file that shrank since the scan is padded with zeros: its size is announced.
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                buf[..want].fill(0);
                send(&buf[..want])?;
                left -= want as u64;
                continue;
            }
            send(&buf[..n])?;
            left -= n as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn system_trees_and_the_root_stay() {
        assert!(!travels(Path::new("/")));
        assert!(!travels(Path::new("/usr/share")));
        assert!(!travels(Path::new("relative")));
        assert!(travels(Path::new("/root/work")));
        assert!(travels(Path::new("/tmp/x")));
    }

    #[test]
    fn only_plain_relative_paths_come_in() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a", "a\0b"] {
            assert!(safe_path(bad).is_err(), "{bad:?}");
        }
        assert!(safe_path("a/b.txt").is_ok());
    }

    #[test]
    fn a_tree_goes_and_arrives_alike() {
        let from = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(from.path().join("sub")).expect("mkdir");
        std::fs::write(from.path().join("in.txt"), b"hello\n").expect("write");
        std::fs::write(from.path().join("sub/data"), vec![7u8; 200_000]).expect("write");
        std::os::unix::fs::symlink("in.txt", from.path().join("link")).expect("symlink");
        let wd = scan(from.path(), DEFAULT_LIMIT).expect("scan");
        assert_eq!(wd.bytes(), 200_006);
        let mut chunks = Vec::new();
        read_files(&wd, 65_536, |c| {
            chunks.push(c.to_vec());
            Ok(())
        })
        .expect("read");
        let to = tempfile::tempdir().expect("tempdir");
        let moved = Workdir {
            root: to.path().join("w").to_str().expect("utf-8").to_owned(),
            entries: wd.entries.clone(),
        };
        check(&moved, DEFAULT_LIMIT).expect("check");
        let mut chunks = chunks.into_iter();
        write(&moved, None, || {
            chunks.next().ok_or(WorkdirError::BadPath("short".into()))
        })
        .expect("write");
        let w = to.path().join("w");
        assert_eq!(std::fs::read(w.join("in.txt")).expect("read"), b"hello\n");
        assert_eq!(
            std::fs::read(w.join("sub/data")).expect("read"),
            vec![7u8; 200_000]
        );
        assert_eq!(
            std::fs::read_link(w.join("link")).expect("link"),
            Path::new("in.txt")
        );
    }

    #[test]
    fn file_sizes_that_wrap_around_are_too_big() {
        let file = |path: &str, size| Entry {
            path: path.into(),
            mode: 0o644,
            mtime: 0,
            kind: Kind::File { size },
        };
        // Summed in u64 these are 0 bytes: they passed the limit, then the writer took 2^64.
        let wd = Workdir {
            root: "/tmp/x".into(),
            entries: vec![file("a", u64::MAX), file("b", 1)],
        };
        assert_eq!(wd.bytes(), u64::MAX);
        assert!(matches!(
            check(&wd, DEFAULT_LIMIT),
            Err(WorkdirError::TooBig { .. })
        ));
    }

    #[test]
    fn too_big_or_hostile_trees_are_refused() {
        let from = tempfile::tempdir().expect("tempdir");
        std::fs::write(from.path().join("big"), vec![0u8; 4096]).expect("write");
        assert!(matches!(
            scan(from.path(), 1000),
            Err(WorkdirError::TooBig { .. })
        ));
        let evil = Workdir {
            root: "/tmp/x".into(),
            entries: vec![Entry {
                path: "../../etc/shadow".into(),
                mode: 0o644,
                mtime: 0,
                kind: Kind::File { size: 1 },
            }],
        };
        assert!(check(&evil, DEFAULT_LIMIT).is_err());
        let system = Workdir {
            root: "/etc".into(),
            entries: vec![],
        };
        assert!(check(&system, DEFAULT_LIMIT).is_err());
    }

    #[test]
    fn nothing_is_written_through_a_symlink() {
        let outside = tempfile::tempdir().expect("tempdir");
        let to = tempfile::tempdir().expect("tempdir");
        let root = to.path().join("w");
        std::fs::create_dir(&root).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), root.join("d")).expect("symlink");
        let wd = Workdir {
            root: root.to_str().expect("utf-8").into(),
            entries: vec![Entry {
                path: "d/planted".into(),
                mode: 0o644,
                mtime: 0,
                kind: Kind::File { size: 1 },
            }],
        };
        let mut once = Some(vec![b'x']);
        let result = write(&wd, None, || once.take().ok_or(WorkdirError::BadPath("x".into())));
        assert!(result.is_err());
        assert!(!outside.path().join("planted").exists());
        // Deeper: a real directory behind the symlink does not make the way safe.
        std::fs::create_dir(outside.path().join("sub")).expect("mkdir");
        let deeper = Workdir {
            root: wd.root.clone(),
            entries: vec![Entry {
                path: "d/sub/planted".into(),
                mode: 0o644,
                mtime: 0,
                kind: Kind::File { size: 1 },
            }],
        };
        let mut once = Some(vec![b'x']);
        let result = write(&deeper, None, || {
            once.take().ok_or(WorkdirError::BadPath("x".into()))
        });
        assert!(result.is_err());
        assert!(!outside.path().join("sub/planted").exists());
    }

    fn file(path: &str, mode: u32, size: u64) -> Entry {
        Entry {
            path: path.into(),
            mode,
            mtime: 0,
            kind: Kind::File { size },
        }
    }

    fn bytes(data: &[u8]) -> impl FnMut() -> Result<Vec<u8>, WorkdirError> {
        let mut once = Some(data.to_vec());
        move || once.take().ok_or(WorkdirError::BadPath("no more bytes".into()))
    }

    /// A user who owns the directory at home points a part of it at something of root's while
    /// the job is away: the copy-back must neither chmod through it nor write through it.
    #[test]
    fn a_planted_symlink_or_hard_link_changes_nothing_outside() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::fs::write(outside.path().join("secret"), b"root's").expect("write");
        let to = tempfile::tempdir().expect("tempdir");
        let root = to.path().join("w");
        std::fs::create_dir(&root).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), root.join("d")).expect("symlink");
        std::fs::hard_link(outside.path().join("secret"), root.join("linked")).expect("link");
        let wd = Workdir {
            root: root.to_str().expect("utf-8").into(),
            entries: vec![
                Entry {
                    path: "d".into(),
                    mode: 0o777,
                    mtime: 0,
                    kind: Kind::Dir,
                },
                file("linked", 0o644, 5),
            ],
        };
        write(&wd, None, bytes(b"mine!")).expect("write");
        let mode = std::fs::metadata(outside.path()).expect("stat").mode() & 0o7777;
        assert_eq!(mode, 0o700, "the symlink's target was chmodded");
        assert!(std::fs::symlink_metadata(root.join("d")).expect("stat").is_dir());
        assert_eq!(
            std::fs::read(outside.path().join("secret")).expect("read"),
            b"root's"
        );
        assert_eq!(std::fs::read(root.join("linked")).expect("read"), b"mine!");
    }

    #[test]
    fn a_root_reached_through_a_symlink_is_refused() {
        let outside = tempfile::tempdir().expect("tempdir");
        let to = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path(), to.path().join("link")).expect("symlink");
        let wd = Workdir {
            root: to.path().join("link/w").to_str().expect("utf-8").into(),
            entries: vec![file("planted", 0o644, 1)],
        };
        assert!(matches!(
            write(&wd, None, bytes(b"x")),
            Err(WorkdirError::BadPath(_))
        ));
        assert!(!outside.path().join("w").exists());
    }

    /// A job of one user worked in another's directory (it could enter it, not write it): its
    /// copy does not come back into it, nor into a directory of another's inside its own.
    #[test]
    fn nothing_is_written_into_another_user_s_directory() {
        let me = rustix::process::getuid().as_raw();
        let other = if me == 4321 { 4322 } else { 4321 };
        let to = tempfile::tempdir().expect("tempdir");
        let wd = Workdir {
            root: to.path().to_str().expect("utf-8").into(),
            entries: vec![file("planted", 0o644, 1)],
        };
        assert!(matches!(
            write(&wd, Some(other), bytes(b"x")),
            Err(WorkdirError::BadPath(_))
        ));
        assert!(!to.path().join("planted").exists());
        if me == 0 {
            let root = to.path().join("mine");
            std::fs::create_dir(&root).expect("mkdir");
            std::os::unix::fs::chown(&root, Some(other), None).expect("chown");
            std::fs::create_dir(root.join("roots")).expect("mkdir");
            let wd = Workdir {
                root: root.to_str().expect("utf-8").into(),
                entries: vec![file("roots/planted", 0o644, 1)],
            };
            assert!(write(&wd, Some(other), bytes(b"x")).is_err());
            assert!(!root.join("roots/planted").exists());
        }
        write(&wd, Some(me), bytes(b"x")).expect("the owner's own");
    }

    /// What root writes for a job is the job's user's, and never set-uid or set-gid.
    #[test]
    fn written_files_belong_to_the_job_s_user_without_set_id_bits() {
        let me = rustix::process::getuid().as_raw();
        // Root (as on a node) can give files away; anyone else only to themselves.
        let owner = if me == 0 { 4321 } else { me };
        let to = tempfile::tempdir().expect("tempdir");
        let root = to.path().join("new/w");
        let wd = Workdir {
            root: root.to_str().expect("utf-8").into(),
            entries: vec![file("tool", 0o6755, 2)],
        };
        write(&wd, Some(owner), bytes(b"#!")).expect("write");
        let meta = std::fs::metadata(root.join("tool")).expect("stat");
        assert_eq!(meta.mode() & 0o7777, 0o755);
        assert_eq!(meta.uid(), owner);
        assert_eq!(
            std::fs::metadata(&root).expect("stat").uid(),
            owner,
            "the root made for it"
        );
    }
}
