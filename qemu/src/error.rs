//! The lab's error type.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong while booting and driving a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A build output the node needs is not there.
    #[error("{} not found: run {hint}", path.display())]
    MissingArtefact { path: PathBuf, hint: &'static str },

    /// The QEMU binary is not installed.
    #[error("{0} not found: install Debian's qemu-system-x86 package (./build.sh installs it)")]
    QemuMissing(&'static str),

    /// No OVMF firmware pair was found for a UEFI boot.
    #[error("no OVMF firmware found (looked for {looked_for}): install Debian's ovmf package")]
    OvmfMissing { looked_for: String },

    /// A unix socket path is longer than `sun_path` allows.
    #[error("socket path {} is too long for a unix socket (max {max} bytes): use a shorter workdir", path.display())]
    SocketPathTooLong { path: PathBuf, max: usize },

    /// An I/O operation failed; `what` says which.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// A regular expression given to the lab does not compile.
    #[error("invalid pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        #[source]
        source: regex::Error,
    },

    /// A bounded wait ran out. `context` holds the end of the serial log (and QEMU's stderr).
    #[error("node {node}: timed out after {:.1} s waiting for {what}\n{context}", after.as_secs_f64())]
    Timeout {
        node: String,
        what: String,
        after: Duration,
        context: String,
    },

    /// QEMU ended while the lab was still waiting for something.
    #[error("node {node}: QEMU exited ({status}) while waiting for {what}\n{context}")]
    Exited {
        node: String,
        what: String,
        status: ExitStatus,
        context: String,
    },

    /// The node did not power off cleanly through ACPI.
    #[error("node {node}: {problem}\n{context}")]
    PowerOff {
        node: String,
        problem: String,
        context: String,
    },

    /// A node or lab description that cannot be started as given.
    #[error("{0}")]
    Spec(String),

    /// A host command the lab runs (`ip`, `dnsmasq`) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: ExitStatus,
        stderr: String,
    },

    /// A tool the lab needs is not installed.
    #[error("{program} not found: install Debian's {package} package (./build.sh installs it)")]
    ToolMissing {
        program: &'static str,
        package: &'static str,
    },

    /// The lab needs root (network namespaces, taps, a DHCP server).
    #[error("the lab needs root for network namespaces, taps and dnsmasq (run as root, e.g. sudo -E)")]
    NotRoot,

    /// dnsmasq did not come up or misbehaved; `context` holds the end of its log.
    #[error("dnsmasq: {problem}\n{context}")]
    Dnsmasq { problem: String, context: String },

    /// The QMP conversation broke (bad greeting, malformed message, closed socket).
    #[error("QMP: {0}")]
    Qmp(String),

    /// QEMU answered a QMP command with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    QmpCommand {
        command: String,
        class: String,
        desc: String,
    },
}

/// Result with the lab's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
