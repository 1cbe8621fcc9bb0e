//! The node's serial console (ttyS0): the socket QEMU serves it on, which the lab reads into a log
//! file and types into, and that log file read as lines.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

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

/// The serial console's socket: a thread reads everything the guest writes and appends it to the
/// serial log file; [`Console::send`] types into it.
///
/// The lab writes the log from the socket rather than having QEMU write it (chardev `logfile=`):
/// QEMU's 16550 writes one byte at a time to the socket, and when the socket is full (the reader
/// was slow under TCG load) QEMU logs the byte, retries it once the socket drains, and logs it
/// again, so QEMU's own log showed doubled characters (`"addrress"`). The socket itself carries
/// each byte once.
#[derive(Debug)]
pub struct Console {
    stream: UnixStream,
    drain: Option<JoinHandle<()>>,
    drained: Arc<(Mutex<bool>, Condvar)>,
}

impl Console {
    /// Starts reading `stream` into a new (truncated) log file at `log`.
    pub fn new(stream: UnixStream, log: &Path) -> io::Result<Self> {
        let mut reader = stream.try_clone()?;
        let mut file = File::create(log)?;
        let drained = Arc::new((Mutex::new(false), Condvar::new()));
        let done = Arc::clone(&drained);
        let path = log.to_path_buf();
        let drain = thread::Builder::new()
            .name("clump-lab-serial".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if let Err(e) = file.write_all(&buf[..n]) {
                                tracing::error!("writing the serial log {}: {e}", path.display());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
                let (flag, cv) = &*done;
                if let Ok(mut d) = flag.lock() {
                    *d = true;
                }
                cv.notify_all();
            })?;
        Ok(Self {
            stream,
            drain: Some(drain),
            drained,
        })
    }

    /// Types `text` into the console.
    pub fn send(&mut self, text: &str) -> io::Result<()> {
        self.stream.write_all(text.as_bytes())?;
        self.stream.flush()
    }

    /// Waits up to `timeout` for the reader to reach the end of the stream (QEMU exited and
    /// everything it wrote is in the log). Returns whether it did.
    pub fn wait_drained(&self, timeout: Duration) -> bool {
        let (flag, cv) = &*self.drained;
        let Ok(guard) = flag.lock() else {
            return false;
        };
        cv.wait_timeout_while(guard, timeout, |done| !*done)
            .map(|(done, _)| *done)
            .unwrap_or(false)
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        // Ends the reader's read.
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

    #[test]
    fn the_console_logs_every_byte_once_and_reports_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let (guest, lab) = UnixStream::pair().unwrap();
        let mut console = Console::new(lab, &path).unwrap();
        let mut guest_reader = guest.try_clone().unwrap();
        let mut g = guest;
        for chunk in [&b"clump: stage=start t=1\r\n"[..], b"a", b"b\r\n"] {
            g.write_all(chunk).unwrap();
        }
        console.send("typed\n").unwrap();
        let mut typed = [0u8; 6];
        guest_reader.read_exact(&mut typed).unwrap();
        assert_eq!(&typed, b"typed\n");
        assert!(
            !console.wait_drained(Duration::from_millis(50)),
            "the guest is still there"
        );
        drop(g);
        drop(guest_reader);
        assert!(console.wait_drained(Duration::from_secs(5)));
        let mut log = SerialLog::new(&path);
        log.refresh().unwrap();
        assert_eq!(log.lines(), ["clump: stage=start t=1", "ab"]);
    }
}
