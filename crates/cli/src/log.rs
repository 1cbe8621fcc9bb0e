use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

/// Where PID 1 keeps its log (see ARCHITECTURE.md).
pub const LOG_FILE: &str = "/run/clump/init.log";

pub fn print(path: &Path, last: Option<usize>, follow: bool) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} (is this a Clump node?)", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let start = last.map_or(0, |n| lines.len().saturating_sub(n));
    let mut out = std::io::stdout().lock();
    for line in &lines[start..] {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    if follow {
        follow_file(path, text.len() as u64)?;
    }
    Ok(())
}

/// Prints what is appended to `path` from `offset` on; starts over when PID 1 cuts the file
/// (it does when the file reaches its size limit).
fn follow_file(path: &Path, mut offset: u64) -> Result<()> {
    let mut out = std::io::stdout();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        if len < offset {
            offset = 0;
        }
        file.seek(SeekFrom::Start(offset))?;
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            if !line.ends_with('\n') {
                break;
            }
            offset += line.len() as u64;
            out.write_all(line.as_bytes())?;
            line.clear();
        }
        out.flush()?;
    }
}
