//! The job messages of the local API (ARCHITECTURE.md, "Jobs (issue 6, first slice)"): what
//! `ps` lists, how a job ended, and the two directions of an attached stream.
//!
//! Output and input bytes travel base64-encoded so a line stays JSON whatever the job writes.

use serde::{Deserialize, Serialize};

/// The most bytes one stream line carries before encoding: base64 of it stays well under
/// [`crate::MAX_LINE`], so the same bound holds for both directions.
pub const MAX_CHUNK: usize = 16 * 1024;

/// Where a job is in its life. Unknown words from a newer daemon read as [`JobState::Unknown`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Running,
    /// The program returned an exit code.
    Exited,
    /// The program ended on a signal.
    Killed,
    /// The runtime lost track of it (its reaper vanished without a status).
    Lost,
    #[serde(other)]
    Unknown,
}

impl JobState {
    pub fn word(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Exited => "exited",
            JobState::Killed => "killed",
            JobState::Lost => "lost",
            JobState::Unknown => "unknown",
        }
    }
}

/// How a job ended: an exit code or a signal number, never both.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(default)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitStatus {
    pub fn code(code: i32) -> ExitStatus {
        ExitStatus {
            code: Some(code),
            signal: None,
        }
    }

    pub fn signal(signal: i32) -> ExitStatus {
        ExitStatus {
            code: None,
            signal: Some(signal),
        }
    }

    /// The status a shell would report: the code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 255,
        }
    }
}

/// One job as `ps` lists it. Missing fields read as their defaults, so daemons and commands of
/// different versions agree on what they share.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(default)]
pub struct JobInfo {
    /// 8 hex digits, drawn at random when the job starts and kept for its whole life.
    pub id: String,
    pub argv: Vec<String>,
    pub uid: u32,
    /// The node number the job was started on; null before this node has an address.
    pub home: Option<u32>,
    /// The node number it runs on now.
    pub node: Option<u32>,
    pub state: Option<JobState>,
    /// When it started (unix ms).
    pub started_ms: u64,
    /// CPU time of all its processes, user + system.
    pub cpu_ms: u64,
    /// Memory in use (the cgroup's figure, else the sum of the processes' resident sets).
    pub mem_kib: u64,
    pub exit: Option<ExitStatus>,
    /// Bytes of stdout and stderr written so far, and of those the ones dropped unseen.
    pub output_bytes: u64,
    pub dropped_bytes: u64,
    /// Times it moved to another node.
    pub migrations: u32,
    /// Why it cannot move now (a socket, a device, a debugger...), in words; null when it can.
    pub pinned: Option<String>,
    /// Its user locked it to the node it runs on (`clump lock`, `run --lock`): nothing moves it
    /// until `clump unlock`.
    #[serde(default)]
    pub locked: bool,
    /// Why the balancer keeps it where it is, or sends it away, in words (its output rate,
    /// short memory...); null when it has nothing to say.
    #[serde(default)]
    pub balance: Option<String>,
    /// While it runs away from home: when home last stored a checkpoint of it (unix ms), to
    /// restart it from if its node dies.
    #[serde(default)]
    pub checkpoint_ms: Option<u64>,
    /// Times home restarted it from a checkpoint after the node running it died.
    #[serde(default)]
    pub recovered: u32,
}

/// The reply to `migrate`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub job: String,
    /// Node numbers.
    pub from: Option<u32>,
    pub to: u32,
    /// How long the move took, from the request to the target's confirmation.
    pub ms: u64,
    /// How long of that the job was stopped: from its final dump to the target's "it runs".
    #[serde(default)]
    pub frozen_ms: u64,
    /// Rounds of images: pre-copy's while the job ran, and the final one.
    #[serde(default)]
    pub rounds: u32,
    /// Bytes of images sent.
    #[serde(default)]
    pub bytes: u64,
}

/// Where `run` places a job: `"best"` (the default), `"home"`, or `{"on": NODE}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Place {
    /// The node with the most room for it by speed-normalised load and free memory, if it beats
    /// this one clearly; else here.
    #[default]
    Best,
    Home,
    /// A node number, hostname or address.
    On(String),
}

/// The reply to `run` without `attach`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub job: String,
    /// Why it did not go where it was asked to (it runs here then).
    #[serde(default)]
    pub notice: Option<String>,
}

/// Which of a job's output pipes bytes came from.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What the server sends on an attached stream, each as `{"ok": <this>}`; an `{"error": ...}`
/// line ends the stream. A reader skips a line it cannot parse (a kind from a newer daemon). The order is: `started` or `attached`, output in the order the runtime
/// read it, then `exit` once both pipes are closed and the job is gone.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StreamOutput {
    /// `run` with `attach`: the new job's id.
    Started(String),
    /// `attach`: the job, the offset the stream starts at, and the bytes before it that are no
    /// longer kept (asked for but gone).
    Attached {
        job: String,
        offset: u64,
        skipped: u64,
    },
    /// Something the user should know that is not the job's output (it could not be placed
    /// where asked, say).
    Notice(String),
    /// Base64 of bytes the job wrote.
    Stdout(String),
    Stderr(String),
    Exit(ExitStatus),
}

/// What the client sends on an attached stream, one per line.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum StreamInput {
    /// Base64 of at most [`MAX_CHUNK`] bytes for the job's stdin.
    Stdin { data: String },
    /// The end of stdin: the job reads EOF once what was sent is read.
    Eof,
    /// A signal for the job, by name (`TERM`, `SIGINT`, ...) or number.
    Signal { signal: String },
}

/// The reply to `output`: what is kept of a job's stdout and stderr, in order.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(default)]
pub struct Output {
    pub job: String,
    /// Offset of the first kept byte; the bytes before it were evicted.
    pub start: u64,
    /// Offset after the last byte written so far.
    pub end: u64,
    /// Bytes evicted before any client saw them.
    pub dropped: u64,
    /// `{"stdout": b64}` / `{"stderr": b64}` chunks in order.
    pub chunks: Vec<StreamOutput>,
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard padded base64; `None` for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_round_trips_and_matches_the_rfc_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), coded);
            assert_eq!(base64_decode(coded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9*", "===="] {
            assert!(base64_decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn stream_lines_are_the_documented_json() {
        let out = [
            (
                StreamOutput::Started("0a1b2c3d".into()),
                json!({"started": "0a1b2c3d"}),
            ),
            (
                StreamOutput::Stdout("b3V0Cg==".into()),
                json!({"stdout": "b3V0Cg=="}),
            ),
            (
                StreamOutput::Stderr("ZXJyCg==".into()),
                json!({"stderr": "ZXJyCg=="}),
            ),
            (
                StreamOutput::Exit(ExitStatus::code(3)),
                json!({"exit": {"code": 3, "signal": null}}),
            ),
        ];
        for (value, want) in out {
            assert_eq!(serde_json::to_value(&value).unwrap(), want);
            assert_eq!(serde_json::from_value::<StreamOutput>(want).unwrap(), value);
        }
        let input = [
            (
                StreamInput::Stdin { data: "eA==".into() },
                json!({"op": "stdin", "data": "eA=="}),
            ),
            (StreamInput::Eof, json!({"op": "eof"})),
            (
                StreamInput::Signal { signal: "INT".into() },
                json!({"op": "signal", "signal": "INT"}),
            ),
        ];
        for (value, want) in input {
            assert_eq!(serde_json::to_value(&value).unwrap(), want);
            assert_eq!(serde_json::from_value::<StreamInput>(want).unwrap(), value);
        }
        // A line of a kind this build does not know is an error the reader may skip.
        assert!(serde_json::from_value::<StreamOutput>(json!({"migrated": 3})).is_err());
    }

    #[test]
    fn shell_codes() {
        assert_eq!(ExitStatus::code(3).shell_code(), 3);
        assert_eq!(ExitStatus::signal(15).shell_code(), 143);
        let info: JobInfo = serde_json::from_value(json!({"id": "x", "state": "later", "new": 1})).unwrap();
        assert_eq!(info.state, Some(JobState::Unknown));
    }

    #[test]
    fn a_full_chunk_fits_in_a_line() {
        let line = serde_json::to_vec(&crate::Reply::Ok(StreamOutput::Stdout(base64_encode(
            &[0xff; MAX_CHUNK],
        ))))
        .unwrap();
        assert!(line.len() < crate::MAX_LINE / 2, "{}", line.len());
    }
}
