//! The node-to-node stream (`clump-link`) as a host without the key meets it: arbitrary bytes
//! on the cluster port to a node accepting a stream (the responder's handshake), and as the
//! answer to a node opening one (the initiator's). Over loopback TCP in this process, as a peer
//! would reach it. Nothing may panic or hang, and no handshake may succeed.
#![no_main]

use clump_link::{Link, LinkError};
use clump_seal::ClusterKey;
use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

/// Each handshake step waits at most this long: the input always ends with end of stream, so
/// only a wrong wait (a bug) would reach it.
const STEP: Duration = Duration::from_secs(5);

fn listener() -> &'static TcpListener {
    static L: OnceLock<TcpListener> = OnceLock::new();
    L.get_or_init(|| TcpListener::bind("127.0.0.1:0").expect("a loopback port"))
}

fn refused(result: Result<Link, LinkError>, who: &str) {
    match result {
        Ok(_) => panic!("{who}: a handshake without the key succeeded"),
        Err(LinkError::Auth | LinkError::Closed | LinkError::Io(_)) => {}
        Err(e) => panic!("{who}: unexpected error {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let key = ClusterKey::from_bytes([0x42; 32]);
    let l = listener();
    let addr = l.local_addr().expect("bound");

    // Responder: the input is all the stranger sends.
    let mut stranger = TcpStream::connect(addr).expect("loopback connect");
    stranger.write_all(data).expect("loopback write");
    stranger.shutdown(Shutdown::Write).expect("shutdown");
    let (conn, _) = l.accept().expect("accept");
    refused(Link::accept(conn, &key, STEP), "responder");
    drop(stranger);

    // Initiator: the stranger answers the node's first message with the input.
    let answer = data.to_vec();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = l.accept().expect("accept");
        let mut first = [0u8; 2];
        let _ = conn.read_exact(&mut first);
        let _ = conn.write_all(&answer);
        let _ = conn.shutdown(Shutdown::Write);
        // Hold the connection until the node gives up, so its reads end with our end of stream.
        let _ = conn.read_to_end(&mut Vec::new());
    });
    refused(Link::connect(addr, &key, STEP), "initiator");
    server.join().expect("the stranger thread");
});
