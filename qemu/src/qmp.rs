//! A small synchronous QMP client (QEMU Machine Protocol: one JSON object per line).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// How long a QMP command may take before the client gives up.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A QMP connection in command mode, with the asynchronous events it has seen.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Bytes of a message not yet ended by a newline.
    pending: Vec<u8>,
    events: Vec<Value>,
    next_id: u64,
    closed: bool,
}

impl Qmp {
    /// Reads QEMU's greeting and negotiates capabilities.
    pub fn handshake(stream: UnixStream) -> Result<Self> {
        let writer = stream.try_clone().map_err(Error::io("cloning the QMP socket"))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            pending: Vec::new(),
            events: Vec::new(),
            next_id: 0,
            closed: false,
        };
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        match qmp.read_message(deadline)? {
            Read::Message(greeting) if greeting.get("QMP").is_some() => {}
            other => return Err(Error::Qmp(format!("expected a greeting, got {other:?}"))),
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs a command and returns its `return` value. Events read meanwhile are kept.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        let mut line = request.to_string();
        line.push('\n');
        tracing::debug!(%command, "QMP request");
        self.writer
            .write_all(line.as_bytes())
            .map_err(Error::io(format!("sending QMP {command}")))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let msg = match self.read_message(deadline)? {
                Read::Message(msg) => msg,
                Read::Closed => {
                    return Err(Error::Qmp(format!(
                        "QEMU closed the connection before answering {command}"
                    )))
                }
                Read::TimedOut => {
                    return Err(Error::Qmp(format!(
                        "no answer to {command} within {COMMAND_TIMEOUT:?}"
                    )))
                }
            };
            if msg.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(value) = msg.get("return") {
                return Ok(value.clone());
            }
            let error = msg.get("error");
            let field = |name| {
                error
                    .and_then(|e| e.get(name))
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            };
            return Err(Error::QmpCommand {
                command: command.to_owned(),
                class: field("class"),
                desc: field("desc"),
            });
        }
    }

    /// Reads messages for up to `wait`, or until QEMU closes the connection, keeping the events.
    pub fn collect_events(&mut self, wait: Duration) -> Result<&[Value]> {
        let deadline = Instant::now() + wait;
        while let Read::Message(_) = self.read_message(deadline)? {}
        Ok(&self.events)
    }

    /// The events seen so far (objects with `event`, `data`, `timestamp`).
    pub fn events(&self) -> &[Value] {
        &self.events
    }

    /// The next message (events are also recorded), or why there is none.
    fn read_message(&mut self, deadline: Instant) -> Result<Read> {
        loop {
            if self.closed {
                return Ok(Read::Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Read::TimedOut);
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(Error::io("setting the QMP read timeout"))?;
            match self.reader.read_until(b'\n', &mut self.pending) {
                Ok(0) => {
                    self.closed = true;
                    return Ok(Read::Closed);
                }
                Ok(_) if self.pending.ends_with(b"\n") => {
                    let line = std::mem::take(&mut self.pending);
                    let msg: Value = serde_json::from_slice(&line).map_err(|e| {
                        Error::Qmp(format!(
                            "malformed message {:?}: {e}",
                            String::from_utf8_lossy(&line)
                        ))
                    })?;
                    if msg.get("event").is_some() {
                        tracing::debug!(event = %msg["event"], "QMP event");
                        self.events.push(msg.clone());
                    }
                    return Ok(Read::Message(msg));
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    self.closed = true;
                    return Ok(Read::Closed);
                }
                Err(e) => return Err(Error::io("reading from QMP")(e)),
            }
        }
    }
}

/// The outcome of reading one message.
#[derive(Debug)]
enum Read {
    Message(Value),
    Closed,
    TimedOut,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::thread;

    /// A fake QEMU on the other end of a socket pair: greets, then answers per `script`.
    fn fake_qemu(script: Vec<&'static str>) -> (Qmp, thread::JoinHandle<Vec<String>>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let server = thread::spawn(move || {
            let mut requests = Vec::new();
            let mut out = theirs.try_clone().unwrap();
            let mut reader = BufReader::new(theirs);
            out.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .unwrap();
            for reply in script {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                requests.push(line);
                out.write_all(reply.as_bytes()).unwrap();
            }
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            requests
        });
        (Qmp::handshake(ours).unwrap(), server)
    }

    #[test]
    fn commands_get_their_own_answer_and_events_are_kept() {
        let (mut qmp, server) = fake_qemu(vec![
            "{\"return\": {}, \"id\": 1}\r\n",
            "{\"event\": \"POWERDOWN\", \"timestamp\": {}}\r\n{\"return\": {\"status\": \"running\"}, \"id\": 2}\r\n",
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}, \"id\": 3}\r\n",
        ]);
        let status = qmp.execute("query-status", None).unwrap();
        assert_eq!(status["status"], "running");
        assert_eq!(qmp.events().len(), 1);
        assert_eq!(qmp.events()[0]["event"], "POWERDOWN");
        let err = qmp
            .execute("screendump", Some(json!({"filename": "/x"})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("GenericError: nope"), "{err}");
        drop(qmp);
        let requests = server.join().unwrap();
        assert!(requests[0].contains("qmp_capabilities"));
        assert!(requests[2].contains("\"arguments\":{\"filename\":\"/x\"}"));
    }

    #[test]
    fn events_after_the_last_command_are_collected_until_close() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let server = thread::spawn(move || {
            let mut out = theirs.try_clone().unwrap();
            let mut reader = BufReader::new(theirs);
            out.write_all(b"{\"QMP\": {}}\r\n").unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            out.write_all(b"{\"return\": {}, \"id\": 1}\r\n{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true, \"reason\": \"guest-shutdown\"}}\r\n").unwrap();
        });
        let mut qmp = Qmp::handshake(ours).unwrap();
        server.join().unwrap();
        let events = qmp.collect_events(Duration::from_secs(5)).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["data"]["reason"], "guest-shutdown");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(b"not json\n").unwrap();
        let err = Qmp::handshake(ours).unwrap_err().to_string();
        assert!(err.contains("malformed"), "{err}");
    }
}
