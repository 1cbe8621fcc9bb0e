//! Streams between nodes (job control, output relay, migration images): TCP carrying the Noise
//! protocol's `NNpsk0` handshake, with a pre-shared key derived from the cluster key, then
//! ChaCha20-Poly1305 transport messages.
//!
//! What that gives, without a line of our own cryptography: only holders of the cluster key
//! complete a handshake (the first message is bound to the key, the responder's reply proves it
//! too); every session has fresh ephemeral keys, so a recorded session replayed later decrypts
//! to nothing, and within a session each message has an implicit counter, so a replayed, dropped
//! or reordered frame fails. The prologue names the protocol version: a node of another version
//! fails the handshake instead of misreading messages.
//!
//! A frame on the wire is a 2-byte big-endian length and that many bytes of Noise message;
//! a message holds at most [`MAX_MESSAGE`] bytes of plaintext.

use clump_seal::ClusterKey;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use zeroize::Zeroize;

/// The Noise protocol name.
pub const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake: peers of another stream version fail it.
pub const PROLOGUE: &[u8] = b"clump stream v1";
/// The label the stream key is derived from the cluster key with.
pub const KEY_LABEL: &str = "stream v1";
/// The largest Noise message (and frame body).
const MAX_FRAME: usize = 65_535;
const TAG_LEN: usize = 16;
/// The initiator's first handshake message: its ephemeral public key (32 bytes) and the tag of
/// its empty payload (16), which the PSK makes encrypted.
pub const FIRST_MESSAGE_LEN: usize = 48;
/// The most plaintext one message carries.
pub const MAX_MESSAGE: usize = MAX_FRAME - TAG_LEN;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the stream failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer does not hold the cluster key (or speaks another version), or a frame was
    /// forged, replayed or damaged.
    #[error("the peer failed authentication (wrong cluster key, other version, or a forged frame)")]
    Auth,
    #[error("the peer closed the stream")]
    Closed,
    #[error("a message of {0} bytes is larger than the {MAX_MESSAGE} a frame holds")]
    TooLarge(usize),
    #[error("a message is not what the protocol expects: {0}")]
    Malformed(String),
    /// The handshake did not finish in its time (a peer that stalls, or trickles bytes).
    #[error("the handshake did not finish in time")]
    Timeout,
}

impl LinkError {
    /// Why a stream ended, in one word (`auth`, `timeout`, `closed`, `io`, `too-large`,
    /// `malformed`, `connect`): what counters and rate-limited logs group by.
    pub fn reason(&self) -> &'static str {
        match self {
            LinkError::Connect { .. } => "connect",
            LinkError::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                "timeout"
            }
            LinkError::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                "closed"
            }
            LinkError::Io(_) => "io",
            LinkError::Auth => "auth",
            LinkError::Closed => "closed",
            LinkError::TooLarge(_) => "too-large",
            LinkError::Malformed(_) => "malformed",
            LinkError::Timeout => "timeout",
        }
    }
}

fn builder_error(_: snow::Error) -> LinkError {
    // Only a malformed pattern or PSK length gets here, both constants: treat as a failed
    // handshake rather than panicking on a path a peer can reach.
    LinkError::Auth
}

/// Reads one frame body into `buf`; `Closed` on a clean end of stream before a frame starts.
fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), LinkError> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(LinkError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = usize::from(u16::from_be_bytes(len));
    buf.resize(len, 0);
    stream.read_exact(buf)?;
    Ok(())
}

/// Fills `buf` before `deadline`, however the peer splits its bytes: a per-read timeout alone
/// lets a peer that sends one byte just before each timeout hold the stream (and its thread) for
/// ever.
fn read_exact_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), LinkError> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LinkError::Timeout);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(if got == 0 {
                    LinkError::Closed
                } else {
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()
                })
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                return Err(LinkError::Timeout)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// [`read_frame`] bounded by `deadline` as a whole.
fn read_frame_by(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Result<(), LinkError> {
    let mut len = [0u8; 2];
    read_exact_by(stream, &mut len, deadline)?;
    buf.resize(usize::from(u16::from_be_bytes(len)), 0);
    match read_exact_by(stream, buf, deadline) {
        Err(LinkError::Closed) => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
        other => other,
    }
}

fn write_frame(stream: &mut TcpStream, body: &[u8]) -> Result<(), LinkError> {
    let len = u16::try_from(body.len()).map_err(|_| LinkError::TooLarge(body.len()))?;
    let mut frame = Vec::with_capacity(2 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame)?;
    Ok(())
}

fn builder(psk: &[u8; 32]) -> Result<snow::Builder<'_>, LinkError> {
    let params: snow::params::NoiseParams = PATTERN.parse().map_err(builder_error)?;
    snow::Builder::new(params)
        .prologue(PROLOGUE)
        .map_err(builder_error)?
        .psk(0, psk)
        .map_err(builder_error)
}

/// Both ends of one authenticated stream. [`Link::split`] gives a sender and a receiver that
/// work from two threads.
#[derive(Debug)]
pub struct Link {
    tx: Sender,
    rx: Receiver,
}

#[derive(Debug)]
struct Shared {
    noise: Mutex<snow::TransportState>,
    peer: SocketAddr,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, snow::TransportState> {
        self.noise.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending half.
#[derive(Debug)]
pub struct Sender {
    stream: TcpStream,
    shared: Arc<Shared>,
    buf: Vec<u8>,
}

/// The receiving half.
#[derive(Debug)]
pub struct Receiver {
    stream: TcpStream,
    shared: Arc<Shared>,
    frame: Vec<u8>,
    plain: Vec<u8>,
}

impl Link {
    /// Connects to `addr` and runs the handshake as initiator; `timeout` bounds the connect and
    /// the handshake (both confirmations included) as a whole.
    pub fn connect(addr: SocketAddr, key: &ClusterKey, timeout: Duration) -> Result<Link, LinkError> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|source| LinkError::Connect { addr, source })?;
        Self::handshake(stream, key, timeout, true)
    }

    /// Runs the handshake as responder on an accepted connection, in `timeout` at most however
    /// the peer paces its bytes.
    pub fn accept(stream: TcpStream, key: &ClusterKey, timeout: Duration) -> Result<Link, LinkError> {
        Self::handshake(stream, key, timeout, false)
    }

    fn handshake(
        mut stream: TcpStream,
        key: &ClusterKey,
        timeout: Duration,
        initiator: bool,
    ) -> Result<Link, LinkError> {
        let deadline = Instant::now() + timeout;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr()?;
        let mut frame = Vec::new();
        if !initiator {
            // Before any key is made (building a handshake draws an X25519 key pair, milliseconds
            // on an emulated CPU): a first message of another size is refused for free, so
            // garbage and stalled connections cost a node no cryptography.
            let mut len = [0u8; 2];
            read_exact_by(&mut stream, &mut len, deadline)?;
            if usize::from(u16::from_be_bytes(len)) != FIRST_MESSAGE_LEN {
                return Err(LinkError::Auth);
            }
            frame.resize(FIRST_MESSAGE_LEN, 0);
            match read_exact_by(&mut stream, &mut frame, deadline) {
                Err(LinkError::Closed) => {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())
                }
                other => other?,
            }
        }
        let mut psk = key.derive(KEY_LABEL);
        let built = builder(&psk).and_then(|b| {
            if initiator {
                b.build_initiator().map_err(builder_error)
            } else {
                b.build_responder().map_err(builder_error)
            }
        });
        psk.zeroize();
        let mut hs = built?;
        // Both handshake messages are an ephemeral key and an empty payload's tag.
        let mut msg = vec![0u8; 2 * FIRST_MESSAGE_LEN];
        let mut payload = Vec::new();
        // NNpsk0: -> psk, e   <- e, ee. The payloads are empty: nothing may act on the first
        // message, which an eavesdropper could replay.
        if initiator {
            let n = hs.write_message(&[], &mut msg).map_err(|_| LinkError::Auth)?;
            write_frame(&mut stream, &msg[..n])?;
            read_frame_by(&mut stream, &mut frame, deadline)?;
            payload.resize(frame.len(), 0);
            hs.read_message(&frame, &mut payload)
                .map_err(|_| LinkError::Auth)?;
        } else {
            payload.resize(frame.len(), 0);
            hs.read_message(&frame, &mut payload)
                .map_err(|_| LinkError::Auth)?;
            let n = hs.write_message(&[], &mut msg).map_err(|_| LinkError::Auth)?;
            write_frame(&mut stream, &msg[..n])?;
        }
        let noise = hs.into_transport_mode().map_err(|_| LinkError::Auth)?;
        stream.set_read_timeout(None)?;
        let shared = Arc::new(Shared {
            noise: Mutex::new(noise),
            peer,
        });
        let rx_stream = stream.try_clone()?;
        let mut link = Link {
            tx: Sender {
                stream,
                shared: shared.clone(),
                buf: Vec::new(),
            },
            rx: Receiver {
                stream: rx_stream,
                shared,
                frame: Vec::new(),
                plain: Vec::new(),
            },
        };
        // The responder proves it holds the key by the first message it can encrypt; the
        // initiator's proof is its handshake message. Confirm both ways before anyone acts.
        if initiator {
            link.send(b"ok")?;
            link.expect_ok(deadline)?;
        } else {
            link.expect_ok(deadline)?;
            link.send(b"ok")?;
        }
        Ok(link)
    }

    fn expect_ok(&mut self, deadline: Instant) -> Result<(), LinkError> {
        let rx = &mut self.rx;
        read_frame_by(&mut rx.stream, &mut rx.frame, deadline)?;
        rx.plain.resize(rx.frame.len(), 0);
        let n = rx
            .shared
            .lock()
            .read_message(&rx.frame, &mut rx.plain)
            .map_err(|_| LinkError::Auth)?;
        let ok = &rx.plain[..n] == b"ok";
        rx.stream.set_read_timeout(None)?;
        if !ok {
            return Err(LinkError::Auth);
        }
        Ok(())
    }

    pub fn peer(&self) -> SocketAddr {
        self.tx.shared.peer
    }

    pub fn send(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        self.tx.send(msg)
    }

    pub fn recv(&mut self) -> Result<Vec<u8>, LinkError> {
        self.rx.recv().map(<[u8]>::to_vec)
    }

    pub fn send_json<T: Serialize>(&mut self, value: &T) -> Result<(), LinkError> {
        self.tx.send_json(value)
    }

    pub fn recv_json<T: DeserializeOwned>(&mut self) -> Result<T, LinkError> {
        self.rx.recv_json()
    }

    /// Bounds how long a `recv` waits (`None`: for ever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), LinkError> {
        Ok(self.rx.stream.set_read_timeout(timeout)?)
    }

    pub fn split(self) -> (Sender, Receiver) {
        (self.tx, self.rx)
    }
}

impl Sender {
    /// Sends one message of at most [`MAX_MESSAGE`] bytes.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        if msg.len() > MAX_MESSAGE {
            return Err(LinkError::TooLarge(msg.len()));
        }
        self.buf.resize(msg.len() + TAG_LEN, 0);
        let n = self
            .shared
            .lock()
            .write_message(msg, &mut self.buf)
            .map_err(|_| LinkError::Auth)?;
        write_frame(&mut self.stream, &self.buf[..n])
    }

    pub fn send_json<T: Serialize>(&mut self, value: &T) -> Result<(), LinkError> {
        let bytes = serde_json::to_vec(value).map_err(|e| LinkError::Malformed(e.to_string()))?;
        self.send(&bytes)
    }

    /// Ends the stream both ways (the peer's `recv` sees `Closed`).
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// A handle that ends the stream from another thread (a reader blocked in `recv` on a peer
    /// that lost power returns).
    pub fn closer(&self) -> std::io::Result<Closer> {
        Ok(Closer(self.stream.try_clone()?))
    }
}

/// Ends a stream both ways; see [`Sender::closer`].
#[derive(Debug)]
pub struct Closer(TcpStream);

impl Closer {
    pub fn close(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

impl Receiver {
    /// The next message; valid until the next call.
    pub fn recv(&mut self) -> Result<&[u8], LinkError> {
        read_frame(&mut self.stream, &mut self.frame)?;
        self.plain.resize(self.frame.len(), 0);
        let n = self
            .shared
            .lock()
            .read_message(&self.frame, &mut self.plain)
            .map_err(|_| LinkError::Auth)?;
        Ok(&self.plain[..n])
    }

    pub fn recv_json<T: DeserializeOwned>(&mut self) -> Result<T, LinkError> {
        let bytes = self.recv()?;
        serde_json::from_slice(bytes).map_err(|e| LinkError::Malformed(e.to_string()))
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), LinkError> {
        Ok(self.stream.set_read_timeout(timeout)?)
    }
}

#[cfg(test)]
mod tests;
