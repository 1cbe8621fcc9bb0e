//! The cluster key: parsing, generation, fingerprint and HKDF sub-keys.

use std::fmt;
use std::path::{Path, PathBuf};

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a cluster key in bytes (256 bits).
pub const KEY_LEN: usize = 32;

/// HKDF salt for every key derived from the cluster key.
const HKDF_SALT: &[u8] = b"clump-v1";

/// HKDF info of the fingerprint.
const FINGERPRINT_INFO: &str = "clump fingerprint v1";

/// The kernel command line parameter carrying the key.
const CMDLINE_PARAM: &str = "clump.key=";

/// Why a cluster key could not be had. No variant carries key material, so every message is safe
/// to log.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not 64 characters after trimming whitespace.
    #[error("a cluster key is 64 hex digits, found {0} characters")]
    Length(usize),
    /// 64 characters, but one of them is not a hex digit (1-based position).
    #[error("a cluster key is 64 hex digits, character {position} is not a hex digit")]
    NotHex {
        /// 1-based position of the first offending character.
        position: usize,
    },
    /// The key file could not be read.
    #[error("cannot read cluster key file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The key file was read but does not hold a key.
    #[error("cluster key file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with its contents ([`KeyError::Length`] or [`KeyError::NotHex`]).
        source: Box<KeyError>,
    },
    /// The operating system's random source failed.
    #[error("cannot generate a cluster key: the random source failed: {0}")]
    Random(String),
}

/// The 256-bit secret shared by every node of one cluster.
///
/// `Debug` prints only the [fingerprint](ClusterKey::fingerprint); the key itself is printed by
/// [`to_hex`](ClusterKey::to_hex) alone. The bytes are zeroed when the value is dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ClusterKey([u8; KEY_LEN]);

impl ClusterKey {
    /// A key from its raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses exactly 64 hex digits (either case), ignoring leading and trailing whitespace.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        let count = s.chars().count();
        if count != 2 * KEY_LEN {
            return Err(KeyError::Length(count));
        }
        let mut key = Self([0; KEY_LEN]);
        for (i, c) in s.chars().enumerate() {
            let Some(nibble) = c.to_digit(16) else {
                return Err(KeyError::NotHex { position: i + 1 });
            };
            // `to_digit(16)` is < 16, so the cast is lossless.
            key.0[i / 2] |= (nibble as u8) << if i % 2 == 0 { 4 } else { 0 };
        }
        Ok(key)
    }

    /// Reads a key file: 64 hex digits, surrounding whitespace (a final newline) allowed. Every
    /// error names the path.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_hex(&text).map_err(|e| KeyError::File {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// The key given as `clump.key=<64 hex>` on a kernel command line (the contents of
    /// `/proc/cmdline`). `None` when the parameter is absent; `Some(Err(..))` when it is present
    /// but malformed. The value may be wrapped in double quotes. When the parameter appears more
    /// than once the last one wins, as for the kernel's own parameters (so an argument appended at
    /// the boot loader's prompt overrides the one baked into the image).
    pub fn from_cmdline(cmdline: &str) -> Option<Result<Self, KeyError>> {
        let value = cmdline
            .split_ascii_whitespace()
            .rev()
            .find_map(|arg| arg.strip_prefix(CMDLINE_PARAM))?;
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        Some(Self::from_hex(value))
    }

    /// A fresh random key from the operating system (`getrandom`).
    ///
    /// # Panics
    /// If the operating system's random source fails, which Linux's `getrandom(2)` does not do once
    /// the kernel's generator is seeded; see [`ClusterKey::try_generate`] to handle it.
    pub fn generate() -> Self {
        match Self::try_generate() {
            Ok(key) => key,
            Err(e) => panic!("{e}"),
        }
    }

    /// A fresh random key from the operating system, or why there is none.
    pub fn try_generate() -> Result<Self, KeyError> {
        let mut key = Self([0; KEY_LEN]);
        getrandom::fill(&mut key.0).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(key)
    }

    /// The key as 64 lowercase hex digits (the format [`ClusterKey::from_hex`] reads). Secret.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The first 8 hex digits of HKDF-SHA256(ikm = key, salt = `clump-v1`,
    /// info = `clump fingerprint v1`): tells keys apart, safe to show.
    pub fn fingerprint(&self) -> String {
        let mut okm = self.derive(FINGERPRINT_INFO);
        let fingerprint = hex(&okm[..4]);
        okm.zeroize();
        fingerprint
    }

    /// A 256-bit sub-key: HKDF-SHA256(ikm = key, salt = `clump-v1`, info = `label`).
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), &self.0);
        let mut okm = [0u8; 32];
        // HKDF-SHA256 can expand to 255 * 32 bytes; 32 always fits.
        hk.expand(label.as_bytes(), &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        okm
    }
}

impl PartialEq for ClusterKey {
    /// Compares without an early exit, so the time taken does not depend on where keys differ.
    fn eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Eq for ClusterKey {}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterKey")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}
