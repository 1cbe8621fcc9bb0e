//! A job's working directory travels with it (issue 6, "Files"): scanned on the node it leaves,
//! written at the same path on the node it goes to, and at its end or return written back into
//! the home node's copy. System directories are the image's and the same on every node: they
//! never travel. Paths inside are checked on the way in: relative, no `..`, no symlink followed.

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
/// source of chunks) in entry order. An entry whose parent is a symlink is refused, so nothing
/// lands outside the root.
pub fn write(
    wd: &Workdir,
    mut next: impl FnMut() -> Result<Vec<u8>, WorkdirError>,
) -> Result<(), WorkdirError> {
    let root = PathBuf::from(&wd.root);
    std::fs::create_dir_all(&root)?;
    for e in &wd.entries {
        let rel = safe_path(&e.path)?;
        let path = root.join(&rel);
        // Every directory on the way must be a real one, not a symlink out of the root.
        for up in rel.ancestors().skip(1).filter(|p| !p.as_os_str().is_empty()) {
            let meta = std::fs::symlink_metadata(root.join(up))?;
            if !meta.is_dir() {
                return Err(WorkdirError::BadPath(e.path.clone()));
            }
        }
        match &e.kind {
            Kind::Dir => {
                if !path.is_dir() {
                    if std::fs::symlink_metadata(&path).is_ok() {
                        std::fs::remove_file(&path)?;
                    }
                    std::fs::create_dir(&path)?;
                }
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(e.mode))?;
            }
            Kind::Symlink { target } => {
                let _ = std::fs::remove_file(&path);
                std::os::unix::fs::symlink(target, &path)?;
            }
            Kind::File { size } => {
                if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
                    return Err(WorkdirError::BadPath(e.path.clone()));
                }
                let mut file = std::fs::File::create(&path)?;
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
                file.set_permissions(std::fs::Permissions::from_mode(e.mode))?;
                let mtime = UNIX_EPOCH + Duration::from_secs(u64::try_from(e.mtime).unwrap_or(0));
                let _ = file.set_modified(mtime);
            }
        }
    }
    Ok(())
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
        write(&moved, || {
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
        let result = write(&wd, || once.take().ok_or(WorkdirError::BadPath("x".into())));
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
        let result = write(&deeper, || once.take().ok_or(WorkdirError::BadPath("x".into())));
        assert!(result.is_err());
        assert!(!outside.path().join("sub/planted").exists());
    }
}
