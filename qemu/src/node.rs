//! One running node: a QEMU process with its serial console and QMP socket.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::error::{Error, Result};
use crate::firmware::Ovmf;
use crate::process::Process;
use crate::qemu_args::{qemu_args, Layout, QEMU};
use crate::qmp::Qmp;
use crate::serial::{Console, SerialLog};
use crate::shell;
use crate::spec::{Firmware, NodeSpec};

/// How long QEMU may take to open its sockets.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often waits look at the log and the process.
const POLL: Duration = Duration::from_millis(50);
/// How long to wait for the shell to answer one probe before typing another.
const PROBE_INTERVAL: Duration = Duration::from_secs(3);
/// How long the serial reader may take to write the last bytes after QEMU exits.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// Lines of serial log quoted in errors.
const TAIL_LINES: usize = 40;
/// Longest unix socket path (`sun_path` less the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A running node. Dropping it kills QEMU (its whole process group) and, if the lab made the workdir,
/// removes it.
#[derive(Debug)]
pub struct Node {
    // Field order is drop order: QEMU dies first, then the sockets close, then the workdir goes.
    process: Process,
    console: Console,
    qmp: Qmp,
    log: SerialLog,
    layout: Layout,
    spec: NodeSpec,
    started: Instant,
    shell_ready: bool,
    next_request: u64,
    _tempdir: Option<TempDir>,
}

impl Node {
    /// Starts QEMU for `spec` and connects to its serial console and QMP socket.
    pub fn start(spec: NodeSpec) -> Result<Node> {
        spec.check()?;
        let (layout, tempdir) = prepare_workdir(spec.workdir.as_deref())?;
        let ovmf = match spec.firmware {
            Firmware::Uefi => {
                let ovmf = Ovmf::find()?;
                std::fs::copy(&ovmf.vars_template, &layout.uefi_vars).map_err(Error::io(format!(
                    "copying {} to {}",
                    ovmf.vars_template.display(),
                    layout.uefi_vars.display()
                )))?;
                Some(ovmf)
            }
            Firmware::Bios => None,
        };
        let args = qemu_args(&spec, &layout, ovmf.as_ref().map(|o| o.code.as_path()));
        let netns = spec.netns()?.map(str::to_owned);
        let started = Instant::now();
        let mut process = spawn_qemu(&args, &layout, netns.as_deref())?;
        tracing::info!(node = %spec.name, pid = process.id(), workdir = %layout.dir.display(), "QEMU started");

        let serial = connect(&mut process, &layout, &spec.name, &layout.serial_socket)?;
        let console = Console::new(serial, &layout.serial_log).map_err(Error::io(format!(
            "starting the serial reader into {}",
            layout.serial_log.display()
        )))?;
        let qmp = Qmp::handshake(connect(&mut process, &layout, &spec.name, &layout.qmp_socket)?)?;
        Ok(Node {
            process,
            console,
            qmp,
            log: SerialLog::new(&layout.serial_log),
            layout,
            spec,
            started,
            shell_ready: false,
            next_request: 0,
            _tempdir: tempdir,
        })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// What the node was started with (its NICs and their MAC addresses, ...).
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// Where the node's files are (serial log, sockets, QEMU's output).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The serial log file.
    pub fn serial_log(&self) -> &Path {
        &self.layout.serial_log
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Time since QEMU was started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for a serial log line matching `pattern` (a regex) after the lines already consumed by
    /// earlier waits, and returns it. Fails early if QEMU exits; errors quote the end of the log.
    pub fn wait_for_line(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        let re = Regex::new(pattern).map_err(|source| Error::Pattern {
            pattern: pattern.to_owned(),
            source,
        })?;
        self.wait_until(
            &format!("a serial line matching {pattern:?}"),
            Instant::now() + timeout,
            |node| node.log.find(|l| re.is_match(l)),
        )
    }

    /// Marks every line logged so far as consumed: the next [`Node::wait_for_line`] sees only newer ones.
    pub fn skip_log(&mut self) -> Result<()> {
        self.refresh_log()?;
        self.log.skip_to_end();
        Ok(())
    }

    /// Every complete line of the serial log so far.
    pub fn log_lines(&mut self) -> Result<&[String]> {
        self.refresh_log()?;
        Ok(self.log.lines())
    }

    /// Runs `command` (one line of shell) in the root shell on ttyS0 and returns its exit code and
    /// output. Does not move the cursor of [`Node::wait_for_line`].
    pub fn shell(&mut self, command: &str, timeout: Duration) -> Result<(i32, String)> {
        let deadline = Instant::now() + timeout;
        if !self.shell_ready {
            self.wait_for_shell(deadline)?;
        }
        self.next_request += 1;
        let id = self.next_request;
        let from = self.log_lines()?.len();
        self.type_text(&shell::command_text(id, command))?;
        self.wait_until(
            &format!("shell command {command:?} to finish"),
            deadline,
            |node| shell::parse_result(id, &node.log.lines()[from..]),
        )
    }

    /// Types `text` into the serial console as is.
    pub fn type_text(&mut self, text: &str) -> Result<()> {
        self.console
            .send(text)
            .map_err(Error::io("typing into the serial console"))
    }

    /// The QMP connection, for commands the lab has no method for.
    pub fn qmp(&mut self) -> &mut Qmp {
        &mut self.qmp
    }

    /// Saves the screen as a PNG file.
    pub fn screendump(&mut self, path: &Path) -> Result<()> {
        let path = std::path::absolute(path).map_err(Error::io(format!("resolving {}", path.display())))?;
        let filename = path
            .to_str()
            .ok_or_else(|| Error::Qmp(format!("{} is not UTF-8", path.display())))?;
        self.qmp.execute(
            "screendump",
            Some(json!({ "filename": filename, "format": "png" })),
        )?;
        Ok(())
    }

    /// Presses `keys` together on the node's keyboard and releases them (QEMU qcodes: "esc",
    /// "y", "f2", "alt", ...).
    pub fn send_keys(&mut self, keys: &[&str]) -> Result<()> {
        let keys: Vec<Value> = keys
            .iter()
            .map(|k| json!({ "type": "qcode", "data": k }))
            .collect();
        self.qmp
            .execute("send-key", Some(json!({ "keys": keys })))
            .map(drop)
    }

    /// Presses the ACPI power button.
    pub fn powerdown(&mut self) -> Result<()> {
        self.qmp.execute("system_powerdown", None).map(drop)
    }

    /// Presses the ACPI power button and checks that the node powers off in an orderly way: PID 1
    /// logs `clump: shutdown action=poweroff`, QEMU exits 0 because the guest powered off (QEMU's
    /// `SHUTDOWN` reason is `guest-shutdown`, not a reset or a panic under `-no-reboot`), and the serial
    /// log has no kernel panic. Each step waits at most `timeout`.
    pub fn power_off(&mut self, timeout: Duration) -> Result<()> {
        self.powerdown()?;
        self.wait_for_line(r"clump: shutdown action=poweroff\b", timeout)?;
        let status = self.wait_exit(timeout)?;
        if !status.success() {
            return Err(self.power_off_error(format!("QEMU exited with {status} after the power button")));
        }
        let reason = self.shutdown_reason(Duration::from_secs(5))?;
        if reason.as_deref() != Some("guest-shutdown") {
            return Err(self.power_off_error(format!(
                "QEMU's shutdown reason is {reason:?}, not \"guest-shutdown\" (a reset or a panic)"
            )));
        }
        if let Some(panic) = self.log_lines()?.iter().find(|l| l.contains("Kernel panic")) {
            let problem = format!("kernel panic: {panic}");
            return Err(self.power_off_error(problem));
        }
        Ok(())
    }

    fn power_off_error(&self, problem: String) -> Error {
        Error::PowerOff {
            node: self.spec.name.clone(),
            problem,
            context: self.context(),
        }
    }

    /// Asks QEMU to exit at once (no guest shutdown).
    pub fn quit(&mut self) -> Result<()> {
        match self.qmp.execute("quit", None) {
            // QEMU may close the socket before its answer is read.
            Ok(_) | Err(Error::Qmp(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits for QEMU to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        match self
            .process
            .wait_timeout(timeout)
            .map_err(Error::io("waiting for QEMU"))?
        {
            Some(status) => Ok(status),
            None => Err(self.timeout_error("QEMU to exit", timeout)),
        }
    }

    /// QEMU's exit status if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.process.try_wait().map_err(Error::io("checking on QEMU"))
    }

    /// Why the guest stopped, from QEMU's `SHUTDOWN` event (`guest-shutdown` for an ACPI poweroff,
    /// `guest-reset` for a reboot or a panic under `-no-reboot`). Reads QMP for up to `wait`.
    pub fn shutdown_reason(&mut self, wait: Duration) -> Result<Option<String>> {
        let events = self.qmp.collect_events(wait)?;
        Ok(events
            .iter()
            .find(|e| e["event"] == "SHUTDOWN")
            .and_then(|e| e["data"]["reason"].as_str())
            .map(str::to_owned))
    }

    /// The QMP events seen so far.
    pub fn qmp_events(&self) -> &[Value] {
        self.qmp.events()
    }

    /// Kills QEMU's process group now.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        self.process.kill().map_err(Error::io("killing QEMU"))
    }

    /// Polls `check` against the refreshed log until it gives a value, QEMU exits or `deadline` passes.
    fn wait_until<T>(
        &mut self,
        what: &str,
        deadline: Instant,
        mut check: impl FnMut(&mut Self) -> Option<T>,
    ) -> Result<T> {
        let start = Instant::now();
        loop {
            self.refresh_log()?;
            if let Some(found) = check(self) {
                return Ok(found);
            }
            if let Some(status) = self.try_wait()? {
                // The last words may have landed between the refresh and the exit: once the
                // reader has seen the socket close, the log holds all of them.
                self.console.wait_drained(DRAIN_AFTER_EXIT);
                self.refresh_log()?;
                if let Some(found) = check(self) {
                    return Ok(found);
                }
                return Err(Error::Exited {
                    node: self.spec.name.clone(),
                    what: what.to_owned(),
                    status,
                    context: self.context(),
                });
            }
            if Instant::now() >= deadline {
                return Err(self.timeout_error(what, start.elapsed()));
            }
            thread::sleep(POLL);
        }
    }

    /// Types probes until the shell on ttyS0 answers one.
    fn wait_for_shell(&mut self, deadline: Instant) -> Result<()> {
        let from = self.log_lines()?.len();
        loop {
            self.next_request += 1;
            self.type_text(&shell::probe_text(self.next_request))?;
            let round = (Instant::now() + PROBE_INTERVAL).min(deadline);
            let answered = self.wait_until("the root shell on ttyS0 to answer", round, |node| {
                node.log.lines()[from..]
                    .iter()
                    .any(|l| shell::is_probe_answer(l))
                    .then_some(())
            });
            match answered {
                Ok(()) => {
                    self.shell_ready = true;
                    return Ok(());
                }
                Err(Error::Timeout { .. }) if Instant::now() < deadline => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn refresh_log(&mut self) -> Result<()> {
        self.log
            .refresh()
            .map_err(Error::io(format!("reading {}", self.layout.serial_log.display())))
    }

    fn timeout_error(&mut self, what: &str, after: Duration) -> Error {
        let _ = self.refresh_log();
        Error::Timeout {
            node: self.spec.name.clone(),
            what: what.to_owned(),
            after,
            context: self.context(),
        }
    }

    /// The end of the serial log and of QEMU's own output, for error messages.
    fn context(&self) -> String {
        context(&self.log, &self.layout.qemu_output)
    }
}

fn context(log: &SerialLog, qemu_output: &Path) -> String {
    let mut text = format!(
        "--- last {TAIL_LINES} lines of {} ---\n{}\n",
        log.path().display(),
        log.tail(TAIL_LINES)
    );
    let qemu = std::fs::read_to_string(qemu_output).unwrap_or_default();
    let qemu: Vec<&str> = qemu
        .lines()
        .filter(|l| !l.contains("is not connected to host network"))
        .collect();
    if !qemu.is_empty() {
        let tail = &qemu[qemu.len().saturating_sub(10)..];
        text.push_str(&format!(
            "--- {} ---\n{}\n",
            qemu_output.display(),
            tail.join("\n")
        ));
    }
    text
}

/// Creates the workdir (a temporary one if none is given) and clears what a previous run left there.
fn prepare_workdir(workdir: Option<&Path>) -> Result<(Layout, Option<TempDir>)> {
    let (dir, tempdir) = match workdir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
            (dir.to_path_buf(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("clump-lab-")
                .tempdir()
                .map_err(Error::io("creating a temporary workdir"))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let dir = std::path::absolute(&dir).map_err(Error::io(format!("resolving {}", dir.display())))?;
    let layout = Layout::new(&dir);
    for socket in [&layout.serial_socket, &layout.qmp_socket] {
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::SocketPathTooLong {
                path: socket.clone(),
                max: MAX_SOCKET_PATH,
            });
        }
    }
    for stale in [&layout.serial_log, &layout.serial_socket, &layout.qmp_socket] {
        match std::fs::remove_file(stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(format!("removing {}", stale.display()))(e))
            }
            _ => {}
        }
    }
    Ok((layout, tempdir))
}

/// Starts QEMU (inside `netns` if given, through `ip netns exec`, which execs QEMU: the child is QEMU)
/// with its output in `qemu.log` and its command line in `qemu.cmdline` (to rerun by hand).
fn spawn_qemu(args: &[OsString], layout: &Layout, netns: Option<&str>) -> Result<Process> {
    let printable = args
        .iter()
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let prefix = netns
        .map(|ns| format!("ip netns exec {} ", shell_quote(ns)))
        .unwrap_or_default();
    let cmdline = layout.dir.join("qemu.cmdline");
    std::fs::write(&cmdline, format!("{prefix}{QEMU} {printable}\n"))
        .map_err(Error::io(format!("writing {}", cmdline.display())))?;
    let output = File::create(&layout.qemu_output)
        .map_err(Error::io(format!("creating {}", layout.qemu_output.display())))?;
    let stderr = output
        .try_clone()
        .map_err(Error::io("duplicating the QEMU log"))?;
    if netns.is_some() && !crate::lab::program_exists(QEMU) {
        return Err(Error::QemuMissing(QEMU));
    }
    let mut cmd = match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, QEMU]);
            cmd
        }
        None => Command::new(QEMU),
    };
    cmd.args(args).stdin(Stdio::null()).stdout(output).stderr(stderr);
    Process::spawn(cmd).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::QemuMissing(QEMU),
        _ => Error::io(format!("starting {QEMU}"))(e),
    })
}

/// `arg` quoted for a POSIX shell when it needs to be.
pub(crate) fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-,.=/:@%+".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Connects to a socket QEMU listens on, waiting (bounded) for QEMU to create it.
fn connect(process: &mut Process, layout: &Layout, name: &str, path: &Path) -> Result<UnixStream> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::io(format!("connecting to {}", path.display()))(e))
            }
            Err(_) => {}
        }
        if let Some(status) = process.try_wait().map_err(Error::io("checking on QEMU"))? {
            let mut log = SerialLog::new(&layout.serial_log);
            let _ = log.refresh();
            return Err(Error::Exited {
                node: name.to_owned(),
                what: format!("QEMU to open {}", path.display()),
                status,
                context: context(&log, &layout.qemu_output),
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_quoted_only_where_needed() {
        assert_eq!(shell_quote("-device"), "-device");
        assert_eq!(
            shell_quote("e1000,netdev=net0,mac=52:54:00:00:00:01"),
            "e1000,netdev=net0,mac=52:54:00:00:00:01"
        );
        assert_eq!(shell_quote("quiet panic=10"), "'quiet panic=10'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
