use super::*;
use std::path::Path;

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn key() -> ClusterKey {
    ClusterKey::from_hex(KEY_HEX).unwrap()
}

fn other_key() -> ClusterKey {
    ClusterKey::from_bytes([0x42; 32])
}

/// xorshift64: a deterministic source of test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

// ---- datagrams ----

#[test]
fn round_trip() {
    let mut sealer = Sealer::new(&key(), [7; 16]);
    let mut opener = Opener::new(&key());
    for (i, payload) in [&b""[..], b"hello", &[0xaa; 1356]].into_iter().enumerate() {
        let d = sealer.seal(3, payload).unwrap();
        assert_eq!(d.len(), HEADER_LEN + payload.len() + TAG_LEN);
        assert_eq!(&d[..4], b"CL\x01\x03");
        assert_eq!(&d[4..20], &[7; 16]);
        assert_eq!(d[20..28], (i as u64).to_be_bytes());
        if payload.len() >= 16 {
            assert!(
                !d.windows(payload.len()).any(|w| w == payload),
                "payload in clear"
            );
        }
        let o = opener.open(&d).unwrap();
        assert_eq!(
            o,
            Opened {
                kind: 3,
                instance: [7; 16],
                seq: i as u64,
                payload: payload.to_vec()
            }
        );
    }
    assert_eq!(sealer.instance(), [7; 16]);
    assert_eq!(sealer.next_seq(), Some(3));
}

#[test]
fn max_datagram_exactly() {
    assert_eq!(Sealer::max_payload(), 1356);
    let mut sealer = Sealer::new(&key(), [1; 16]);
    let d = sealer.seal(1, &[0; 1356]).unwrap();
    assert_eq!(d.len(), MAX_DATAGRAM);
    assert!(Opener::new(&key()).open(&d).is_ok());
}

#[test]
fn seal_too_large() {
    let mut sealer = Sealer::new(&key(), [1; 16]);
    assert_eq!(sealer.seal(1, &[0; 1357]), Err(SealError::TooLarge { len: 1357 }));
    assert_eq!(
        sealer.seal(1, &[0; 65_536]),
        Err(SealError::TooLarge { len: 65_536 })
    );
    // A failed seal uses no seq.
    assert_eq!(sealer.next_seq(), Some(0));
    let d = sealer.seal(1, b"x").unwrap();
    assert_eq!(d[20..28], 0u64.to_be_bytes());
}

#[test]
fn seq_exhaustion_never_wraps() {
    let mut sealer = Sealer::new(&key(), [1; 16]);
    sealer.next = Some(u64::MAX);
    let d = sealer.seal(1, b"last").unwrap();
    assert_eq!(d[20..28], u64::MAX.to_be_bytes());
    assert_eq!(sealer.seal(1, b"more"), Err(SealError::Exhausted));
    assert_eq!(Opener::new(&key()).open(&d).unwrap().seq, u64::MAX);
}

#[test]
fn wrong_key_is_auth() {
    let d = Sealer::new(&key(), [1; 16]).seal(1, b"secret").unwrap();
    assert_eq!(Opener::new(&other_key()).open(&d), Err(OpenError::Auth));
    // A failed datagram is not recorded: the right key still opens it.
    let mut opener = Opener::new(&key());
    assert_eq!(opener.remembered(), 0);
    assert!(opener.open(&d).is_ok());
}

#[test]
fn every_bit_flip_fails() {
    let mut sealer = Sealer::new(&key(), [9; 16]);
    let mut opener = Opener::new(&key());
    let d = sealer.seal(2, b"a payload that spans a few bytes").unwrap();
    for byte in 0..d.len() {
        for bit in 0..8 {
            let mut f = d.clone();
            f[byte] ^= 1 << bit;
            let err = opener.open(&f).unwrap_err();
            let expect = match byte {
                0 | 1 => OpenError::NotClump,
                2 => OpenError::Version(VERSION ^ (1 << bit)),
                _ => OpenError::Auth,
            };
            assert_eq!(err, expect, "byte {byte} bit {bit}");
        }
    }
    // None of the forgeries was recorded.
    assert_eq!(opener.remembered(), 0);
    assert!(opener.open(&d).is_ok());
}

#[test]
fn truncated_at_every_length() {
    let d = Sealer::new(&key(), [9; 16]).seal(2, &[5; 300]).unwrap();
    let mut opener = Opener::new(&key());
    for len in 0..d.len() {
        let err = opener.open(&d[..len]).unwrap_err();
        if len < HEADER_LEN + TAG_LEN {
            assert_eq!(err, OpenError::TooShort, "len {len}");
        } else {
            assert_eq!(err, OpenError::Auth, "len {len}");
        }
    }
    assert!(opener.open(&d).is_ok());
}

#[test]
fn oversized_is_too_large() {
    let mut d = Sealer::new(&key(), [9; 16]).seal(2, &[5; 1356]).unwrap();
    d.push(0);
    assert_eq!(Opener::new(&key()).open(&d), Err(OpenError::TooLarge));
    assert_eq!(Opener::new(&key()).open(&[0; 65_535]), Err(OpenError::TooLarge));
}

#[test]
fn check_order() {
    // Short beats everything else.
    assert_eq!(Opener::new(&key()).open(b"XX"), Err(OpenError::TooShort));
    // Magic before version.
    let mut d = vec![0u8; 60];
    d[2] = 9;
    assert_eq!(Opener::new(&key()).open(&d), Err(OpenError::NotClump));
    d[..2].copy_from_slice(b"CL");
    assert_eq!(Opener::new(&key()).open(&d), Err(OpenError::Version(9)));
    d[2] = VERSION;
    assert_eq!(Opener::new(&key()).open(&d), Err(OpenError::Auth));
    // Authentication before replay: a forged copy of an accepted datagram is Auth, not Replay.
    let mut opener = Opener::new(&key());
    let good = Sealer::new(&key(), [1; 16]).seal(1, b"x").unwrap();
    opener.open(&good).unwrap();
    let mut forged = good.clone();
    forged[30] ^= 1;
    assert_eq!(opener.open(&forged), Err(OpenError::Auth));
    assert_eq!(opener.open(&good), Err(OpenError::Replay));
}

#[test]
fn replay_identical_datagram() {
    let mut sealer = Sealer::new(&key(), [1; 16]);
    let mut opener = Opener::new(&key());
    let d = sealer.seal(1, b"once").unwrap();
    assert!(opener.open(&d).is_ok());
    assert_eq!(opener.open(&d), Err(OpenError::Replay));
    assert_eq!(opener.open(&d), Err(OpenError::Replay));
}

#[test]
fn out_of_order_within_window_once_each() {
    let mut sealer = Sealer::new(&key(), [1; 16]);
    let ds: Vec<_> = (0..128).map(|i| sealer.seal(1, &[i as u8]).unwrap()).collect();
    let mut opener = Opener::new(&key());
    // Deliver 127 first, then the rest in a shuffled order: all inside the window.
    let mut order: Vec<usize> = (0..127).collect();
    let mut rng = Rng(99);
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    assert_eq!(opener.open(&ds[127]).unwrap().seq, 127);
    for &i in &order {
        assert_eq!(opener.open(&ds[i]).unwrap().payload, [i as u8]);
    }
    for d in &ds {
        assert_eq!(opener.open(d), Err(OpenError::Replay));
    }
}

#[test]
fn older_than_window_is_replay() {
    let mut sealer = Sealer::new(&key(), [1; 16]);
    let ds: Vec<_> = (0..200).map(|_| sealer.seal(1, b"").unwrap()).collect();
    let mut opener = Opener::new(&key());
    opener.open(&ds[199]).unwrap();
    assert_eq!(opener.open(&ds[50]), Err(OpenError::Replay));
    assert_eq!(opener.open(&ds[71]), Err(OpenError::Replay)); // 199 - 71 = 128
    assert_eq!(opener.open(&ds[72]).unwrap().seq, 72); // 199 - 72 = 127
    assert_eq!(opener.open(&ds[100]).unwrap().seq, 100);
    assert_eq!(opener.open(&ds[100]), Err(OpenError::Replay));
    assert_eq!(opener.open(&ds[0]), Err(OpenError::Replay));
}

#[test]
fn instances_are_independent() {
    let mut a = Sealer::new(&key(), [1; 16]);
    let mut b = Sealer::new(&key(), [2; 16]);
    let mut opener = Opener::new(&key());
    let (a0, b0) = (a.seal(1, b"a").unwrap(), b.seal(1, b"b").unwrap());
    assert_eq!(opener.open(&a0).unwrap().seq, 0);
    assert_eq!(opener.open(&b0).unwrap().seq, 0);
    assert_eq!(opener.remembered(), 2);
}

#[test]
fn eviction_at_capacity_evicts_least_recently_heard() {
    let k = key();
    let mut sealers: Vec<_> = (1..=4u8).map(|i| Sealer::new(&k, [i; 16])).collect();
    let firsts: Vec<_> = sealers.iter_mut().map(|s| s.seal(1, b"first").unwrap()).collect();
    let mut opener = Opener::with_capacity(&k, 3);
    assert_eq!(opener.capacity(), 3);
    for d in &firsts[..3] {
        opener.open(d).unwrap();
    }
    // Hear instance 1 again: now 2 is the least recently heard.
    opener.open(&sealers[0].seal(1, b"again").unwrap()).unwrap();
    // A fourth instance evicts 2.
    opener.open(&firsts[3]).unwrap();
    assert_eq!(opener.remembered(), 3);
    assert!(opener.remembers(&[1; 16]));
    assert!(!opener.remembers(&[2; 16]));
    assert!(opener.remembers(&[3; 16]));
    assert!(opener.remembers(&[4; 16]));
    // Still remembered: replays refused.
    assert_eq!(opener.open(&firsts[0]), Err(OpenError::Replay));
    assert_eq!(opener.open(&firsts[2]), Err(OpenError::Replay));
    assert_eq!(opener.open(&firsts[3]), Err(OpenError::Replay));
    // The documented limit: the evicted instance's window is forgotten, its old datagram opens
    // once more (and evicts the now least recently heard, 3).
    assert!(opener.open(&firsts[1]).is_ok());
    assert!(!opener.remembers(&[3; 16]));
    assert_eq!(opener.open(&firsts[1]), Err(OpenError::Replay));
}

#[test]
fn eviction_many_instances() {
    let k = key();
    let mut opener = Opener::with_capacity(&k, 100);
    for i in 0..1000u32 {
        let mut inst = [0u8; 16];
        inst[..4].copy_from_slice(&i.to_be_bytes());
        opener.open(&Sealer::new(&k, inst).seal(1, b"").unwrap()).unwrap();
        assert!(opener.remembered() <= 100);
    }
    assert_eq!(opener.remembered(), 100);
    let mut last = [0u8; 16];
    last[..4].copy_from_slice(&999u32.to_be_bytes());
    assert!(opener.remembers(&last));
    let mut first = [0u8; 16];
    first[..4].copy_from_slice(&899u32.to_be_bytes());
    assert!(!opener.remembers(&first));
}

#[test]
fn random_bytes_never_open() {
    let mut opener = Opener::new(&key());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..5000 {
        let len = (rng.next() % 1500) as usize;
        let mut d = rng.bytes(len);
        // Half of them with a valid magic and version, so they reach the tag check.
        if i % 2 == 0 && d.len() >= 3 {
            d[..3].copy_from_slice(b"CL\x01");
        }
        let err = opener.open(&d).unwrap_err();
        if i % 2 == 0 && (44..=1400).contains(&len) {
            assert_eq!(err, OpenError::Auth);
        }
    }
    assert_eq!(opener.remembered(), 0);
}

#[test]
fn reasons() {
    let all = [
        (OpenError::TooShort, "too-short"),
        (OpenError::TooLarge, "too-large"),
        (OpenError::NotClump, "not-clump"),
        (OpenError::Version(2), "version"),
        (OpenError::Auth, "auth"),
        (OpenError::Replay, "replay"),
    ];
    for (e, r) in all {
        assert_eq!(e.reason(), r);
        assert!(!e.to_string().is_empty());
    }
}

/// A fixed datagram, so a change of format or crypto shows up here.
#[test]
fn known_datagram() {
    let d = Sealer::new(&key(), [0x11; 16]).seal(1, b"clump").unwrap();
    assert_eq!(hex(&d), KNOWN_DATAGRAM);
}

/// Checked against an independent implementation (Python: HKDF from hmac/hashlib, HChaCha20 by
/// hand, ChaCha20-Poly1305 from `cryptography`).
const KNOWN_DATAGRAM: &str = "434c01011111111111111111111111111111111100000000000000003360\
                              49cbcd00ea2a701a2660a0395b2f064dbc61c2";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---- keys ----

#[test]
fn key_hex_good() {
    let k = key();
    assert_eq!(k.to_hex(), KEY_HEX);
    assert_eq!(ClusterKey::from_hex(&KEY_HEX.to_uppercase()).unwrap(), k);
    assert_eq!(ClusterKey::from_hex(&format!("  \t{KEY_HEX}\n\n")).unwrap(), k);
    let g = ClusterKey::generate();
    assert_eq!(ClusterKey::from_hex(&g.to_hex()).unwrap(), g);
    assert_ne!(g, k);
    assert_ne!(ClusterKey::generate(), g);
}

#[test]
fn key_hex_bad() {
    assert!(matches!(ClusterKey::from_hex(""), Err(KeyError::Length(0))));
    assert!(matches!(
        ClusterKey::from_hex(&KEY_HEX[..63]),
        Err(KeyError::Length(63))
    ));
    assert!(matches!(
        ClusterKey::from_hex(&format!("{KEY_HEX}0")),
        Err(KeyError::Length(65))
    ));
    let mut s = KEY_HEX.to_string();
    s.replace_range(10..11, "g");
    assert!(matches!(
        ClusterKey::from_hex(&s),
        Err(KeyError::NotHex { position: 11 })
    ));
    // Inner whitespace is not trimmed.
    let s = format!("{} {}", &KEY_HEX[..32], &KEY_HEX[33..]);
    assert!(matches!(
        ClusterKey::from_hex(&s),
        Err(KeyError::NotHex { position: 33 })
    ));
    // Multi-byte characters are counted as characters.
    let s = format!("{}é", &KEY_HEX[..63]);
    assert!(matches!(
        ClusterKey::from_hex(&s),
        Err(KeyError::NotHex { position: 64 })
    ));
    assert!(matches!(
        ClusterKey::from_hex(&"é".repeat(32)),
        Err(KeyError::Length(32))
    ));
    assert!(matches!(
        ClusterKey::from_hex(&format!("0x{}", &KEY_HEX[2..])),
        Err(KeyError::NotHex { position: 2 })
    ));
}

#[test]
fn key_errors_do_not_leak() {
    let mut s = KEY_HEX.to_string();
    s.replace_range(63..64, "z");
    let msg = ClusterKey::from_hex(&s).unwrap_err().to_string();
    assert!(!msg.contains(&KEY_HEX[..16]), "{msg}");
}

#[test]
fn key_file() {
    let dir = std::env::temp_dir().join(format!("clump-seal-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.key");
    std::fs::write(&good, format!("{KEY_HEX}\n")).unwrap();
    assert_eq!(ClusterKey::from_file(&good).unwrap(), key());

    let bad = dir.join("bad.key");
    std::fs::write(&bad, "abc\n").unwrap();
    let err = ClusterKey::from_file(&bad).unwrap_err();
    assert!(matches!(&err, KeyError::File { source, .. } if matches!(**source, KeyError::Length(3))));
    assert!(err.to_string().contains(&*bad.to_string_lossy()), "{err}");

    let missing = dir.join("missing.key");
    let err = ClusterKey::from_file(&missing).unwrap_err();
    assert!(matches!(&err, KeyError::Read { path, .. } if path == &missing));
    assert!(err.to_string().contains(&*missing.to_string_lossy()), "{err}");

    let err = ClusterKey::from_file(Path::new("/nonexistent/clump/cluster.key")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/clump/cluster.key"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn key_cmdline() {
    let k = key();
    assert!(ClusterKey::from_cmdline("").is_none());
    assert!(ClusterKey::from_cmdline("console=ttyS0 quiet\n").is_none());
    assert!(ClusterKey::from_cmdline("xclump.key=00 clump.keys=1").is_none());
    let line = format!("BOOT_IMAGE=/vmlinuz console=ttyS0 clump.key={KEY_HEX} quiet\n");
    assert_eq!(ClusterKey::from_cmdline(&line).unwrap().unwrap(), k);
    assert_eq!(
        ClusterKey::from_cmdline(&format!("clump.key={KEY_HEX}"))
            .unwrap()
            .unwrap(),
        k
    );
    assert_eq!(
        ClusterKey::from_cmdline(&format!("clump.key=\"{KEY_HEX}\""))
            .unwrap()
            .unwrap(),
        k
    );
    assert!(matches!(
        ClusterKey::from_cmdline("a clump.key= b"),
        Some(Err(KeyError::Length(0)))
    ));
    assert!(matches!(
        ClusterKey::from_cmdline("clump.key=1234"),
        Some(Err(KeyError::Length(4)))
    ));
    // The last one wins.
    let other = other_key().to_hex();
    let line = format!("clump.key=1234 clump.port=7171 clump.key={other}");
    assert_eq!(ClusterKey::from_cmdline(&line).unwrap().unwrap(), other_key());
    let line = format!("clump.key={other} clump.key=nothex");
    assert!(ClusterKey::from_cmdline(&line).unwrap().is_err());
}

#[test]
fn fingerprint_known_and_distinct() {
    let k = key();
    assert_eq!(k.fingerprint(), KNOWN_FINGERPRINT);
    assert_eq!(k.fingerprint().len(), 8);
    assert_ne!(other_key().fingerprint(), k.fingerprint());
    assert_eq!(other_key().fingerprint(), KNOWN_FINGERPRINT_42);
    // The fingerprint is the start of the sub-key labelled "clump fingerprint v1".
    assert_eq!(hex(&k.derive("clump fingerprint v1")[..4]), k.fingerprint());
    assert_ne!(k.derive("datagram v1"), k.derive("stream v1"));
    assert_ne!(
        ClusterKey::generate().fingerprint(),
        ClusterKey::generate().fingerprint()
    );
}

/// Checked against Python's hmac/hashlib HKDF-SHA256.
const KNOWN_FINGERPRINT: &str = "9f9b2d6d";
const KNOWN_FINGERPRINT_42: &str = "cf945adf";

#[test]
fn debug_hides_the_key() {
    let k = key();
    let dbg = format!("{k:?} {k:#?}");
    assert!(!dbg.contains(KEY_HEX), "{dbg}");
    assert!(!dbg.contains(&KEY_HEX[..16]), "{dbg}");
    assert!(dbg.contains(&k.fingerprint()), "{dbg}");
    let s = format!("{:?} {:?}", Sealer::new(&k, [0; 16]), Opener::new(&k));
    assert!(!s.contains(&KEY_HEX[..16]), "{s}");
    assert!(!s.contains(&hex(&k.derive(DATAGRAM_LABEL))[..16]), "{s}");
}

/// Seal+open throughput; run with
/// `cargo test -p clump-seal --release -- --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput() {
    let k = key();
    for len in [200, Sealer::max_payload()] {
        let mut sealer = Sealer::new(&k, [3; 16]);
        let mut opener = Opener::new(&k);
        let payload = vec![0x5a; len];
        let n = 200_000u32;
        let start = std::time::Instant::now();
        for _ in 0..n {
            let d = sealer.seal(1, &payload).unwrap();
            std::hint::black_box(opener.open(&d).unwrap());
        }
        let per = start.elapsed() / n;
        eprintln!(
            "payload {len} B (datagram {} B): seal+open {} ns per datagram",
            len + HEADER_LEN + TAG_LEN,
            per.as_nanos()
        );
    }
}
