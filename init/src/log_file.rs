//! PID 1's log file, `/run/clump/init.log` (printed by `clump log`, read by the status screen).
//!
//! The file is the only copy of the log PID 1 keeps: lines are appended, and PID 1 holds no line
//! in memory once it is written. A node whose services crash for days logs without end, so past
//! its limit the file is cut: the boot's lines (up to `stage=ready`, at most [`HEAD_MAX`] bytes)
//! stay, a line says how much was left out, and the newest half of the limit follows. The cut
//! copies file to file through the kernel (`std::io::copy`), so it costs PID 1 no heap either:
//! an in-memory ring cost it ~200 bytes of resident memory per line until it was full (~190 KiB
//! per 1000 service restarts, BENCHMARKS.md "PID 1 under service crashes").

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The boot's lines kept across cuts at most (a boot logs ~15 KiB: stages, modules, NICs).
pub const HEAD_MAX: u64 = 64 * 1024;
/// How far a cut looks for the end of a line (PID 1's lines are far shorter).
const LINE_MAX: usize = 4096;

pub struct LogFile {
    path: PathBuf,
    file: File,
    /// Bytes in the file, as written through this handle.
    len: u64,
    /// The end of the boot's lines, once known (`keep_head`, or the first cut).
    head: Option<u64>,
    /// Cut when the file grows past this.
    limit: u64,
}

impl LogFile {
    /// Creates (or empties) the file at `path`.
    pub fn create(path: &Path, limit: u64) -> std::io::Result<Self> {
        File::create(path)?;
        let file = open_append(path)?;
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            len: 0,
            head: None,
            limit,
        })
    }

    /// Appends `line`, which ends with a newline, in one write; cuts the file first if the line
    /// would take it past the limit.
    pub fn append(&mut self, line: &str) -> std::io::Result<()> {
        if self.len + line.len() as u64 > self.limit {
            self.cut()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.len += line.len() as u64;
        Ok(())
    }

    /// What is in the file now is the boot's log: kept across cuts (up to [`HEAD_MAX`]).
    pub fn keep_head(&mut self) {
        if self.head.is_none() {
            self.head = Some(self.len);
        }
    }

    /// Rewrites the file as its head, a line saying how much was left out, and the newest half of
    /// the limit, and replaces it (rename: a reader sees the old file or the new one).
    fn cut(&mut self) -> std::io::Result<()> {
        let mut old = match File::open(&self.path) {
            Ok(f) => f,
            // Removed from outside: what this handle wrote is gone with it; start a new file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                File::create(&self.path)?;
                self.file = open_append(&self.path)?;
                self.len = 0;
                self.head = Some(0);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // Someone may have truncated or replaced the file: go by what is there.
        let len = old.metadata()?.len();
        let head = match self.head {
            Some(h) if h <= HEAD_MAX.min(len) => h,
            _ => line_end_before(&mut old, HEAD_MAX.min(len))?,
        };
        self.head = Some(head);
        let from = line_start_after(&mut old, len.saturating_sub(self.limit / 2).max(head), len)?;

        let tmp = self.path.with_extension("log.cut");
        let written =
            Self::write_cut(&mut old, &tmp, head, from).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            // A full /run: leave the old file as it is rather than a half copy beside it.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.file = open_append(&self.path)?;
        self.len = self.file.metadata()?.len();
        Ok(())
    }

    fn write_cut(old: &mut File, tmp: &Path, head: u64, from: u64) -> std::io::Result<()> {
        let mut new = File::create(tmp)?;
        old.seek(SeekFrom::Start(0))?;
        std::io::copy(&mut old.take(head), &mut new)?;
        let ms = crate::clock::since_boot_ms();
        writeln!(
            new,
            "[{:>5}.{:03}] clump: log cut bytes={}",
            ms / 1000,
            ms % 1000,
            from - head
        )?;
        old.seek(SeekFrom::Start(from))?;
        std::io::copy(old, &mut new)?;
        Ok(())
    }
}

/// Appending, so that a file emptied from outside (`: > init.log`) is written from its new end,
/// not after a hole as long as what was there.
fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

/// The end of the last whole line that ends at or before `at` (0 if none does).
fn line_end_before(file: &mut File, at: u64) -> std::io::Result<u64> {
    let start = at.saturating_sub(LINE_MAX as u64);
    let mut buf = [0u8; LINE_MAX];
    let n = read_at(file, start, &mut buf[..(at - start) as usize])?;
    Ok(buf[..n]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| start + i as u64 + 1))
}

/// The start of the first line that starts at or after `at` (`at` itself if it starts one, `len`
/// if none does within [`LINE_MAX`]).
fn line_start_after(file: &mut File, at: u64, len: u64) -> std::io::Result<u64> {
    if at == 0 {
        return Ok(0);
    }
    let mut buf = [0u8; LINE_MAX + 1];
    let n = read_at(file, at - 1, &mut buf)?;
    Ok(buf[..n]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(len, |i| at + i as u64))
}

fn read_at(file: &mut File, at: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    file.seek(SeekFrom::Start(at))?;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("clump-init-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    #[test]
    fn lines_are_appended_as_written() {
        let d = dir("log-append");
        let p = d.0.join("init.log");
        let mut log = LogFile::create(&p, 1024).unwrap();
        log.append("a\n").unwrap();
        log.append("bc\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\nbc\n");
        // A new boot starts a new file.
        let mut log = LogFile::create(&p, 1024).unwrap();
        log.append("d\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "d\n");
    }

    #[test]
    fn a_full_file_keeps_the_boot_and_the_newest_half() {
        let d = dir("log-cut");
        let p = d.0.join("init.log");
        let limit = 2000;
        let mut log = LogFile::create(&p, limit).unwrap();
        log.append("clump: stage=start t=1\n").unwrap();
        log.append("clump: ready iface=eth0\n").unwrap();
        log.keep_head();
        for i in 0..1000 {
            log.append(&format!("clump: service exited name=netd n={i}\n"))
                .unwrap();
            let size = std::fs::metadata(&p).unwrap().len();
            assert!(size <= limit, "{size} bytes after line {i}");
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..2], ["clump: stage=start t=1", "clump: ready iface=eth0"]);
        assert!(lines[2].contains("clump: log cut bytes="), "{}", lines[2]);
        assert_eq!(lines.last(), Some(&"clump: service exited name=netd n=999"));
        // Whole lines only, in order, at least the newest half of the limit.
        let numbers: Vec<u32> = lines[3..]
            .iter()
            .map(|l| l.rsplit_once("n=").unwrap().1.parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        let tail: usize = lines[3..].iter().map(|l| l.len() + 1).sum();
        assert!(tail as u64 >= limit / 2 - 64, "{tail} bytes of recent lines kept");
        assert!(!d.0.join("init.log.cut").exists());
    }

    #[test]
    fn without_a_marked_boot_the_first_lines_are_kept() {
        let d = dir("log-nohead");
        let p = d.0.join("init.log");
        let mut log = LogFile::create(&p, 600).unwrap();
        for i in 0..100 {
            log.append(&format!("line {i:03}\n")).unwrap();
        }
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("line 000\n"), "{text}");
        assert!(text.ends_with("line 099\n"), "{text}");
        assert!(text
            .lines()
            .all(|l| l.starts_with("line ") || l.contains("log cut")));
    }

    #[test]
    fn a_file_removed_or_truncated_from_outside_comes_back() {
        let d = dir("log-outside");
        let p = d.0.join("init.log");
        let mut log = LogFile::create(&p, 300).unwrap();
        log.append("boot\n").unwrap();
        log.keep_head();
        std::fs::remove_file(&p).unwrap();
        // Written to the removed file until a cut finds it gone and starts a new one.
        for i in 0..100 {
            log.append(&format!("again {i:03}\n")).unwrap();
        }
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.ends_with("again 099\n"), "{text}");
        assert!(std::fs::metadata(&p).unwrap().len() <= 300);

        // Emptied in place: written from the start again, no hole of zeros.
        File::create(&p).unwrap();
        log.append("after\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "after\n");
    }
}
