//! The sealed-datagram receive path: arbitrary bytes opened with a fixed key must never panic and
//! never open (nobody can forge a tag without the key); a payload taken from the input, sealed,
//! opens back to itself exactly once; any single-byte change of that datagram is refused; and
//! authentic datagrams delivered in an order the input picks are accepted exactly as a model of
//! the 128-seq replay window says.
#![no_main]

use clump_seal::{ClusterKey, OpenError, Opener, Sealer, REPLAY_WINDOW};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::sync::OnceLock;

const INSTANCES: usize = 2;
const PER_INSTANCE: u64 = 300;

fn key() -> ClusterKey {
    ClusterKey::from_bytes([0x5c; 32])
}

/// 300 sealed datagrams from each of two instances, made once.
fn sealed() -> &'static Vec<Vec<Vec<u8>>> {
    static SEALED: OnceLock<Vec<Vec<Vec<u8>>>> = OnceLock::new();
    SEALED.get_or_init(|| {
        (0..INSTANCES)
            .map(|i| {
                let mut s = Sealer::new(&key(), [i as u8 + 1; 16]);
                (0..PER_INSTANCE)
                    .map(|seq| s.seal(2, &seq.to_be_bytes()).expect("fits"))
                    .collect()
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let k = key();

    // 1. Arbitrary bytes never open (and never panic).
    let mut opener = Opener::new(&k);
    assert!(opener.open(data).is_err());
    assert_eq!(opener.remembered(), 0);

    // 2. open(seal(x)) == x for a payload from the input, once; the same datagram again is a
    //    replay; one byte changed (where and how the input says) is refused.
    let kind = data.first().copied().unwrap_or(0);
    let payload = &data[data.len().min(1)..];
    let payload = &payload[..payload.len().min(Sealer::max_payload())];
    let mut sealer = Sealer::new(&k, [0xee; 16]);
    let datagram = sealer.seal(kind, payload).expect("a payload that fits seals");
    let mut fresh = Opener::new(&k);
    if data.len() >= 3 {
        let at = usize::from(u16::from_le_bytes([data[1], data[2]])) % datagram.len();
        let mut forged = datagram.clone();
        forged[at] ^= data[0] | 1;
        let err = fresh.open(&forged).expect_err("a changed datagram never opens");
        assert!(
            matches!(err, OpenError::NotClump | OpenError::Version(_) | OpenError::Auth),
            "{err:?}"
        );
    }
    let opened = fresh.open(&datagram).expect("an authentic datagram opens");
    assert_eq!((opened.kind, opened.instance, opened.seq), (kind, [0xee; 16], 0));
    assert_eq!(opened.payload, payload);
    assert_eq!(fresh.open(&datagram), Err(OpenError::Replay));

    // 3. Replay window against a model: each pair of input bytes (the first 64 pairs; more only
    //    slows the target, whose time goes into the instrumented cipher) picks an instance and a
    //    seq.
    let sealed = sealed();
    let mut opener = Opener::new(&k);
    let mut seen: Vec<HashSet<u64>> = vec![HashSet::new(); INSTANCES];
    let mut top: Vec<Option<u64>> = vec![None; INSTANCES];
    for pair in data.chunks_exact(2).take(64) {
        let pick = u16::from_le_bytes([pair[0], pair[1]]);
        let i = usize::from(pick & 1);
        let seq = u64::from(pick >> 1) % PER_INSTANCE;
        let expect = match top[i] {
            None => true,
            Some(t) => seq > t || (t - seq < REPLAY_WINDOW && !seen[i].contains(&seq)),
        };
        match opener.open(&sealed[i][seq as usize]) {
            Ok(o) => {
                assert!(expect, "instance {i} seq {seq} accepted, model says replay");
                assert_eq!(o.seq, seq);
                seen[i].insert(seq);
                top[i] = Some(top[i].map_or(seq, |t| t.max(seq)));
            }
            Err(e) => {
                assert!(!expect, "instance {i} seq {seq} refused ({e:?}), model says new");
                assert_eq!(e, OpenError::Replay);
            }
        }
    }
});
