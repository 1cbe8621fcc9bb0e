use std::io;
use std::time::Duration;

/// What can go wrong talking to `clumpd`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket is missing or nobody listens on it.
    #[error("clumpd is not running ({0})")]
    NotRunning(String),
    /// `clumpd` did not answer in time.
    #[error("clumpd did not answer within {0:?}")]
    Timeout(Duration),
    /// A line longer than the limit; the stream is out of step after it.
    #[error("a line longer than {limit} bytes")]
    TooLong { limit: usize },
    /// The other side sent something that is not the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// `clumpd` answered `{"error": ...}`.
    #[error("clumpd: {0}")]
    Remote(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl ApiError {
    /// An I/O error with what was being done when it happened.
    pub fn io(what: impl Into<String>, source: io::Error) -> ApiError {
        ApiError::Io {
            what: what.into(),
            source,
        }
    }
}
