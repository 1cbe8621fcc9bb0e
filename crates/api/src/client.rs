//! A blocking client of the local API, for `clump` and the screen.

use crate::error::ApiError;
use crate::jobs::{ExitStatus, JobInfo, Migrated, Output, Started, StreamInput, StreamOutput};
use crate::map::NodeMap;
use crate::protocol::{
    read_line_max, write_line, Event, NodeChange, NodeControl, Reply, Request, Speed, Stats, Versioned,
    MAX_LINE, MAX_REPLY_LINE,
};
use serde::de::DeserializeOwned;
use std::io::{self, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where `clumpd` listens.
pub const SOCKET: &str = "/run/clump/clumpd.sock";

/// Environment variable naming another socket (tests, a second daemon); [`socket_path`] honours it.
pub const SOCKET_ENV: &str = "CLUMP_API_SOCKET";

/// How long a request waits for its reply. `clumpd` answers from memory, so a slower answer means
/// it is stuck, and a command that hangs is worse than one that says so.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The socket to use: `$CLUMP_API_SOCKET` when set and not empty, else [`SOCKET`].
pub fn socket_path() -> PathBuf {
    match std::env::var_os(SOCKET_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(SOCKET),
    }
}

/// One connection to `clumpd`; requests are answered in order on it.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Client {
    /// Connects to [`socket_path`].
    pub fn connect_default() -> Result<Client, ApiError> {
        Client::connect(socket_path())
    }

    /// Connects to the socket at `path`, with [`TIMEOUT`] for each reply.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ApiError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ApiError::NotRunning(format!("no {}", path.display())),
            io::ErrorKind::ConnectionRefused => {
                // The socket file outlived its daemon.
                ApiError::NotRunning(format!("nothing listens on {}", path.display()))
            }
            _ => ApiError::io(format!("cannot connect to {}", path.display()), e),
        })?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .map_err(|e| ApiError::io("cannot set a timeout on the socket", e))?;
        let writer = stream
            .try_clone()
            .map_err(|e| ApiError::io("cannot clone the socket", e))?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
            buf: Vec::new(),
            timeout: TIMEOUT,
        })
    }

    /// The node map.
    pub fn nodes(&mut self) -> Result<NodeMap, ApiError> {
        self.call(&Request::Nodes)
    }

    /// The events after `since` (a `seq`) that `clumpd` still holds, oldest first.
    pub fn events(&mut self, since: u64) -> Result<Vec<Event>, ApiError> {
        self.call(&Request::Events { since })
    }

    /// Counters of the daemon and its gossip layer.
    pub fn stats(&mut self) -> Result<Stats, ApiError> {
        self.call(&Request::Stats)
    }

    /// Fixes this node's speed, or with `None` goes back to the measured figure (root only).
    pub fn set_speed(&mut self, speed: Option<u32>) -> Result<Speed, ApiError> {
        self.call(&Request::SetSpeed { speed })
    }

    /// This node's guest policy and balancer, after `change` if one is given (root only).
    pub fn node(&mut self, change: Option<NodeChange>) -> Result<NodeControl, ApiError> {
        self.call(&Request::Node { change })
    }

    /// Changes how long each reply may take (the default is [`TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ApiError> {
        let stream = self.reader.get_ref();
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| ApiError::io("cannot set a timeout on the socket", e))?;
        self.timeout = timeout;
        Ok(())
    }

    /// Turns the connection into the event stream: every event from now on, as it happens. The
    /// stream waits without a timeout (events may be minutes apart) and ends when `clumpd` closes
    /// the connection.
    pub fn watch(mut self) -> Result<Watch, ApiError> {
        write_line(&mut self.writer, &Versioned::new(Request::Watch)).map_err(|e| self.timed(e))?;
        self.reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(|e| ApiError::io("cannot clear the socket's timeout", e))?;
        Ok(Watch {
            client: self,
            done: false,
        })
    }

    /// Every job this node holds.
    pub fn ps(&mut self) -> Result<Vec<JobInfo>, ApiError> {
        self.call(&Request::Ps { local: true })
    }

    /// Every job in the cluster (of the nodes that answer).
    pub fn cluster_ps(&mut self) -> Result<Vec<JobInfo>, ApiError> {
        self.call(&Request::Ps { local: false })
    }

    /// Starts a job that runs on without a client; its id. The answer comes once the job is
    /// where `place` says, so a placement elsewhere waits as long as that move takes.
    pub fn run_detached(
        &mut self,
        argv: Vec<String>,
        cwd: String,
        env: Vec<String>,
        place: crate::jobs::Place,
        lock: bool,
    ) -> Result<Started, ApiError> {
        if place != crate::jobs::Place::Home {
            self.reader
                .get_ref()
                .set_read_timeout(None)
                .map_err(|e| ApiError::io("cannot clear the socket's timeout", e))?;
        }
        self.call(&Request::Run {
            argv,
            cwd,
            env,
            attach: false,
            place,
            lock,
        })
    }

    /// Locks a job to the node it runs on (`locked`), or lets it move again.
    pub fn lock(&mut self, job: &str, locked: bool) -> Result<(), ApiError> {
        self.call(&Request::Lock {
            job: job.into(),
            locked,
        })
    }

    /// Sends a signal (`TERM`, `9`, ...) to a job.
    pub fn signal(&mut self, job: &str, signal: &str) -> Result<(), ApiError> {
        self.call(&Request::Signal {
            job: job.into(),
            signal: signal.into(),
        })
    }

    /// Moves a job to `node` (`None`: home), waiting as long as the move takes.
    pub fn migrate(&mut self, job: &str, node: Option<&str>) -> Result<Migrated, ApiError> {
        self.migrate_with(job, node, true)
    }

    /// [`Client::migrate`], with pre-copy or without (the job frozen for the whole copy).
    pub fn migrate_with(
        &mut self,
        job: &str,
        node: Option<&str>,
        precopy: bool,
    ) -> Result<Migrated, ApiError> {
        self.reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(|e| ApiError::io("cannot clear the socket's timeout", e))?;
        self.call(&Request::Migrate {
            job: job.into(),
            node: node.map(str::to_owned),
            no_precopy: !precopy,
        })
    }

    /// What is kept of a job's output.
    pub fn output(&mut self, job: &str) -> Result<Output, ApiError> {
        self.call(&Request::Output { job: job.into() })
    }

    /// Waits, without a timeout, until the job ends.
    pub fn wait(&mut self, job: &str) -> Result<ExitStatus, ApiError> {
        self.reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(|e| ApiError::io("cannot clear the socket's timeout", e))?;
        self.call(&Request::Wait { job: job.into() })
    }

    /// Sends `run` with `attach` or `attach` and turns the connection into the job's stream,
    /// which waits without a timeout (a job may be silent for hours).
    pub fn stream(mut self, request: &Request) -> Result<JobStream, ApiError> {
        write_line(&mut self.writer, &Versioned::new(request)).map_err(|e| self.timed(e))?;
        let stream = self.reader.get_ref();
        stream
            .set_read_timeout(None)
            .and_then(|()| stream.set_write_timeout(None))
            .map_err(|e| ApiError::io("cannot clear the socket's timeout", e))?;
        Ok(JobStream { client: self })
    }

    fn call<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T, ApiError> {
        write_line(&mut self.writer, &Versioned::new(request)).map_err(|e| self.timed(e))?;
        match self.read(MAX_REPLY_LINE)? {
            Some(reply) => reply.into_result(),
            None => Err(ApiError::Protocol(
                "clumpd closed the connection without a reply".into(),
            )),
        }
    }

    fn read<T: DeserializeOwned>(&mut self, max: usize) -> Result<Option<Reply<T>>, ApiError> {
        let Some(line) = read_line_max(&mut self.reader, &mut self.buf, max).map_err(|e| self.timed(e))?
        else {
            return Ok(None);
        };
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| ApiError::Protocol(format!("unexpected reply from clumpd: {e}")))
    }

    /// A socket timeout surfaces as `WouldBlock` (or `TimedOut`); say what it means.
    fn timed(&self, e: ApiError) -> ApiError {
        match e {
            ApiError::Io { source, .. }
                if matches!(source.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
            {
                ApiError::Timeout(self.timeout)
            }
            e => e,
        }
    }
}

/// The event stream of [`Client::watch`]. Ends (`None`) when `clumpd` closes the connection; after
/// an error it yields nothing more.
pub struct Watch {
    client: Client,
    done: bool,
}

impl Iterator for Watch {
    type Item = Result<Event, ApiError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.client.read::<Event>(MAX_LINE) {
            Ok(Some(Reply::Ok(event))) => return Some(Ok(event)),
            Ok(Some(Reply::Error(message))) => Some(Err(ApiError::Remote(message))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        };
        self.done = true;
        item
    }
}

/// An attached job stream: [`JobStream::read`] reads what the job writes, [`JobStream::input`]
/// gives a writer for stdin (used from another thread).
pub struct JobStream {
    client: Client,
}

impl JobStream {
    /// The next line from `clumpd`; `None` when it closed the stream. A line of a kind this build
    /// does not know is skipped.
    pub fn read(&mut self) -> Result<Option<StreamOutput>, ApiError> {
        loop {
            let Some(line) = read_line_max(&mut self.client.reader, &mut self.client.buf, MAX_LINE)? else {
                return Ok(None);
            };
            let value: Reply<serde_json::Value> = serde_json::from_str(&line)
                .map_err(|e| ApiError::Protocol(format!("unexpected line from clumpd: {e}")))?;
            if let Ok(output) = serde_json::from_value::<StreamOutput>(value.into_result()?) {
                return Ok(Some(output));
            }
        }
    }

    /// A writer for the client's side of the stream.
    pub fn input(&self) -> Result<StreamWriter, ApiError> {
        let socket = self
            .client
            .writer
            .try_clone()
            .map_err(|e| ApiError::io("cannot clone the socket", e))?;
        Ok(StreamWriter { socket })
    }
}

/// Sends [`StreamInput`] lines on a [`JobStream`].
pub struct StreamWriter {
    socket: UnixStream,
}

impl StreamWriter {
    pub fn send(&mut self, input: &StreamInput) -> Result<(), ApiError> {
        write_line(&mut self.socket, input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::tests::fixture;
    use crate::protocol::{read_line, EventKind};
    use std::io::Write;
    use std::os::unix::net::UnixListener;
    use std::thread;

    /// Serves one connection: for each request line, `answer` gives the lines to send back.
    fn serve(
        answer: impl Fn(&str) -> Vec<String> + Send + 'static,
    ) -> (tempfile::TempDir, PathBuf, thread::JoinHandle<Vec<String>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clumpd.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            let mut seen = Vec::new();
            while let Ok(Some(line)) = read_line(&mut reader, &mut buf) {
                for out in answer(&line) {
                    if writer
                        .write_all(out.as_bytes())
                        .and_then(|()| writer.write_all(b"\n"))
                        .is_err()
                    {
                        return seen;
                    }
                }
                // A watch ends when the daemon closes the connection.
                let watch = line.contains("watch");
                seen.push(line);
                if watch {
                    return seen;
                }
            }
            seen
        });
        (dir, path, handle)
    }

    fn event(seq: u64) -> Event {
        Event {
            seq,
            time_ms: 1000 * seq,
            kind: EventKind::NodeJoined,
            node: None,
            number: Some(12),
            address: None,
            text: format!("event {seq}"),
        }
    }

    #[test]
    fn requests_get_their_typed_replies_on_one_connection() {
        let (_dir, path, server) = serve(|line| {
            let request: Request = serde_json::from_str(line).unwrap();
            let reply = match request {
                Request::Nodes => serde_json::to_string(&Reply::Ok(fixture())),
                Request::Events { since } => serde_json::to_string(&Reply::Ok(vec![event(since + 1)])),
                Request::Stats => serde_json::to_string(&Reply::Ok(Stats {
                    alive: 3,
                    ..Stats::default()
                })),
                Request::SetSpeed { speed } => serde_json::to_string(&Reply::Ok(Speed {
                    speed,
                    measured: Some(9),
                    fixed: true,
                })),
                _ => unreachable!(),
            };
            vec![reply.unwrap()]
        });
        let mut client = Client::connect(&path).unwrap();
        assert_eq!(client.nodes().unwrap(), fixture());
        assert_eq!(client.events(41).unwrap(), vec![event(42)]);
        assert_eq!(client.stats().unwrap().alive, 3);
        assert_eq!(client.set_speed(Some(500)).unwrap().speed, Some(500));
        assert_eq!(client.set_speed(None).unwrap().speed, None);
        drop(client);
        assert_eq!(
            server.join().unwrap(),
            [
                r#"{"v":1,"op":"nodes"}"#,
                r#"{"v":1,"op":"events","since":41}"#,
                r#"{"v":1,"op":"stats"}"#,
                r#"{"v":1,"op":"set-speed","speed":500}"#,
                r#"{"v":1,"op":"set-speed","speed":null}"#,
            ]
        );
    }

    #[test]
    fn an_error_reply_is_remote() {
        let (_dir, path, _server) = serve(|_| vec![r#"{"error":"only root may set the speed"}"#.into()]);
        let e = Client::connect(&path).unwrap().set_speed(Some(1)).unwrap_err();
        assert!(
            matches!(&e, ApiError::Remote(m) if m == "only root may set the speed"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "clumpd: only root may set the speed");
    }

    #[test]
    fn garbage_and_silence_are_protocol_errors() {
        let (_dir, path, _server) = serve(|_| vec!["hello".into()]);
        let e = Client::connect(&path).unwrap().nodes().unwrap_err();
        assert!(matches!(e, ApiError::Protocol(_)), "{e:?}");

        let (_dir, path, _server) = serve(|_| vec![r#"{"ok":{"version":1}}"#.into()]);
        let e = Client::connect(&path).unwrap().nodes().unwrap_err();
        assert!(matches!(e, ApiError::Protocol(_)), "{e:?}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let closer = thread::spawn(move || drop(listener.accept().unwrap()));
        let mut client = Client::connect(&path).unwrap();
        closer.join().unwrap();
        // Either the write or the read notices; both are the daemon's fault, not ours.
        let e = client.stats().unwrap_err();
        assert!(matches!(e, ApiError::Protocol(_) | ApiError::Io { .. }), "{e:?}");
    }

    #[test]
    fn a_missing_socket_means_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clumpd.sock");
        let e = Client::connect(&path).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!("clumpd is not running (no {})", path.display())
        );
        // A socket left behind by a daemon that died.
        drop(UnixListener::bind(&path).unwrap());
        let e = Client::connect(&path).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!("clumpd is not running (nothing listens on {})", path.display())
        );
    }

    #[test]
    fn the_default_message_names_the_default_socket() {
        let e = ApiError::NotRunning(format!("no {SOCKET}"));
        assert_eq!(e.to_string(), "clumpd is not running (no /run/clump/clumpd.sock)");
    }

    #[test]
    fn a_daemon_that_does_not_answer_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let holder = thread::spawn(move || {
            // Reads the request and never answers, until the client goes away.
            let (mut stream, _) = listener.accept().unwrap();
            io::copy(&mut stream, &mut io::sink()).unwrap();
        });
        let mut client = Client::connect(&path).unwrap();
        client.set_timeout(Duration::from_millis(200)).unwrap();
        let started = std::time::Instant::now();
        let e = client.nodes().unwrap_err();
        assert!(matches!(e, ApiError::Timeout(_)), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(e.to_string(), "clumpd did not answer within 200ms");
        assert_eq!(
            ApiError::Timeout(TIMEOUT).to_string(),
            "clumpd did not answer within 5s"
        );
        drop(client);
        holder.join().unwrap();
    }

    #[test]
    fn watch_yields_events_until_the_daemon_closes() {
        let (_dir, path, server) = serve(|line| {
            assert_eq!(line, r#"{"v":1,"op":"watch"}"#);
            (1..=3)
                .map(|s| serde_json::to_string(&Reply::Ok(event(s))).unwrap())
                .collect()
        });
        let events: Vec<Event> = Client::connect(&path)
            .unwrap()
            .watch()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(events, vec![event(1), event(2), event(3)]);
        server.join().unwrap();
    }

    #[test]
    fn watch_stops_after_an_error_line() {
        let (_dir, path, _server) = serve(|_| {
            vec![
                serde_json::to_string(&Reply::Ok(event(1))).unwrap(),
                r#"{"error":"too many watchers"}"#.into(),
                serde_json::to_string(&Reply::Ok(event(2))).unwrap(),
            ]
        });
        let mut watch = Client::connect(&path).unwrap().watch().unwrap();
        assert_eq!(watch.next().unwrap().unwrap(), event(1));
        assert!(matches!(watch.next(), Some(Err(ApiError::Remote(m))) if m == "too many watchers"));
        assert!(watch.next().is_none());
    }
}
