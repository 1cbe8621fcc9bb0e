//! The membership core on a simulated network: what a user of the cluster would see.

use clump_cluster::sim::{Network, Sim};
use clump_cluster::{Config, Event, ViewState};
use clump_seal::ClusterKey;
use std::time::Duration;

fn key(byte: u8) -> ClusterKey {
    ClusterKey::from_hex(&format!("{byte:02x}").repeat(32)).expect("valid key")
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn states(sim: &Sim, i: usize) -> Vec<ViewState> {
    sim.node(i)
        .map(|n| n.cluster.view().into_iter().map(|r| r.state).collect())
        .unwrap_or_default()
}

fn alive_view(sim: &Sim, i: usize) -> usize {
    states(sim, i)
        .iter()
        .filter(|s| matches!(s, ViewState::This | ViewState::Alive))
        .count()
}

#[test]
fn nodes_find_each_other_by_broadcast_hello() {
    let mut sim = Sim::new(key(1), Config::default(), Network::default(), 1);
    for i in 0..4 {
        sim.start(i, None);
        sim.run_for(Duration::from_millis(700));
    }
    sim.run_for(secs(3));
    for i in 0..4 {
        assert_eq!(alive_view(&sim, i), 4, "node {i}: {:?}", states(&sim, i));
        let view = sim.node(i).map(|n| n.cluster.view()).unwrap_or_default();
        assert!(view.iter().all(|r| r.record.is_some()), "node {i} lacks records");
        assert!(view.iter().all(|r| r.conflicts.is_empty()));
    }
}

#[test]
fn sweep_hosts_get_a_unicast_hello() {
    // Only the first broadcast: node 2 comes later and must be found by the sweep.
    let config = Config {
        hello_every: secs(3600),
        ..Config::default()
    };
    let mut sim = Sim::new(key(1), config, Network::default(), 2);
    sim.start(0, None);
    sim.start(1, None);
    sim.run_for(secs(2));
    sim.start(2, None);
    sim.partitioned.insert(2); // its broadcast is lost...
    sim.run_for(Duration::from_millis(100));
    sim.partitioned.clear();
    sim.found_hosts(2, &[0]); // ...but the sweep found node 0
    sim.run_for(secs(3));
    for i in 0..3 {
        assert_eq!(alive_view(&sim, i), 3, "node {i}: {:?}", states(&sim, i));
    }
}

#[test]
fn a_node_with_another_key_is_refused_and_told() {
    let mut sim = Sim::new(key(1), Config::default(), Network::default(), 3);
    sim.start(0, None);
    sim.start(1, None);
    sim.start(2, Some(&key(2)));
    sim.run_for(secs(12));
    assert_eq!(alive_view(&sim, 0), 2);
    assert_eq!(alive_view(&sim, 1), 2);
    assert_eq!(alive_view(&sim, 2), 1);
    for i in 0..3 {
        let node = sim.node(i).expect("running");
        assert!(
            node.cluster.counters().auth > 0,
            "node {i} counted no auth failures"
        );
        assert!(
            node.events
                .iter()
                .any(|(_, e)| matches!(e, Event::Refused { .. })),
            "node {i}"
        );
    }
    let foreign: Vec<_> = sim
        .node(0)
        .expect("running")
        .cluster
        .foreign()
        .map(|(a, _)| *a)
        .collect();
    assert_eq!(foreign, [clump_cluster::sim::addr_of(2)]);
}

#[test]
fn a_dead_node_is_dead_everywhere_and_a_leaving_node_left() {
    let mut sim = Sim::new(key(1), Config::default(), Network::default(), 4);
    for i in 0..5 {
        sim.start(i, None);
    }
    sim.run_for(secs(5));
    let dead_id = sim.member(4).expect("running").id;
    let left_id = sim.member(3).expect("running").id;
    sim.kill(4);
    let now = sim.now;
    if let Some(n) = sim.node_mut(3) {
        n.cluster.leave(now);
    }
    // flush node 3's leave by letting time pass; it then goes away
    sim.run_for(Duration::from_millis(50));
    sim.kill(3);
    sim.run_for(secs(15));
    for i in 0..3 {
        let view = sim.node(i).expect("running").cluster.view();
        let state_of = |id| view.iter().find(|r| r.id == id).map(|r| r.state);
        assert_eq!(state_of(dead_id), Some(ViewState::Dead), "node {i}");
        assert_eq!(state_of(left_id), Some(ViewState::Left), "node {i}");
        assert_eq!(alive_view(&sim, i), 3);
    }
    // The last ones standing: when the others go too, a node is alone, not joining.
    sim.kill(1);
    sim.kill(2);
    sim.run_for(secs(20));
    let last = sim.node(0).expect("running");
    assert!(last.cluster.is_alone() && !last.cluster.is_joined());
    assert!(last.events.iter().any(|(_, e)| *e == Event::Alone));
}

#[test]
fn no_false_deaths_at_five_percent_loss() {
    let net = Network {
        loss: 0.05,
        ..Network::default()
    };
    let mut sim = Sim::new(key(1), Config::default(), net, 5);
    for i in 0..20 {
        sim.start(i, None);
    }
    sim.run_for(secs(10));
    for i in 0..20 {
        assert_eq!(alive_view(&sim, i), 20, "node {i}");
    }
    sim.run_for(secs(60));
    let downs: usize = sim
        .running()
        .map(|(_, n)| {
            n.events
                .iter()
                .filter(|(_, e)| matches!(e, Event::MemberDown { .. }))
                .count()
        })
        .sum();
    assert_eq!(downs, 0);
}

#[test]
fn cloned_machines_are_flagged_not_merged() {
    use clump_cluster::sim::record_of;
    use clump_cluster::ConflictKind;
    let mut sim = Sim::new(key(1), Config::default(), Network::default(), 6);
    for i in 0..3 {
        sim.start(i, None);
    }
    // Node 3 is a clone of node 2 with the same MAC (hence the same id), another address; node 4
    // shares node 1's MAC but keeps its own id (an id kept on disk, a cloned NIC).
    sim.start_as(3, record_of(2), None);
    let mut r = record_of(4);
    r.mac = record_of(1).mac;
    sim.start_as(4, r, None);
    sim.run_for(secs(10));
    let view = sim.node(0).expect("running").cluster.view();
    let conflicts = |id| {
        view.iter()
            .filter(|r| r.id == id)
            .flat_map(|r| r.conflicts.clone())
            .collect::<Vec<_>>()
    };
    assert!(
        conflicts(record_of(2).id).contains(&ConflictKind::DuplicateId),
        "{view:#?}"
    );
    assert!(
        conflicts(record_of(1).id).contains(&ConflictKind::DuplicateMac),
        "{view:#?}"
    );
    assert!(
        conflicts(record_of(4).id).contains(&ConflictKind::DuplicateMac),
        "{view:#?}"
    );
    // Both clones stay in the map as two rows.
    assert_eq!(
        view.iter().filter(|r| r.id == record_of(2).id).count(),
        2,
        "{view:#?}"
    );
}
