//! The datagrams of the attack, without I/O: what each kind looks like and which drop counter of
//! a Clump node it must land in (ARCHITECTURE.md, "Sealed datagram"). Written from the format's
//! description alone, with no code of the project: this is what an outsider can do.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// `"CL" | version | kind | instance (16) | seq (8)`.
pub const HEADER: usize = 28;
pub const TAG: usize = 16;
/// Shorter than header and tag: `too-short`.
pub const MIN_SEALED: usize = HEADER + TAG;
/// Longer: `too-large`.
pub const MAX_DATAGRAM: usize = 1400;
/// The largest UDP payload that fits a 1500-byte frame unfragmented.
pub const UNFRAGMENTED: usize = 1472;

/// A small, fast generator (xorshift64*): attack traffic needs variety, not secrecy.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// The counter of a node's `dropped` a datagram must raise, or none for sure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Expect {
    TooShort,
    TooLarge,
    NotClump,
    Version,
    Auth,
    Replay,
    /// Authentic: the node may accept it (a replay to a node it was not sent to) or call it a
    /// replay; nothing is certain.
    Unsure,
}

impl Expect {
    /// The field of `dropped` in `nodes.json`.
    pub fn counter(self) -> Option<&'static str> {
        Some(match self {
            Expect::TooShort => "too_short",
            Expect::TooLarge => "too_large",
            Expect::NotClump => "not_clump",
            Expect::Version => "version",
            Expect::Auth => "auth",
            Expect::Replay => "replay",
            Expect::Unsure => return None,
        })
    }
}

/// Under 44 bytes, random: `too-short` (an empty datagram too).
pub fn short(rng: &mut Rng) -> Vec<u8> {
    let n = rng.range(0, MIN_SEALED - 1);
    rng.bytes(n)
}

/// Over 1400 bytes; `fragmented` goes past one frame (IP fragments the node reassembles).
pub fn large(rng: &mut Rng, fragmented: bool) -> Vec<u8> {
    let n = if fragmented {
        rng.range(UNFRAGMENTED + 1, 9000)
    } else {
        rng.range(MAX_DATAGRAM + 1, UNFRAGMENTED)
    };
    let mut v = rng.bytes(n);
    // Looks like Clump at the front: the size check must come first anyway.
    v[..3].copy_from_slice(b"CL\x01");
    v
}

/// Random bytes of a plausible size not starting with "CL": `not-clump`.
pub fn random(rng: &mut Rng) -> Vec<u8> {
    let n = rng.range(MIN_SEALED, MAX_DATAGRAM);
    let mut v = rng.bytes(n);
    if v[0] == b'C' {
        v[0] = b'c';
    }
    v
}

/// The magic with another version: `version`.
pub fn other_version(rng: &mut Rng) -> Vec<u8> {
    let mut v = random(rng);
    v[..2].copy_from_slice(b"CL");
    v[2] = match rng.range(0, 254) as u8 {
        1 => 0,
        n => n,
    };
    v
}

/// Magic and version right, everything else made up (tag included): `auth`.
pub fn forged(rng: &mut Rng) -> Vec<u8> {
    let n = rng.range(MIN_SEALED, MAX_DATAGRAM);
    let mut v = rng.bytes(n);
    v[..3].copy_from_slice(b"CL\x01");
    v
}

/// Sealed properly, with a key of our own (`key`): `auth`. With `like`, a genuine datagram's
/// kind and instance and a seq far ahead of it, which must not move that instance's replay
/// window (else the real sender's next datagrams would look replayed).
pub fn sealed_with(key: &[u8; 32], rng: &mut Rng, like: Option<&[u8]>) -> Vec<u8> {
    let mut header = [0u8; HEADER];
    header[..3].copy_from_slice(b"CL\x01");
    rng.fill(&mut header[3..]);
    if let Some(genuine) = like.filter(|g| g.len() >= HEADER) {
        header[3..20].copy_from_slice(&genuine[3..20]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&genuine[20..28]);
        let ahead = u64::from_be_bytes(seq).wrapping_add(rng.range(1, 1 << 20) as u64);
        header[20..28].copy_from_slice(&ahead.to_be_bytes());
    }
    let n = rng.range(1, MAX_DATAGRAM - MIN_SEALED);
    let mut body = rng.bytes(n);
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = XNonce::from_slice(&header[4..28]);
    let mut out = header.to_vec();
    match cipher.encrypt_in_place_detached(nonce, &header, &mut body) {
        Ok(tag) => {
            out.extend_from_slice(&body);
            out.extend_from_slice(&tag);
        }
        // Only messages past 2^38 bytes fail; a made-up tag is as wrong.
        Err(_) => out.extend_from_slice(&rng.bytes(body.len() + TAG)),
    }
    out
}

/// A genuine datagram with one byte past the magic and version changed: `auth` (the header is
/// authenticated data, the rest ciphertext or tag).
pub fn flipped(genuine: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = genuine.to_vec();
    let at = rng.range(3, v.len() - 1);
    v[at] ^= 1 << rng.range(0, 7);
    v
}

/// A genuine datagram cut short: `too-short` under 44 bytes, else `auth` (the tag is gone).
pub fn truncated(genuine: &[u8], rng: &mut Rng) -> (Vec<u8>, Expect) {
    let n = rng.range(1, genuine.len() - 1);
    let expect = if n < MIN_SEALED {
        Expect::TooShort
    } else {
        Expect::Auth
    };
    (genuine[..n].to_vec(), expect)
}

/// Whether `bytes` looks like a sealed Clump datagram of version 1 (worth capturing).
pub fn looks_genuine(bytes: &[u8]) -> bool {
    (MIN_SEALED + 1..=MAX_DATAGRAM).contains(&bytes.len()) && bytes.starts_with(b"CL\x01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_the_shape_that_picks_its_counter() {
        let mut rng = Rng::new(42);
        for _ in 0..2000 {
            assert!(short(&mut rng).len() < MIN_SEALED);
            let l = large(&mut rng, false);
            assert!((MAX_DATAGRAM + 1..=UNFRAGMENTED).contains(&l.len()));
            assert!(large(&mut rng, true).len() > UNFRAGMENTED);
            let r = random(&mut rng);
            assert!(r.len() >= MIN_SEALED && !r.starts_with(b"CL"));
            let v = other_version(&mut rng);
            assert!(v.starts_with(b"CL") && v[2] != 1 && v.len() >= MIN_SEALED);
            let f = forged(&mut rng);
            assert!(looks_genuine(&f) || f.len() == MIN_SEALED);
        }
    }

    #[test]
    fn a_seal_under_another_key_keeps_the_genuine_instance_and_moves_its_seq_ahead() {
        let mut rng = Rng::new(7);
        let mut genuine = b"CL\x01\x02".to_vec();
        genuine.extend_from_slice(&[0xAA; 16]);
        genuine.extend_from_slice(&5u64.to_be_bytes());
        genuine.extend_from_slice(&[0; 40]);
        let forged = sealed_with(&[1; 32], &mut rng, Some(&genuine));
        assert!(looks_genuine(&forged));
        assert_eq!(forged[3..20], genuine[3..20]);
        let seq = u64::from_be_bytes(forged[20..28].try_into().expect("8 bytes"));
        assert!(seq > 5);
        let (cut, expect) = truncated(&genuine, &mut rng);
        assert!(cut.len() < genuine.len());
        assert_eq!(expect == Expect::TooShort, cut.len() < MIN_SEALED);
        let f = flipped(&genuine, &mut rng);
        assert_eq!(f[..3], genuine[..3]);
        assert_eq!(f.iter().zip(&genuine).filter(|(a, b)| a != b).count(), 1);
    }
}
