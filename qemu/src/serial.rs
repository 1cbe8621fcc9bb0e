//! The node's serial console (ttyS0): the log file QEMU writes, and the socket to type into.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};

/// The serial log as it grows, split into lines, with a read cursor for [`SerialLog::find`].
#[derive(Debug)]
pub struct SerialLog {
    path: PathBuf,
    file: Option<File>,
    /// Bytes after the last newline (e.g. a shell prompt).
    partial: Vec<u8>,
    lines: Vec<String>,
    cursor: usize,
}

impl SerialLog {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            file: None,
            partial: Vec::new(),
            lines: Vec::new(),
            cursor: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was appended to the log since the last call.
    pub fn refresh(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        self.push(&buf);
        Ok(())
    }

    fn push(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        let Some(last_nl) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let rest = self.partial.split_off(last_nl + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        // `complete` ends with a newline: split what comes before it.
        for line in complete[..last_nl].split(|&b| b == b'\n') {
            self.lines
                .push(String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned());
        }
    }

    /// All complete lines read so far (without line endings).
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The first line at or after the cursor that `accept` takes; moves the cursor past it.
    pub fn find(&mut self, mut accept: impl FnMut(&str) -> bool) -> Option<String> {
        let offset = self.lines[self.cursor..].iter().position(|l| accept(l))?;
        let index = self.cursor + offset;
        self.cursor = index + 1;
        Some(self.lines[index].clone())
    }

    /// Moves the cursor past every line read so far.
    pub fn skip_to_end(&mut self) {
        self.cursor = self.lines.len();
    }

    /// The last `n` lines, the partial one included, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let mut out: Vec<&str> = self.lines.iter().rev().take(n).map(String::as_str).collect();
        out.reverse();
        let mut text = out.join("\n");
        if !self.partial.is_empty() {
            text.push('\n');
            text.push_str(&String::from_utf8_lossy(&self.partial));
        }
        text
    }
}

/// The writing end of the serial console. QEMU's socket must be read or the guest's output stalls
/// once the socket buffer is full, so a thread drains it (the log file already has every byte).
#[derive(Debug)]
pub struct Console {
    stream: UnixStream,
    drain: Option<JoinHandle<()>>,
}

impl Console {
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        let mut reader = stream.try_clone()?;
        let drain = thread::Builder::new()
            .name("clump-lab-serial".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
            })?;
        Ok(Self {
            stream,
            drain: Some(drain),
        })
    }

    /// Types `text` into the console.
    pub fn send(&mut self, text: &str) -> io::Result<()> {
        self.stream.write_all(text.as_bytes())?;
        self.stream.flush()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        // Ends the drain thread's read.
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(chunks: &[&[u8]]) -> SerialLog {
        let mut log = SerialLog::new(Path::new("/nonexistent"));
        for c in chunks {
            log.push(c);
        }
        log
    }

    #[test]
    fn lines_are_split_across_chunks_and_lose_their_endings() {
        let log = log_with(&[
            b"clump: st",
            b"age=mounts t=1\r\nclump: stage=con",
            b"sole t=2\r\n\nclump# ",
        ]);
        assert_eq!(
            log.lines(),
            ["clump: stage=mounts t=1", "clump: stage=console t=2", ""]
        );
        assert_eq!(log.tail(2), "clump: stage=console t=2\n\nclump# ");
    }

    #[test]
    fn find_consumes_lines_in_order() {
        let mut log = log_with(&[b"a 1\nb\na 2\n"]);
        assert_eq!(log.find(|l| l.starts_with('a')).as_deref(), Some("a 1"));
        assert_eq!(log.find(|l| l.starts_with('a')).as_deref(), Some("a 2"));
        assert_eq!(log.find(|l| l.starts_with('a')), None);
        log.push(b"a 3\n");
        assert_eq!(log.find(|l| l.starts_with('a')).as_deref(), Some("a 3"));
        log.push(b"a 4\n");
        log.skip_to_end();
        assert_eq!(log.find(|_| true), None);
    }

    #[test]
    fn invalid_utf8_does_not_stop_the_log() {
        let log = log_with(&[b"\xff\xfeok\n"]);
        assert!(log.lines()[0].ends_with("ok"));
    }

    #[test]
    fn refresh_reads_a_growing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let mut log = SerialLog::new(&path);
        log.refresh().unwrap();
        assert!(log.lines().is_empty());
        let mut f = File::create(&path).unwrap();
        f.write_all(b"one\ntw").unwrap();
        log.refresh().unwrap();
        assert_eq!(log.lines(), ["one"]);
        f.write_all(b"o\n").unwrap();
        log.refresh().unwrap();
        assert_eq!(log.lines(), ["one", "two"]);
    }
}
