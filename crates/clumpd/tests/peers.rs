//! The job streams of a real `clumpd` (TCP on the cluster port, in a network namespace this test
//! creates and removes) against a peer that lacks the key or sends what it should not: no
//! stream without the cluster key, no file written outside the images directory, no job adopted
//! that is not ours, and the daemon answers on afterwards with no job started. Needs root and
//! `ip`; fails without them.

mod common;

use clump_api::{Client, JobInfo, MapState};
use clump_clumpd::peer::{Hello, ImageFile, Last, Restored, Round};
use clump_jobs::checkpoint::Pipes;
use clump_jobs::workdir::{Entry, Kind, Workdir};
use clump_link::{Link, LinkError};
use clump_seal::ClusterKey;
use common::{Net, KEY, OTHER_KEY};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

/// Runs `f` on a thread inside network namespace `ns`.
fn in_netns<R: Send + 'static>(ns: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).expect("netns file");
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns");
        f()
    })
    .join()
    .expect("thread in the namespace")
}

fn key(hex: &str) -> ClusterKey {
    ClusterKey::from_hex(hex).expect("key")
}

#[test]
fn streams_refuse_peers_without_the_key_and_requests_that_do_not_add_up() {
    let mut net = Net::new("p", 2);
    net.start(0, KEY);
    let socket = net.path(0, "sock");
    net.wait_for("the daemon to serve", Duration::from_secs(20), || {
        net.map(0).is_some_and(|m| m.state != MapState::NoLease)
    });
    net.wait_for("job streams", Duration::from_secs(20), || {
        net.log(0).contains("serving job streams")
    });
    let addr: SocketAddr = "10.88.0.10:7171".parse().expect("addr");
    let peer = net.nodes[1].clone();

    // Another cluster's key: no stream.
    let other = in_netns(&peer, move || Link::connect(addr, &key(OTHER_KEY), T).err());
    assert!(
        matches!(
            other,
            Some(LinkError::Auth | LinkError::Closed | LinkError::Io(_))
        ),
        "a peer with another key got a stream: {other:?}"
    );

    // The key, then something that is not a hello: the stream ends, nothing else.
    let garbage = in_netns(&peer, move || {
        let mut link = Link::connect(addr, &key(KEY), T).expect("stream");
        link.send(b"{\"op\":\"rm -rf /\"}").expect("send");
        link.set_read_timeout(Some(T)).expect("timeout");
        link.recv().err()
    });
    assert!(garbage.is_some(), "a malformed hello got an answer");

    // A restore from another image version: refused before any image is sent.
    let other_version = in_netns(&peer, move || {
        let mut link = Link::connect(addr, &key(KEY), T).expect("stream");
        link.send_json(&Hello::Restore {
            job: "0a1b2c3d".into(),
            home: "10.88.0.11:7171".parse().expect("addr"),
            version: "0".into(),
        })
        .expect("hello");
        link.set_read_timeout(Some(T)).expect("timeout");
        link.recv_json::<Restored>().map(|r| r.error)
    });
    let error = other_version.expect("an answer").expect("a refusal");
    assert!(error.contains("image version"), "{error}");

    // A restore whose image names climb out of the images directory: refused, nothing written.
    let escape = net.dir.path().join("escaped.img");
    let name = format!("../../../../../../..{}", escape.display());
    let refused = in_netns(&peer, move || {
        let mut link = Link::connect(addr, &key(KEY), T).expect("stream");
        link.send_json(&Hello::Restore {
            job: "0a1b2c3d".into(),
            home: "10.88.0.11:7171".parse().expect("addr"),
            version: env!("CARGO_PKG_VERSION").into(),
        })
        .expect("hello");
        link.set_read_timeout(Some(T)).expect("timeout");
        let taken = link.recv_json::<Restored>().expect("an answer to the hello");
        assert_eq!(taken.error, None, "the hello was refused");
        let job = JobInfo {
            id: "0a1b2c3d".into(),
            argv: vec!["sh".into()],
            home: Some(11),
            ..JobInfo::default()
        };
        link.send_json(&Round {
            files: vec![ImageFile { name, size: 4 }],
            last: Some(Box::new(Last {
                job,
                pipes: Pipes {
                    stdin: 1,
                    stdout: 2,
                    stderr: 3,
                    status: 4,
                },
                workdir: None,
                stdin: String::new(),
            })),
        })
        .expect("round");
        let _ = link.send(b"evil");
        link.recv_json::<Restored>().map(|r| r.error)
    });
    let error = refused.expect("an answer").expect("a refusal");
    assert!(error.contains("not an image file name"), "{error}");
    assert!(!escape.exists(), "a peer wrote {}", escape.display());

    // A working directory whose entries climb out of it: refused, nothing written.
    let root = net.dir.path().join("w");
    let planted = net.dir.path().join("planted.txt");
    let root_text = root.to_str().expect("utf-8").to_owned();
    let refused = in_netns(&peer, move || {
        let mut link = Link::connect(addr, &key(KEY), T).expect("stream");
        link.send_json(&Hello::Restore {
            job: "0a1b2c3e".into(),
            home: "10.88.0.11:7171".parse().expect("addr"),
            version: env!("CARGO_PKG_VERSION").into(),
        })
        .expect("hello");
        link.set_read_timeout(Some(T)).expect("timeout");
        let taken = link.recv_json::<Restored>().expect("an answer to the hello");
        assert_eq!(taken.error, None, "the hello was refused");
        let job = JobInfo {
            id: "0a1b2c3e".into(),
            argv: vec!["sh".into()],
            home: Some(11),
            ..JobInfo::default()
        };
        link.send_json(&Round {
            files: vec![],
            last: Some(Box::new(Last {
                job,
                pipes: Pipes {
                    stdin: 1,
                    stdout: 2,
                    stderr: 3,
                    status: 4,
                },
                workdir: Some(Workdir {
                    root: root_text,
                    entries: vec![Entry {
                        path: "../planted.txt".into(),
                        mode: 0o644,
                        mtime: 0,
                        kind: Kind::File { size: 4 },
                    }],
                }),
                stdin: String::new(),
            })),
        })
        .expect("round");
        let _ = link.send(b"evil");
        link.recv_json::<Restored>().map(|r| r.error)
    });
    let error = refused.expect("an answer").expect("a refusal");
    assert!(error.contains("not a path inside"), "{error}");
    assert!(!planted.exists(), "a peer wrote {}", planted.display());
    assert!(!root.exists(), "a refused working directory was made");

    // A node that says it runs a job this node never had: dropped.
    let claimed = in_netns(&peer, move || {
        let mut link = Link::connect(addr, &key(KEY), T).expect("stream");
        link.send_json(&Hello::Guest {
            job: "deadbeef".into(),
            node: 11,
        })
        .expect("hello");
        link.set_read_timeout(Some(T)).expect("timeout");
        link.recv().err()
    });
    assert!(claimed.is_some(), "a claim for an unknown job got an answer");

    // The daemon is fine and started nothing.
    let jobs = Client::connect(&socket).and_then(|mut c| c.ps()).expect("ps");
    assert!(jobs.is_empty(), "jobs appeared: {jobs:?}");
    let log = net.log(0);
    assert!(
        log.contains("authentication"),
        "the refused key is not logged:\n{log}"
    );
    assert!(log.contains("not ours"), "the false claim is not logged:\n{log}");
}
