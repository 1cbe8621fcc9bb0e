//! Real `clumpd` daemons on a bridge in network namespaces this test creates and removes (no
//! uplink; nothing reaches the machine's network): they find each other by ARP sweep and hello,
//! refuse a node with another key, and see a leaving node as left. Needs root and `ip`: without
//! them the test fails, it does not skip.

mod common;

use clump_api::{Client, NodeMap, NodeState};
use common::{Net, KEY, OTHER_KEY};
use std::time::{Duration, Instant};

fn members(map: &NodeMap) -> Vec<u32> {
    let mut v: Vec<u32> = map
        .nodes
        .iter()
        .filter(|n| n.state.is_member())
        .filter_map(|n| n.number)
        .collect();
    v.sort();
    v
}

#[test]
fn daemons_find_each_other_refuse_another_key_and_see_a_leave() {
    let mut net = Net::new("a", 4);
    for i in 0..3 {
        net.start(i, KEY);
    }
    net.start(3, OTHER_KEY);
    net.wait_for(
        "three nodes with the key to list each other",
        Duration::from_secs(20),
        || (0..3).all(|i| net.map(i).is_some_and(|m| members(&m) == [10, 11, 12])),
    );
    for i in 0..3 {
        let map = net.map(i).expect("map");
        assert_eq!(map.state, clump_api::MapState::Joined);
        let this: Vec<_> = map.nodes.iter().filter(|n| n.state == NodeState::This).collect();
        assert_eq!(this.len(), 1);
        assert_eq!(this[0].number, Some(10 + i as u32));
        let mosix = std::fs::read_to_string(net.path(i, "mosix.map")).expect("mosix.map");
        assert!(mosix.lines().any(|l| l == "10 10.88.0.10 3"), "{mosix}");
        let json: NodeMap =
            serde_json::from_str(&std::fs::read_to_string(net.path(i, "nodes.json")).expect("nodes.json"))
                .expect("nodes.json parses");
        assert_eq!(members(&json), [10, 11, 12]);
    }
    // Records travel: every node learns the others' speed (once measured), cores and memory.
    net.wait_for(
        "records with speed, cores and memory",
        Duration::from_secs(15),
        || {
            net.map(0).is_some_and(|m| {
                m.nodes.iter().filter(|n| n.state == NodeState::Alive).count() == 2
                    && m.nodes.iter().filter(|n| n.state == NodeState::Alive).all(|n| {
                        n.speed.is_some_and(|s| s > 0)
                            && n.cores.is_some()
                            && n.mem_total_kib.is_some_and(|m| m > 0)
                    })
            })
        },
    );
    // A speed set by hand on node 11 reaches node 10.
    let speed = Client::connect(net.path(1, "sock"))
        .expect("connect")
        .set_speed(Some(4321))
        .expect("set-speed");
    assert_eq!(speed.speed, Some(4321));
    net.wait_for("the new speed to reach node 10", Duration::from_secs(10), || {
        net.map(0).is_some_and(|m| {
            m.nodes
                .iter()
                .any(|n| n.number == Some(11) && n.speed == Some(4321))
        })
    });
    assert_eq!(
        std::fs::read_to_string(net.path(1, "speed"))
            .expect("kept")
            .trim(),
        "4321"
    );

    // The node with the other key: never a member, shown as refused on both sides.
    net.wait_for(
        "the foreign node to be refused on every side",
        Duration::from_secs(20),
        || {
            (0..3).all(|i| {
                net.map(i).is_some_and(|m| {
                    m.foreign
                        .iter()
                        .any(|f| f.address.octets()[3] == 13 && f.dropped > 0)
                })
            }) && net
                .map(3)
                .is_some_and(|m| m.foreign.len() == 3 && members(&m) == [13])
        },
    );
    assert!(net.log(3).contains("refused datagrams from="), "{}", net.log(3));
    assert!(net.map(0).is_some_and(|m| m.dropped.auth > 0));

    // A graceful stop: the others show it as left, not dead.
    net.stop(2);
    net.wait_for("node 12 to be shown as left", Duration::from_secs(15), || {
        (0..2).all(|i| {
            net.map(i).is_some_and(|m| {
                m.nodes
                    .iter()
                    .any(|n| n.number == Some(12) && n.state == NodeState::Left)
            })
        })
    });
}

#[test]
fn a_daemon_killed_and_started_again_is_alive_again_on_the_others() {
    let mut net = Net::new("r", 2);
    net.start(0, KEY);
    net.start(1, KEY);
    net.wait_for("two nodes to list each other", Duration::from_secs(20), || {
        (0..2).all(|i| net.map(i).is_some_and(|m| members(&m) == [10, 11]))
    });
    // Several times: the order of two generations must not be left to chance.
    for round in 0..4 {
        let mut child = net.daemons[1].take().expect("running");
        child.kill().expect("kill");
        child.wait().expect("wait");
        if round % 2 == 1 {
            // Long enough for node 10 to declare the old instance dead first.
            std::thread::sleep(Duration::from_secs(8));
        }
        net.start(1, KEY);
        net.wait_for(
            "the restarted node to be alive on node 10 and to list node 10",
            Duration::from_secs(20),
            || {
                net.map(0).is_some_and(|m| {
                    m.nodes
                        .iter()
                        .any(|n| n.number == Some(11) && n.state == NodeState::Alive)
                }) && net.map(1).is_some_and(|m| members(&m) == [10, 11])
            },
        );
        // Stable, not flapping: still alive a few seconds later, and never told it was dead.
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            net.map(0).is_some_and(|m| m
                .nodes
                .iter()
                .any(|n| n.number == Some(11) && n.state == NodeState::Alive)),
            "round {round}: node 11 did not stay alive\n{}",
            net.log(1)
        );
        assert!(
            !net.log(1).contains("declared this node dead"),
            "round {round}: the restarted daemon was declared dead\n{}",
            net.log(1)
        );
    }
}

#[test]
fn without_a_key_a_node_joins_nothing_and_says_so() {
    // No network needed: without a key the daemon never opens the cluster socket.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    std::fs::write(p("cmdline"), "console=ttyS0 quiet\n").expect("cmdline");
    let log = std::fs::File::create(p("log")).expect("log");
    let mut child = common::keyless_clumpd(dir.path())
        .stderr(log)
        .spawn()
        .expect("clumpd");
    let start = Instant::now();
    let map = loop {
        if let Some(map) = Client::connect(p("sock")).ok().and_then(|mut c| c.nodes().ok()) {
            if map.state == clump_api::MapState::NoKey {
                break map;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no no-key state");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(map.nodes.is_empty());
    let log = std::fs::read_to_string(p("log")).unwrap_or_default();
    assert!(
        log.contains("no cluster key") && log.contains("missing.key"),
        "{log}"
    );
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal");
    assert!(child.wait().expect("wait").success());
}
