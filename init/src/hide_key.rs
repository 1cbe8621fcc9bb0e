//! Keeps a cluster key given as `clump.key=` on the kernel command line away from users and
//! jobs: `/proc/cmdline` is readable by everyone (SECURITY.md, G2). PID 1 moves the key into the
//! image's key file (root only, where clumpd reads it when the command line has none) and
//! bind-mounts a copy of the command line without it over `/proc/cmdline`, before any service
//! starts. A malformed `clump.key=` is left where it is, so clumpd refuses it and says why.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const PARAM: &str = "clump.key=";
/// The image's key file, which clumpd reads when the command line has no key.
pub const KEY_FILE: &str = "/etc/clump/cluster.key";
/// The copy of the command line that is shown as `/proc/cmdline`.
const SHOWN: &str = "/run/clump/cmdline";

#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    /// The key's 64 hex digits (the last `clump.key=` wins, as for clumpd).
    pub key: String,
    /// The command line without any `clump.key=` word.
    pub rest: String,
}

/// The words of a command line as written (quotes kept): a word ends at whitespace outside
/// double quotes.
fn raw_words(cmdline: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = None;
    let mut in_quotes = false;
    for (i, c) in cmdline.char_indices() {
        if c == '"' {
            in_quotes = !in_quotes;
        }
        if c.is_whitespace() && !in_quotes {
            if let Some(s) = start.take() {
                words.push(&cmdline[s..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push(&cmdline[s..]);
    }
    words
}

/// The key and the rest of `cmdline`, when its last `clump.key=` is 64 hex digits (quoted or
/// not); `None` when there is no such parameter or it is malformed.
pub fn split(cmdline: &str) -> Option<Split> {
    let words = raw_words(cmdline);
    let value = words.iter().rev().find_map(|w| w.strip_prefix(PARAM))?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let rest: Vec<&str> = words.into_iter().filter(|w| !w.starts_with(PARAM)).collect();
    Some(Split {
        key: value.to_ascii_lowercase(),
        rest: rest.join(" "),
    })
}

/// Writes `contents` to `path` through a temporary file renamed over it, with `mode`.
fn replace_file(path: &Path, contents: &str, mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Moves a `clump.key=` of `/proc/cmdline` into [`KEY_FILE`] and shows the command line
/// without it. Returns whether a key was hidden; failures are logged and leave things as
/// they were as far as possible (the node still gets its key).
pub fn hide() -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/cmdline") else {
        return false;
    };
    let Some(split) = split(text.trim_end()) else {
        return false;
    };
    if let Some(dir) = Path::new(KEY_FILE).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = replace_file(Path::new(KEY_FILE), &format!("{}\n", split.key), 0o600) {
        tracing::warn!(error = %e, "cannot move clump.key= into {KEY_FILE}: it stays readable in /proc/cmdline");
        return false;
    }
    let shown = Path::new(SHOWN);
    let mounted = replace_file(shown, &format!("{}\n", split.rest), 0o444)
        .and_then(|()| rustix::mount::mount_bind(shown, "/proc/cmdline").map_err(std::io::Error::from));
    match mounted {
        Ok(()) => {
            tracing::info!("clump.key= moved off the kernel command line into {KEY_FILE}");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot hide clump.key= in /proc/cmdline; the key is readable there");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    #[test]
    fn the_key_goes_and_every_other_word_stays_as_written() {
        let line = format!("console=ttyS0 clump.key={KEY} x=\"a b\" quiet");
        let s = split(&line).expect("a key");
        assert_eq!(s.key, KEY.to_ascii_lowercase());
        assert_eq!(s.rest, "console=ttyS0 x=\"a b\" quiet");
    }

    #[test]
    fn the_last_key_wins_and_every_copy_is_removed() {
        let other = "f".repeat(64);
        let line = format!("clump.key={KEY} a clump.key=\"{other}\"");
        let s = split(&line).expect("a key");
        assert_eq!((s.key.as_str(), s.rest.as_str()), (other.as_str(), "a"));
    }

    #[test]
    fn no_key_or_a_malformed_one_is_left_alone() {
        assert_eq!(split("console=ttyS0 quiet"), None);
        assert_eq!(split("clump.key=abc"), None);
        assert_eq!(split(&format!("clump.key={}", "g".repeat(64))), None);
        assert_eq!(split("clump.key="), None);
        assert_eq!(split(&format!("clump.key=\"{KEY}")), None);
    }

    #[test]
    fn words_keep_their_quotes() {
        assert_eq!(raw_words("  a  b=\"c d\"\te "), vec!["a", "b=\"c d\"", "e"]);
        assert_eq!(raw_words(""), Vec::<&str>::new());
    }
}
