//! Attacks on the TCP ports: garbage, a Noise handshake under a key of our own, half a
//! handshake then silence, a handshake trickled a byte a second, and many connections at once.
//! Every connection the node accepts must be refused; how long it held each stalled one is
//! measured (the handshake has a deadline).

use crate::forge::Rng;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The Clump stream protocol as ARCHITECTURE.md names it.
const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE: &[u8] = b"clump stream v1";
/// How long we wait for a node to close a connection we stall.
const HOLD_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Garbage,
    WrongKey,
    Half,
    Trickle,
    Flood,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Garbage => "tcp-garbage",
            Kind::WrongKey => "tcp-noise-wrong-key",
            Kind::Half => "tcp-half-handshake",
            Kind::Trickle => "tcp-trickle",
            Kind::Flood => "tcp-flood",
        }
    }
}

/// What the stream attacks did, per target.
#[derive(Debug, Default)]
pub struct Tally {
    /// Connections established, by target and kind.
    pub connected: std::collections::BTreeMap<(SocketAddr, &'static str), u64>,
    /// Connections that could not be made (refused, timed out).
    pub failed: u64,
    /// The longest a node kept a connection we stalled open before closing it, by target.
    pub held_max: std::collections::BTreeMap<SocketAddr, Duration>,
    /// Stalled connections still open when we gave up waiting ([`HOLD_LIMIT`]).
    pub never_closed: u64,
}

fn count(tally: &Mutex<Tally>, to: SocketAddr, kind: Kind) {
    if let Ok(mut t) = tally.lock() {
        *t.connected.entry((to, kind.name())).or_insert(0) += 1;
    }
}

fn connect(to: SocketAddr, tally: &Mutex<Tally>) -> Option<TcpStream> {
    match TcpStream::connect_timeout(&to, Duration::from_secs(3)) {
        Ok(s) => Some(s),
        Err(_) => {
            if let Ok(mut t) = tally.lock() {
                t.failed += 1;
            }
            None
        }
    }
}

/// Waits until the node closes `s` (EOF or reset) and notes how long it took.
fn wait_closed(mut s: TcpStream, since: Instant, to: SocketAddr, tally: &Mutex<Tally>) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if since.elapsed() > HOLD_LIMIT {
                    if let Ok(mut t) = tally.lock() {
                        t.never_closed += 1;
                    }
                    return;
                }
            }
            Err(_) => break,
        }
    }
    let held = since.elapsed();
    if let Ok(mut t) = tally.lock() {
        let max = t.held_max.entry(to).or_default();
        *max = (*max).max(held);
    }
}

/// Random bytes, then our side closed; the node must drop it.
pub fn garbage(to: SocketAddr, rng: &mut Rng, tally: &Mutex<Tally>) {
    let Some(mut s) = connect(to, tally) else { return };
    count(tally, to, Kind::Garbage);
    let n = rng.range(1, 4096);
    let _ = s.write_all(&rng.bytes(n));
    let _ = s.shutdown(Shutdown::Write);
    wait_closed(s, Instant::now(), to, tally);
}

/// A real Noise initiator with a PSK of our own: the node's responder fails to open it.
pub fn wrong_key(to: SocketAddr, rng: &mut Rng, tally: &Mutex<Tally>) {
    let Some(mut s) = connect(to, tally) else { return };
    count(tally, to, Kind::WrongKey);
    let psk: [u8; 32] = rng.bytes(32).try_into().unwrap_or([7; 32]);
    let first = PATTERN
        .parse::<snow::params::NoiseParams>()
        .ok()
        .and_then(|p| {
            snow::Builder::new(p)
                .prologue(PROLOGUE)
                .ok()?
                .psk(0, &psk)
                .ok()?
                .build_initiator()
                .ok()
        })
        .and_then(|mut hs| {
            let mut msg = vec![0u8; 1024];
            let n = hs.write_message(&[], &mut msg).ok()?;
            msg.truncate(n);
            Some(msg)
        });
    let msg = first.unwrap_or_else(|| rng.bytes(48));
    let mut frame = (msg.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&msg);
    let _ = s.write_all(&frame);
    wait_closed(s, Instant::now(), to, tally);
}

/// A frame header promising 48 bytes and 20 of them, then nothing.
pub fn half(to: SocketAddr, rng: &mut Rng, tally: &Mutex<Tally>) {
    let Some(mut s) = connect(to, tally) else { return };
    count(tally, to, Kind::Half);
    let mut bytes = vec![0, 48];
    bytes.extend(rng.bytes(20));
    let _ = s.write_all(&bytes);
    wait_closed(s, Instant::now(), to, tally);
}

/// The same header, then one byte a second: never idle long enough for a per-read timeout.
pub fn trickle(to: SocketAddr, rng: &mut Rng, tally: &Mutex<Tally>) {
    let Some(mut s) = connect(to, tally) else { return };
    count(tally, to, Kind::Trickle);
    let since = Instant::now();
    let _ = s.write_all(&[0, 48]);
    let reader = match s.try_clone() {
        Ok(r) => r,
        Err(_) => return,
    };
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let done = done.clone();
        let byte = rng.bytes(1);
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) && since.elapsed() < HOLD_LIMIT {
                thread::sleep(Duration::from_secs(1));
                if s.write_all(&byte).is_err() {
                    break;
                }
            }
        })
    };
    wait_closed(reader, since, to, tally);
    done.store(true, Ordering::Relaxed);
    let _ = writer.join();
}

/// `n` connections at once, each sending half a frame, held until the node closes them.
pub fn flood(to: SocketAddr, n: usize, tally: &Arc<Mutex<Tally>>) {
    let since = Instant::now();
    let streams: Vec<TcpStream> = (0..n).filter_map(|_| connect(to, tally)).collect();
    let threads: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            count(tally, to, Kind::Flood);
            let _ = s.write_all(&[0, 48, 1, 2, 3]);
            let tally = tally.clone();
            thread::spawn(move || wait_closed(s, since, to, &tally))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
