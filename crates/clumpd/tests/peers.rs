//! The job streams of a real `clumpd` (TCP on the cluster port, in a network namespace this test
//! creates and removes) against a peer that lacks the key or sends what it should not: no
//! stream without the cluster key, no file written outside the images directory, no job adopted
//! that is not ours, and the daemon answers on afterwards with no job started. Needs root and
//! `ip`; fails without them.

mod common;

use clump_api::{Client, JobInfo, MapState, NodeChange};
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

/// Opens a restore of `job` from image version `version`: the stream and the answer.
fn restore_hello(addr: SocketAddr, job: &str, version: &str) -> (Link, Restored) {
    let mut link = Link::connect(addr, &key(KEY), T).expect("stream");
    link.send_json(&Hello::Restore {
        job: job.into(),
        home: "10.88.0.11:7171".parse().expect("addr"),
        version: version.into(),
    })
    .expect("hello");
    link.set_read_timeout(Some(T)).expect("timeout");
    let answer = link.recv_json::<Restored>().expect("an answer to the hello");
    (link, answer)
}

/// A restore of `job` taken at the hello, then a final round of `files` (and `workdir`),
/// followed by bytes that are no image: the target's answer.
fn last_round(
    addr: SocketAddr,
    job: &str,
    files: Vec<ImageFile>,
    workdir: Option<Workdir>,
) -> Option<String> {
    let (mut link, taken) = restore_hello(addr, job, env!("CARGO_PKG_VERSION"));
    assert_eq!(taken.error, None, "the hello was refused");
    let info = JobInfo {
        id: job.into(),
        argv: vec!["sh".into()],
        home: Some(11),
        ..JobInfo::default()
    };
    link.send_json(&Round {
        files,
        last: Some(Box::new(Last {
            job: info,
            pipes: Pipes {
                stdin: 1,
                stdout: 2,
                stderr: 3,
                status: 4,
                stdin_closed: false,
            },
            workdir,
            stdin: String::new(),
            output: 0,
        })),
    })
    .expect("round");
    let _ = link.send(b"evil");
    link.recv_json::<Restored>()
        .expect("an answer to the round")
        .error
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
    let other_version = in_netns(&peer, move || restore_hello(addr, "0a1b2c3d", "0").1);
    let error = other_version.error.expect("a refusal");
    assert!(error.contains("image version"), "{error}");

    // A blocked node refuses another home's job at the hello.
    let blocked = Client::connect(&socket)
        .and_then(|mut c| c.node(Some(NodeChange::Block(true))))
        .expect("clump node block");
    assert!(!blocked.accepts_guests && blocked.blocked);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        let answer = in_netns(&peer, move || {
            restore_hello(addr, "0a1b2c3d", env!("CARGO_PKG_VERSION")).1
        });
        if answer.error.is_some() || std::time::Instant::now() > deadline {
            break answer.error;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let refusal = refusal.expect("a blocked node took a guest");
    assert!(refusal.contains("takes no guest jobs"), "{refusal}");
    Client::connect(&socket)
        .and_then(|mut c| c.node(Some(NodeChange::Block(false))))
        .expect("clump node unblock");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while in_netns(&peer, move || {
        restore_hello(addr, "0a1b2c3d", env!("CARGO_PKG_VERSION")).1
    })
    .error
    .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "an unblocked node still refuses guests"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // A restore whose image names climb out of the images directory: refused, nothing written.
    let escape = net.dir.path().join("escaped.img");
    let name = format!("../../../../../../..{}", escape.display());
    let error = in_netns(&peer, move || {
        last_round(addr, "0a1b2c3d", vec![ImageFile { name, size: 4 }], None)
    })
    .expect("a refusal");
    assert!(error.contains("not an image file name"), "{error}");
    assert!(!escape.exists(), "a peer wrote {}", escape.display());

    // A working directory whose entries climb out of it: refused, nothing written.
    let root = net.dir.path().join("w");
    let planted = net.dir.path().join("planted.txt");
    let workdir = Workdir {
        root: root.to_str().expect("utf-8").to_owned(),
        entries: vec![Entry {
            path: "../planted.txt".into(),
            mode: 0o644,
            mtime: 0,
            kind: Kind::File { size: 4 },
        }],
    };
    let error =
        in_netns(&peer, move || last_round(addr, "0a1b2c3e", vec![], Some(workdir))).expect("a refusal");
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

    // A checkpoint of a job that does not run elsewhere for this home, full or not: refused at
    // the hello, nothing stored.
    for full in [true, false] {
        let refusal = in_netns(&peer, move || {
            let mut link = Link::connect(addr, &key(KEY), T).expect("stream");
            link.send_json(&Hello::Checkpoint {
                job: "deadbeef".into(),
                node: 11,
                version: env!("CARGO_PKG_VERSION").into(),
                seq: 2,
                full,
            })
            .expect("hello");
            link.set_read_timeout(Some(T)).expect("timeout");
            link.recv_json::<Restored>().expect("an answer").error
        });
        let refusal = refusal.expect("a checkpoint of a job not ours was taken");
        assert!(refusal.contains("does not run on node 11"), "{refusal}");
    }

    // The daemon is fine and started nothing.
    let jobs = Client::connect(&socket).and_then(|mut c| c.ps()).expect("ps");
    assert!(jobs.is_empty(), "jobs appeared: {jobs:?}");
    let log = net.log(0);
    assert!(
        log.contains("authentication"),
        "the refused key is not logged:\n{log}"
    );
    assert!(log.contains("not ours"), "the false claim is not logged:\n{log}");
    assert!(
        log.contains("checkpoint refused"),
        "the refused checkpoint is not logged:\n{log}"
    );
}
