//! Cluster state from clumpd's local API (the same one `clump` uses): the node map and counters
//! on every tick, and events pushed as they happen so a membership change is drawn at once. The
//! runtime may restart: every connection is made again when it breaks, forever.

use clump_api::{Client, Event, NodeMap, Stats};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

/// What the input threads tell the screen's loop.
#[derive(Debug)]
pub enum Input {
    Event(Event),
    Keys(Vec<u8>),
    Quit,
}

/// A request connection, made again whenever a request fails.
pub struct Feed {
    socket: PathBuf,
    client: Option<Client>,
    /// The last event seen, so a new connection asks only for newer ones.
    last_event: u64,
}

/// One answer of the runtime: what a frame shows.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub map: Option<NodeMap>,
    pub stats: Option<Stats>,
}

impl Feed {
    pub fn new(socket: &Path) -> Feed {
        Feed {
            socket: socket.to_owned(),
            client: None,
            last_event: 0,
        }
    }

    /// The node map and counters, or `None` while the runtime does not answer.
    pub fn snapshot(&mut self) -> Option<Snapshot> {
        let client = self.client()?;
        let result = client.nodes().and_then(|map| Ok((map, client.stats()?)));
        match result {
            Ok((map, stats)) => Some(Snapshot {
                map: Some(map),
                stats: Some(stats),
            }),
            Err(e) => {
                tracing::debug!(error = %e, "the runtime did not answer");
                self.client = None;
                None
            }
        }
    }

    /// Events after the last one seen (all the daemon holds after it restarted: its numbering
    /// starts again at 1, so a `seq` below ours means a new daemon).
    pub fn events_since_last(&mut self, stats: Option<&Stats>) -> Vec<Event> {
        if stats.is_some_and(|s| s.events < self.last_event) {
            self.last_event = 0;
        }
        let since = self.last_event;
        let Some(client) = self.client() else {
            return Vec::new();
        };
        match client.events(since) {
            Ok(events) => {
                if let Some(last) = events.last() {
                    self.last_event = last.seq;
                }
                events
            }
            Err(_) => {
                self.client = None;
                Vec::new()
            }
        }
    }

    /// Marks an event pushed by the watch stream as seen.
    pub fn seen(&mut self, seq: u64) {
        self.last_event = self.last_event.max(seq);
    }

    fn client(&mut self) -> Option<&mut Client> {
        if self.client.is_none() {
            let mut c = Client::connect(&self.socket).ok()?;
            // A hung daemon must not freeze the screen: the clock in the header keeps going.
            c.set_timeout(Duration::from_secs(2)).ok()?;
            self.client = Some(c);
        }
        self.client.as_mut()
    }
}

/// Follows the runtime's event stream on its own thread, reconnecting every second while the
/// runtime is down, and wakes the screen with each event.
pub fn spawn_watch(socket: PathBuf, tx: Sender<Input>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || loop {
            if let Ok(watch) = Client::connect(&socket).and_then(|c| c.watch()) {
                for ev in watch {
                    match ev {
                        Ok(e) => {
                            if tx.send(Input::Event(e)).is_err() {
                                return;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        })
        .map(|_| ())
}

/// Reads the keyboard of the screen's terminal on its own thread.
pub fn spawn_keyboard(tty: PathBuf, tx: Sender<Input>) -> std::io::Result<()> {
    use std::io::Read;
    let mut file = std::fs::File::open(&tty)?;
    std::thread::Builder::new()
        .name("keyboard".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                match file.read(&mut buf) {
                    Ok(0) | Err(_) => std::thread::sleep(Duration::from_millis(500)),
                    Ok(n) => {
                        if tx.send(Input::Keys(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .map(|_| ())
}
