//! The cluster commands: `clump nodes`, `clump node set-speed`, `clump events`, `clump stats`.
//! They talk to `clumpd` over the local API (`clump_api::Client`); all text comes from
//! `clump_api::table`, so `clump` and the screen show the same thing.

use anyhow::{bail, Context, Result};
use clump_api::{table, ApiError, Client, NodeMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where `clumpd` publishes the node map: beside its socket, as `/run/clump/nodes.json` is beside
/// `/run/clump/clumpd.sock`, so `CLUMP_API_SOCKET` moves both together.
pub fn nodes_file(socket: &Path) -> PathBuf {
    socket.with_file_name("nodes.json")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `clump nodes [--json]`: the node map from `clumpd`, or from `nodes.json` when `clumpd` does not
/// answer (the file may be a little old; stderr says so and how old).
pub fn nodes(socket: &Path, json: bool) -> Result<()> {
    let map = match Client::connect(socket).and_then(|mut c| c.nodes()) {
        Ok(map) => map,
        Err(e @ (ApiError::NotRunning(_) | ApiError::Timeout(_))) => {
            let file = nodes_file(socket);
            let map = read_nodes_file(&file).with_context(|| format!("{e}, and no node map to show"))?;
            let age = table::duration(now_ms().saturating_sub(map.updated_ms));
            eprintln!("clump: {e}; showing {} as written {age} ago", file.display());
            map
        }
        Err(e) => return Err(e.into()),
    };
    let text = if json {
        serde_json::to_string_pretty(&map).context("cannot encode the node map")? + "\n"
    } else {
        table::nodes(&map, now_ms())
    };
    print(&text)
}

fn read_nodes_file(path: &Path) -> Result<NodeMap> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a node map", path.display()))
}

/// `clump node set-speed N|--measured`.
pub fn set_speed(socket: &Path, speed: Option<u32>) -> Result<()> {
    let reply = Client::connect(socket)?.set_speed(speed)?;
    let measured = reply
        .measured
        .map_or_else(|| "not measured yet".to_owned(), |m| m.to_string());
    let line = match speed {
        Some(_) => {
            let now = reply.speed.map_or_else(|| "-".to_owned(), |s| s.to_string());
            format!("speed of this node set to {now} (measured: {measured})\n")
        }
        None => format!("speed of this node back to the measured figure ({measured})\n"),
    };
    print(&line)
}

/// `clump stats [--json]`.
pub fn stats(socket: &Path, json: bool) -> Result<()> {
    let stats = Client::connect(socket)?.stats()?;
    let text = if json {
        serde_json::to_string_pretty(&stats).context("cannot encode the counters")? + "\n"
    } else {
        table::stats(&stats)
    };
    print(&text)
}

/// `clump events [--since N] [--follow] [--json]`: the events `clumpd` holds after `since`, then
/// with `follow` every new one as it happens. With `--json`, one event object per line.
pub fn events(socket: &Path, since: u64, follow: bool, json: bool) -> Result<()> {
    // Watch before asking for the history, so an event that happens in between is in the stream
    // (and skipped there if the history had it) rather than lost.
    let watch = if follow {
        Some(Client::connect(socket)?.watch()?)
    } else {
        None
    };
    let history = Client::connect(socket)?.events(since)?;
    let mut out = std::io::stdout().lock();
    let mut last = since;
    if let Some(first) = history.first() {
        if since > 0 && first.seq > since + 1 {
            eprintln!(
                "clump: events {} to {} are no longer held by clumpd",
                since + 1,
                first.seq - 1
            );
        }
    }
    for event in &history {
        write_event(&mut out, event, json)?;
        last = event.seq;
    }
    out.flush()?;
    let Some(watch) = watch else { return Ok(()) };
    for event in watch {
        let event = event?;
        if event.seq <= last {
            continue;
        }
        if last > 0 && event.seq > last + 1 {
            // clumpd drops events for a watcher that falls behind; say so rather than hide it.
            let missed = event.seq - last - 1;
            eprintln!(
                "clump: {missed} {} missed",
                if missed == 1 { "event" } else { "events" }
            );
        }
        write_event(&mut out, &event, json)?;
        out.flush()?;
        last = event.seq;
    }
    bail!("clumpd closed the event stream (stopped or restarted?)")
}

fn write_event(out: &mut impl Write, event: &clump_api::Event, json: bool) -> Result<()> {
    if json {
        let line = serde_json::to_string(event).context("cannot encode an event")?;
        writeln!(out, "{line}")?;
    } else {
        writeln!(out, "{}", table::event(event))?;
    }
    Ok(())
}

fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_map_file_is_beside_the_socket() {
        assert_eq!(
            nodes_file(Path::new(clump_api::SOCKET)),
            Path::new(clump_api::NODES_FILE)
        );
        assert_eq!(
            nodes_file(Path::new("/tmp/x/api.sock")),
            Path::new("/tmp/x/nodes.json")
        );
    }
}
