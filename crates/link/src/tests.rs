use super::*;
use std::net::{TcpListener, TcpStream};
use std::thread;

const T: Duration = Duration::from_secs(5);

fn key(b: u8) -> ClusterKey {
    ClusterKey::from_bytes([b; 32])
}

/// A listener on loopback whose first connection is accepted with `server_key`; the thread
/// returns what the server saw.
fn serve<R: Send + 'static>(
    server_key: ClusterKey,
    then: impl FnOnce(Result<Link, LinkError>) -> R + Send + 'static,
) -> (SocketAddr, thread::JoinHandle<R>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        then(Link::accept(stream, &server_key, T))
    });
    (addr, handle)
}

#[test]
fn peers_with_the_key_exchange_messages_both_ways() {
    let (addr, server) = serve(key(7), |link| {
        let mut link = link.expect("server handshake");
        let got = link.recv().expect("recv");
        link.send(&got.iter().rev().copied().collect::<Vec<u8>>())
            .expect("send");
        let big = link.recv().expect("recv big");
        big.len()
    });
    let mut link = Link::connect(addr, &key(7), T).expect("client handshake");
    link.send(b"hello").expect("send");
    assert_eq!(link.recv().expect("recv"), b"olleh");
    link.send(&vec![0xAB; MAX_MESSAGE]).expect("a full message");
    assert_eq!(server.join().expect("server"), MAX_MESSAGE);
}

#[test]
fn a_peer_with_another_key_fails_on_both_sides() {
    let (addr, server) = serve(key(1), |link| link.err().map(|e| e.to_string()));
    let client = Link::connect(addr, &key(2), T);
    assert!(
        matches!(
            client,
            Err(LinkError::Auth | LinkError::Closed | LinkError::Io(_))
        ),
        "{client:?}"
    );
    let server = server.join().expect("server");
    assert!(
        server.as_deref().is_some_and(|e| e.contains("authentication")),
        "the server accepted a peer without the key: {server:?}"
    );
}

#[test]
fn garbage_and_truncated_handshakes_are_refused() {
    for bytes in [
        vec![],
        vec![0, 5, 1, 2],
        vec![0, 48].into_iter().chain([0x55; 48]).collect::<Vec<u8>>(),
        vec![0xff, 0xff],
    ] {
        let (addr, server) = serve(key(3), |link| link.err().map(|e| e.to_string()));
        let mut raw = TcpStream::connect(addr).expect("connect");
        raw.write_all(&bytes).expect("write");
        raw.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let seen = server.join().expect("server");
        assert!(seen.is_some(), "accepted {bytes:?}");
    }
}

#[test]
fn a_replayed_first_handshake_message_gets_no_session() {
    // Record a real initiator's first frame, then replay it on a new connection: the responder
    // answers, but the replayer cannot finish the handshake, so the responder reports failure.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let recorder = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut frame = Vec::new();
        read_frame(&mut s, &mut frame).expect("first frame");
        (listener, frame)
    });
    let _ = Link::connect(addr, &key(4), Duration::from_millis(300));
    let (listener, first) = recorder.join().expect("recorder");
    // The size the responder checks before it makes any key.
    assert_eq!(first.len(), FIRST_MESSAGE_LEN);
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        Link::accept(stream, &key(4), Duration::from_secs(2))
            .err()
            .map(|e| e.to_string())
    });
    let mut raw = TcpStream::connect(addr).expect("connect");
    write_frame(&mut raw, &first).expect("replay");
    let mut reply = Vec::new();
    read_frame(&mut raw, &mut reply).expect("the responder answers the replay");
    // A made-up "ok" the replayer cannot encrypt.
    write_frame(&mut raw, &[0u8; 18]).expect("forged confirmation");
    assert!(
        server.join().expect("server").is_some(),
        "a replayed handshake got a session"
    );
}

#[test]
fn a_tampered_frame_fails_authentication() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // A proxy that flips one byte of the third frame the client sends (the first after the
    // handshake and its confirmation).
    let proxy = thread::spawn(move || {
        let backend = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let backend_addr = backend.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let (s, _) = backend.accept().expect("accept");
            let mut link = Link::accept(s, &key(5), T).expect("server handshake");
            link.recv().err().map(|e| e.to_string())
        });
        let (mut client, _) = listener.accept().expect("accept client");
        let mut upstream = TcpStream::connect(backend_addr).expect("connect backend");
        let mut down = upstream.try_clone().expect("clone");
        let mut client_w = client.try_clone().expect("clone");
        thread::spawn(move || {
            let _ = std::io::copy(&mut down, &mut client_w);
        });
        let mut frame = Vec::new();
        for i in 0..3 {
            if read_frame(&mut client, &mut frame).is_err() {
                break;
            }
            if i == 2 {
                frame[0] ^= 1;
            }
            write_frame(&mut upstream, &frame).expect("forward");
        }
        server.join().expect("server")
    });
    let mut link = Link::connect(addr, &key(5), T).expect("client handshake through the proxy");
    link.send(b"payload").expect("send");
    let seen = proxy.join().expect("proxy");
    assert!(
        seen.as_deref().is_some_and(|e| e.contains("authentication")),
        "a tampered frame was accepted: {seen:?}"
    );
}

#[test]
fn json_messages_round_trip_and_oversized_ones_are_refused() {
    let (addr, server) = serve(key(6), |link| {
        let mut link = link.expect("server");
        let v: Vec<String> = link.recv_json().expect("json");
        let bad = link.recv_json::<Vec<String>>();
        (v, bad.is_err())
    });
    let mut link = Link::connect(addr, &key(6), T).expect("client");
    link.send_json(&vec!["a".to_owned(), "b".to_owned()])
        .expect("send");
    assert!(matches!(
        link.send(&vec![0; MAX_MESSAGE + 1]),
        Err(LinkError::TooLarge(_))
    ));
    link.send(b"{not json").expect("send");
    let (v, bad) = server.join().expect("server");
    assert_eq!(v, ["a", "b"]);
    assert!(bad);
}

#[test]
fn a_peer_that_trickles_its_handshake_is_cut_off_at_the_deadline() {
    // One byte every 100 ms never trips a per-read timeout of 400 ms; the handshake's own
    // deadline must end it, or every stalled attacker holds one of the listener's threads.
    let limit = Duration::from_millis(400);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let started = Instant::now();
        let result = Link::accept(stream, &key(8), limit);
        (result.err().map(|e| e.reason()), started.elapsed())
    });
    let mut raw = TcpStream::connect(addr).expect("connect");
    // A frame header announcing 48 bytes, then the bytes one at a time.
    let _ = raw.write_all(&[0, 48]);
    for _ in 0..30 {
        thread::sleep(Duration::from_millis(100));
        if raw.write_all(&[0x55]).is_err() {
            break;
        }
    }
    let (reason, took) = server.join().expect("server");
    assert_eq!(reason, Some("timeout"));
    assert!(took < limit * 3, "the handshake lasted {took:?}");
}

#[test]
fn a_first_frame_of_the_wrong_size_is_refused_before_its_bytes_arrive() {
    // A frame header promising 65,535 bytes, then silence: refused at once as not a handshake,
    // without waiting for the body or making a key.
    let (addr, server) = serve(key(9), |link| {
        let started = Instant::now();
        (link.err().map(|e| e.reason()), started)
    });
    let mut raw = TcpStream::connect(addr).expect("connect");
    let sent = Instant::now();
    raw.write_all(&[0xff, 0xff]).expect("write");
    let (reason, _) = server.join().expect("server");
    assert_eq!(reason, Some("auth"));
    assert!(sent.elapsed() < T / 2, "refused only after {:?}", sent.elapsed());
}
