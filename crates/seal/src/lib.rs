//! The cluster key and sealed datagrams (see ARCHITECTURE.md, "The cluster key" and "Sealed
//! datagram").
//!
//! # The cluster key
//!
//! 256 bits shared by every node of a cluster, written as 64 hex digits ([`ClusterKey`]). Nothing
//! uses it directly: sub-keys are HKDF-SHA256(ikm = key, salt = `clump-v1`, info = label)
//! ([`ClusterKey::derive`]); datagrams use the label `datagram v1`. The fingerprint, the first 8
//! hex digits of the sub-key labelled `clump fingerprint v1`, tells keys apart and is safe to show.
//!
//! # The sealed datagram
//!
//! Every UDP packet on the cluster port is
//!
//! ```text
//! offset  size  field
//!      0     2  magic "CL"
//!      2     1  version (1)
//!      3     1  kind (what the payload is; chosen by the protocol above)
//!      4    16  instance: 128 random bits drawn when the sender starts
//!     20     8  seq: u64 big-endian, from 0, +1 per datagram of that instance
//!     28     n  ciphertext of the payload (n = payload length)
//!   28+n    16  Poly1305 tag
//! ```
//!
//! sealed with XChaCha20-Poly1305 under the `datagram v1` sub-key, nonce = instance ‖ seq
//! (24 bytes; unique as long as instances are random and seq never repeats), additional data = the
//! 28-byte header (so kind, instance and seq are authenticated though sent in clear). A whole
//! datagram is at most [`MAX_DATAGRAM`] = 1400 bytes so that it is never IP-fragmented: a payload
//! is at most [`Sealer::max_payload`] = 1356 bytes.
//!
//! [`Opener::open`] checks, in this order, each failure a distinct [`OpenError`] (and a distinct
//! counter, [`OpenError::reason`]): size (`too-short` below 44 bytes, `too-large` above 1400),
//! magic (`not-clump`), version (`version`), tag (`auth`), replay (`replay`). The replay check
//! runs only on an authentic datagram, and only an authentic datagram is recorded, so forged
//! packets can neither fill the replay table nor make a genuine datagram look replayed.
//!
//! # Replay protection and its limits
//!
//! Per sender instance the opener keeps the highest seq seen and a bitmap of the 128 seqs ending
//! at it (as IPsec and WireGuard do): a higher seq is accepted and slides the window, an unseen
//! seq within the window is accepted once (so reordering by up to 127 datagrams is tolerated), a
//! seq seen before or older than the window is a replay. At most 16,384 instances are remembered
//! ([`Opener::with_capacity`] to change it); a new instance in a full table evicts the least
//! recently heard one.
//!
//! What this does not give:
//! - A receiver that restarts, or that evicts an instance, forgets that instance's window: a
//!   recorded datagram of that instance is then accepted once more. Evicting a live instance takes
//!   authentic datagrams from more than 16,384 other instances, but an attacker who recorded
//!   enough old traffic can replay it. So the membership layer above must treat stale content
//!   sanely: records carry their own sequence numbers and an older record never replaces a newer
//!   one.
//! - No freshness in time: a datagram held back and delivered later is accepted if its seq is
//!   still new to the receiver.
//! - No sender identity beyond "holds the cluster key": every node can seal as any instance.
//! - No confidentiality of the header: kind, instance and seq travel in clear (authenticated).

mod key;
mod replay;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

pub use key::{ClusterKey, KeyError, KEY_LEN};
pub use replay::WINDOW as REPLAY_WINDOW;

/// The largest sealed datagram, header and tag included (no IP fragmentation on a 1500 MTU).
pub const MAX_DATAGRAM: usize = 1400;
/// `"CL" | version (1) | kind (1) | instance (16) | seq u64 BE (8)`.
pub const HEADER_LEN: usize = 28;
/// The Poly1305 tag at the end.
pub const TAG_LEN: usize = 16;
/// The format version this crate writes and accepts.
pub const VERSION: u8 = 1;
/// The first two bytes of every datagram.
pub const MAGIC: [u8; 2] = *b"CL";
/// How many instances an [`Opener::new`] remembers.
pub const DEFAULT_INSTANCES: usize = 16_384;
/// The HKDF label of the datagram sub-key.
pub const DATAGRAM_LABEL: &str = "datagram v1";

/// Why a payload could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The sealed datagram would exceed [`MAX_DATAGRAM`].
    #[error("payload of {len} bytes too large to seal (at most {max})", max = Sealer::max_payload())]
    TooLarge {
        /// The payload's length.
        len: usize,
    },
    /// This instance has used every seq (2^64 datagrams); sealing more would reuse a nonce.
    #[error("sequence numbers of this instance exhausted")]
    Exhausted,
}

/// Seals datagrams for one sender instance. Make one per process start, with a random instance
/// ([`Sealer::random_instance`]): a nonce must never repeat under one key, and the instance is
/// what keeps two starts (whose seqs both count from 0) apart.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    instance: [u8; 16],
    /// The seq of the next datagram; `None` once all 2^64 are used.
    next: Option<u64>,
}

impl Sealer {
    /// A sealer for `instance`, its first datagram with seq 0, under the `datagram v1` sub-key.
    pub fn new(key: &ClusterKey, instance: [u8; 16]) -> Self {
        Self {
            cipher: datagram_cipher(key),
            instance,
            next: Some(0),
        }
    }

    /// 128 random bits for [`Sealer::new`], from the operating system.
    ///
    /// # Panics
    /// If the operating system's random source fails (see [`ClusterKey::generate`]).
    pub fn random_instance() -> [u8; 16] {
        let mut instance = [0u8; 16];
        if let Err(e) = getrandom::fill(&mut instance) {
            panic!("cannot draw an instance: the random source failed: {e}");
        }
        instance
    }

    /// This sender's instance.
    pub fn instance(&self) -> [u8; 16] {
        self.instance
    }

    /// The seq the next sealed datagram will carry (`None` once exhausted).
    pub fn next_seq(&self) -> Option<u64> {
        self.next
    }

    /// The largest payload [`Sealer::seal`] accepts: 1356 bytes.
    pub const fn max_payload() -> usize {
        MAX_DATAGRAM - HEADER_LEN - TAG_LEN
    }

    /// Seals `payload` as a datagram of `kind` with the next seq. A failed call uses no seq.
    pub fn seal(&mut self, kind: u8, payload: &[u8]) -> Result<Vec<u8>, SealError> {
        if payload.len() > Self::max_payload() {
            return Err(SealError::TooLarge { len: payload.len() });
        }
        let seq = self.next.ok_or(SealError::Exhausted)?;
        let mut datagram = Vec::with_capacity(HEADER_LEN + payload.len() + TAG_LEN);
        datagram.extend_from_slice(&MAGIC);
        datagram.push(VERSION);
        datagram.push(kind);
        datagram.extend_from_slice(&self.instance);
        datagram.extend_from_slice(&seq.to_be_bytes());
        datagram.extend_from_slice(payload);
        let (header, body) = datagram.split_at_mut(HEADER_LEN);
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce(&self.instance, seq), header, body.into())
            // XChaCha20-Poly1305 refuses only messages beyond 2^38 bytes.
            .map_err(|_| SealError::TooLarge { len: payload.len() })?;
        datagram.extend_from_slice(&tag);
        self.next = seq.checked_add(1);
        Ok(datagram)
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("instance", &self.instance)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// An authentic, fresh datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The kind the sender gave.
    pub kind: u8,
    /// The sender's instance.
    pub instance: [u8; 16],
    /// The datagram's seq within that instance.
    pub seq: u64,
    /// The decrypted payload.
    pub payload: Vec<u8>,
}

/// Why a datagram was dropped. Checked in the order of the variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Shorter than a header and a tag.
    #[error("datagram too short")]
    TooShort,
    /// Longer than [`MAX_DATAGRAM`].
    #[error("datagram too large")]
    TooLarge,
    /// Does not start with `"CL"`: not Clump traffic.
    #[error("not a Clump datagram")]
    NotClump,
    /// A Clump datagram of a version this crate does not speak.
    #[error("unsupported datagram version {0}")]
    Version(u8),
    /// The tag does not match: another cluster key, or altered on the way.
    #[error("datagram failed authentication")]
    Auth,
    /// Authentic, but this (instance, seq) was already accepted or is older than the window.
    #[error("datagram replayed")]
    Replay,
}

impl OpenError {
    /// A stable name for counters and logs: `too-short`, `too-large`, `not-clump`, `version`,
    /// `auth`, `replay`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooShort => "too-short",
            Self::TooLarge => "too-large",
            Self::NotClump => "not-clump",
            Self::Version(_) => "version",
            Self::Auth => "auth",
            Self::Replay => "replay",
        }
    }
}

/// Opens datagrams from every instance of the cluster and remembers, per instance, which seqs it
/// accepted. One per receiving socket.
pub struct Opener {
    cipher: XChaCha20Poly1305,
    replay: replay::Replay,
}

impl Opener {
    /// An opener remembering up to [`DEFAULT_INSTANCES`] (16,384) instances.
    pub fn new(key: &ClusterKey) -> Self {
        Self::with_capacity(key, DEFAULT_INSTANCES)
    }

    /// An opener remembering up to `instances` instances (at least 1).
    pub fn with_capacity(key: &ClusterKey, instances: usize) -> Self {
        Self {
            cipher: datagram_cipher(key),
            replay: replay::Replay::new(instances),
        }
    }

    /// How many instances it remembers at most.
    pub fn capacity(&self) -> usize {
        self.replay.capacity()
    }

    /// How many instances it remembers now.
    pub fn remembered(&self) -> usize {
        self.replay.len()
    }

    /// Whether it remembers the window of `instance`.
    pub fn remembers(&self, instance: &[u8; 16]) -> bool {
        self.replay.contains(instance)
    }

    /// Checks and decrypts one datagram (see the crate documentation for the order of checks).
    /// On success the datagram's seq is recorded, so the same datagram opens only once.
    pub fn open(&mut self, datagram: &[u8]) -> Result<Opened, OpenError> {
        if datagram.len() < HEADER_LEN + TAG_LEN {
            return Err(OpenError::TooShort);
        }
        if datagram.len() > MAX_DATAGRAM {
            return Err(OpenError::TooLarge);
        }
        let (header, rest) = datagram
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(OpenError::TooShort)?;
        let (ciphertext, tag) = rest.split_last_chunk::<TAG_LEN>().ok_or(OpenError::TooShort)?;
        let (magic, version, kind, instance, seq) = parse_header(header);
        if magic != MAGIC {
            return Err(OpenError::NotClump);
        }
        if version != VERSION {
            return Err(OpenError::Version(version));
        }
        let mut payload = ciphertext.to_vec();
        self.cipher
            .decrypt_inout_detached(
                &nonce(&instance, seq),
                header,
                payload.as_mut_slice().into(),
                &Tag::from(*tag),
            )
            .map_err(|_| OpenError::Auth)?;
        if !self.replay.accept(instance, seq) {
            return Err(OpenError::Replay);
        }
        Ok(Opened {
            kind,
            instance,
            seq,
            payload,
        })
    }
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("capacity", &self.replay.capacity())
            .field("remembered", &self.replay.len())
            .finish_non_exhaustive()
    }
}

/// The AEAD under the `datagram v1` sub-key.
fn datagram_cipher(key: &ClusterKey) -> XChaCha20Poly1305 {
    let mut sub = key.derive(DATAGRAM_LABEL);
    let cipher = XChaCha20Poly1305::new(&sub.into());
    zeroize::Zeroize::zeroize(&mut sub);
    cipher
}

/// instance ‖ seq BE.
fn nonce(instance: &[u8; 16], seq: u64) -> XNonce {
    let mut n = [0u8; 24];
    n[..16].copy_from_slice(instance);
    n[16..].copy_from_slice(&seq.to_be_bytes());
    XNonce::from(n)
}

/// (magic, version, kind, instance, seq) of a header.
fn parse_header(h: &[u8; HEADER_LEN]) -> ([u8; 2], u8, u8, [u8; 16], u64) {
    let mut instance = [0u8; 16];
    instance.copy_from_slice(&h[4..20]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[20..28]);
    ([h[0], h[1]], h[2], h[3], instance, u64::from_be_bytes(seq))
}

#[cfg(test)]
mod tests;
