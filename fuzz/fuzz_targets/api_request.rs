//! What a local user can send `clumpd` and what `clump` reads back: arbitrary bytes as a request
//! and as replies (`serde_json` into the `clump_api` types), and as a stream of lines through
//! `read_line`/`read_line_max`. Nothing here may panic; a line is never longer than its limit; a
//! request that parses survives a round trip. An attached stream's input (`StreamInput`) and
//! the signal names it carries: only the allowed signals come out.
#![no_main]

use clump_api::jobs::{base64_decode, StreamInput};
use clump_api::{read_line, read_line_max, ApiError, Event, NodeMap, Reply, Request, Speed, Stats, Versioned};
use clump_jobs::signals;
use libfuzzer_sys::fuzz_target;
use std::io::BufReader;

fuzz_target!(|data: &[u8]| {
    // What clumpd parses: the request with its version.
    if let Ok(request) = serde_json::from_slice::<Versioned<Request>>(data) {
        let again = serde_json::to_string(&request).expect("a request encodes");
        assert_eq!(serde_json::from_str::<Versioned<Request>>(&again).ok(), Some(request.clone()));
        let _ = request.checked();
    }
    match serde_json::from_slice::<StreamInput>(data) {
        Ok(StreamInput::Stdin { data }) => {
            let _ = base64_decode(&data);
        }
        Ok(StreamInput::Signal { signal }) => {
            if let Some(n) = signals::parse(&signal) {
                assert!(
                    signals::name(n).is_some(),
                    "{signal:?} gave {n}, not an allowed signal"
                );
            }
        }
        _ => {}
    }
    let _ = serde_json::from_slice::<Reply<NodeMap>>(data);
    let _ = serde_json::from_slice::<Reply<Vec<Event>>>(data);
    let _ = serde_json::from_slice::<Reply<Stats>>(data);
    let _ = serde_json::from_slice::<Reply<Speed>>(data);

    // The first byte picks a small limit so the too-long path is reached; a tiny buffer makes
    // lines span many refills of the BufReader.
    let (max, rest) = match data.split_first() {
        Some((b, rest)) => (usize::from(*b), rest),
        None => (0, data),
    };
    let mut buf = Vec::new();
    let mut reader = BufReader::with_capacity(7, rest);
    loop {
        match read_line_max(&mut reader, &mut buf, max) {
            Ok(Some(line)) => {
                assert!(line.len() <= max);
                let _ = serde_json::from_str::<Request>(&line);
            }
            Ok(None) => break,
            Err(ApiError::TooLong { limit }) => assert_eq!(limit, max),
            Err(ApiError::Protocol(_)) => {}
            Err(e) => panic!("reading from memory cannot fail so: {e:?}"),
        }
    }
    let mut reader = BufReader::new(data);
    while let Ok(Some(line)) = read_line(&mut reader, &mut buf) {
        let _ = serde_json::from_str::<Request>(&line);
    }
});
