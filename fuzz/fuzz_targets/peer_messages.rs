//! The JSON messages of the streams between nodes (`clumpd`'s peer streams, ARCHITECTURE.md,
//! "Migration"), as a node holding the key but sending garbage would send them: the hello, the
//! rounds of a move's images and the target's answers, the job record, and the guest stream's
//! up and down messages. Each checks as the receiving node does before it writes anything: a
//! round's file list (`check_round`), a working directory (`workdir::check`), base64 payloads.
//! Nothing may panic, and what passes a check is within its limits.
#![no_main]

use clump_api::jobs::base64_decode;
use clump_api::JobInfo;
use clump_clumpd::peer::{check_round, Down, Hello, Last, Restored, Round, Up};
use clump_jobs::workdir::{self, Workdir};
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};

/// Images one move may carry (`peer::MAX_IMAGES`).
const MAX_IMAGES: u64 = 8 << 30;

fn check_workdir(wd: &Workdir) {
    let limit = workdir::DEFAULT_LIMIT;
    if let Ok(root) = workdir::check(wd, limit) {
        assert!(root.is_absolute(), "{root:?}");
        assert!(workdir::travels(&root));
        assert!(wd.entries.len() <= workdir::MAX_ENTRIES);
        for e in &wd.entries {
            let p = Path::new(&e.path);
            assert!(
                p.components().all(|c| matches!(c, Component::Normal(_))),
                "{:?}",
                e.path
            );
        }
        let sizes = wd.entries.iter().map(|e| match e.kind {
            workdir::Kind::File { size } => u128::from(size),
            _ => 0,
        });
        assert!(
            sizes.sum::<u128>() <= u128::from(limit),
            "{wd:?} passed the size limit"
        );
    }
}

fn check_last(last: &Last) {
    let _ = base64_decode(&last.stdin);
    if let Some(wd) = &last.workdir {
        check_workdir(wd);
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Hello>(data);
    let _ = serde_json::from_slice::<Restored>(data);
    let _ = serde_json::from_slice::<Option<JobInfo>>(data);
    if let Ok(round) = serde_json::from_slice::<Round>(data) {
        // `before`: what earlier rounds brought, from nothing to nearly the limit.
        for before in [0, MAX_IMAGES / 2, MAX_IMAGES - 1] {
            if let Ok(bytes) = check_round(&round.files, before) {
                let sizes: u128 = round.files.iter().map(|f| u128::from(f.size)).sum();
                assert_eq!(u128::from(bytes), sizes);
                assert!(sizes + u128::from(before) <= u128::from(MAX_IMAGES));
                assert!(round
                    .files
                    .iter()
                    .all(|f| !f.name.contains('/') && f.name != ".."));
            }
        }
        if let Some(last) = &round.last {
            check_last(last);
        }
    }
    if let Ok(wd) = serde_json::from_slice::<Workdir>(data) {
        check_workdir(&wd);
    }
    match serde_json::from_slice::<Up>(data) {
        Ok(Up::Output { data, .. } | Up::Bytes { data }) => {
            let _ = base64_decode(&data);
        }
        Ok(Up::Files { workdir }) => check_workdir(&workdir),
        _ => {}
    }
    if let Ok(Down::Stdin { data }) = serde_json::from_slice::<Down>(data) {
        let _ = base64_decode(&data);
    }
});
