//! `clump node block|unblock|drain|undrain|window|balance|status`: how this node takes guest jobs
//! and balances (root only for changes).

use anyhow::{bail, Result};
use clump_api::{Client, NodeChange, NodeControl};
use std::path::Path;
use std::time::{Duration, Instant};

/// The text `clump node status` and every change print.
pub fn describe(c: &NodeControl) -> String {
    let mut why = Vec::new();
    if c.blocked {
        why.push("blocked (clump node unblock)");
    }
    if c.draining {
        why.push("draining (clump node undrain)");
    }
    if c.window_state.as_deref().is_some_and(|s| s != "open") {
        why.push("outside its window");
    }
    let guests = if c.accepts_guests {
        "taken".to_string()
    } else {
        format!("refused: {}", why.join(", "))
    };
    let window = match (&c.window, &c.window_state) {
        (Some(w), Some(state)) => format!("{w} ({state}, node clock)"),
        _ => "none (guests any time)".to_string(),
    };
    let knobs: Vec<String> = c.knobs.iter().map(|(n, v)| format!("{n}={v}")).collect();
    format!(
        "guest jobs: {guests}; {} running here\nwindow:     {window}\nbalancer:   {} ({})\n",
        c.guests,
        if c.balancer { "on" } else { "off" },
        knobs.join(" ")
    )
}

pub fn change(socket: &Path, change: Option<NodeChange>) -> Result<()> {
    let reply = Client::connect(socket)?.node(change)?;
    print!("{}", describe(&reply));
    Ok(())
}

/// `clump node drain`: stop taking guests and wait until those here have left (unless `wait` is
/// false), at most `timeout`.
pub fn drain(socket: &Path, wait: bool, timeout: Duration) -> Result<()> {
    let reply = Client::connect(socket)?.node(Some(NodeChange::Drain(true)))?;
    if !wait {
        print!("{}", describe(&reply));
        return Ok(());
    }
    let end = Instant::now() + timeout;
    let mut guests = reply.guests;
    let mut said = None;
    while guests > 0 {
        if said != Some(guests) {
            eprintln!("clump: {guests} guest job(s) still here, leaving...");
            said = Some(guests);
        }
        if Instant::now() > end {
            bail!(
                "{guests} guest job(s) still here after {} s; the node keeps draining",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
        guests = Client::connect(socket)?.node(None)?.guests;
    }
    println!(
        "node drained: no guest job runs here, and none will come (clump node undrain to take them again)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_says_why_guests_are_refused_and_names_the_knobs() {
        let mut c = NodeControl {
            accepts_guests: true,
            guests: 1,
            balancer: true,
            knobs: vec![("stability".into(), 1300)],
            ..NodeControl::default()
        };
        let t = describe(&c);
        assert!(t.contains("guest jobs: taken; 1 running here"), "{t}");
        assert!(t.contains("balancer:   on (stability=1300)"), "{t}");
        c.accepts_guests = false;
        c.blocked = true;
        c.window = Some("20:00-07:00".into());
        c.window_state = Some("closed".into());
        let t = describe(&c);
        assert!(
            t.contains("refused: blocked (clump node unblock), outside its window"),
            "{t}"
        );
        assert!(t.contains("20:00-07:00 (closed, node clock)"), "{t}");
    }
}
