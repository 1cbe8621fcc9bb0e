//! The refresh threads: one asks clumpd for the node map every interval, one follows its events.
//! They run apart from the screen so a stuck clumpd (replies may take up to the client's timeout)
//! never stops the keys; both end when the screen drops its receiver.

use super::app::Update;
use clump_api::{table, Client};
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::thread;
use std::time::Duration;

/// Starts both threads.
pub fn spawn(socket: PathBuf, interval: Duration, tx: Sender<Update>) {
    let (s, t) = (socket.clone(), tx.clone());
    thread::spawn(move || poll_nodes(&s, interval, &t));
    thread::spawn(move || follow_events(&socket, interval, &tx));
}

fn poll_nodes(socket: &PathBuf, interval: Duration, tx: &Sender<Update>) {
    // One connection for as long as it works: clumpd runs a thread per client.
    let mut client: Option<Client> = None;
    loop {
        let reply = match client.take() {
            Some(c) => Ok(c),
            None => Client::connect(socket),
        }
        .and_then(|mut c| c.nodes().map(|map| (c, map)));
        let update = match reply {
            Ok((c, map)) => {
                client = Some(c);
                Update::Map(map)
            }
            Err(e) => Update::Failed(e.to_string()),
        };
        if tx.send(update).is_err() {
            return;
        }
        thread::sleep(interval);
    }
}

fn follow_events(socket: &PathBuf, interval: Duration, tx: &Sender<Update>) {
    loop {
        // The poller reports clumpd's absence; this one just tries again.
        if let Ok(watch) = Client::connect(socket).and_then(Client::watch) {
            for event in watch {
                let Ok(event) = event else { break };
                if tx.send(Update::Event(table::event(&event))).is_err() {
                    return;
                }
            }
        }
        thread::sleep(interval.max(Duration::from_secs(1)));
    }
}
