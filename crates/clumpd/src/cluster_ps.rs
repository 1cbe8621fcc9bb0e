//! `clump ps` for the whole cluster: this node's jobs and every alive peer's, asked over the job
//! streams at once, merged so each job appears once, as its home tells it (the home knows where
//! it runs and how often it moved), with the pin reason of the node that runs it.

use crate::peer::Peers;
use clump_api::{JobInfo, NodeMap, NodeState};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// One list per node, each with the number of the node that gave it.
pub fn merge(lists: Vec<(u32, Vec<JobInfo>)>) -> Vec<JobInfo> {
    let mut order: Vec<String> = Vec::new();
    let mut chosen: HashMap<String, (u32, JobInfo)> = HashMap::new();
    let mut pins: HashMap<String, String> = HashMap::new();
    // The balancer's word comes from the node that runs the job, as the pin reason does.
    let mut notes: HashMap<String, String> = HashMap::new();
    for (from, jobs) in lists {
        for job in jobs {
            // The node that runs the job reads its pin reason; others have none for it.
            if job.node == Some(from) {
                if let Some(why) = &job.pinned {
                    pins.insert(job.id.clone(), why.clone());
                }
                if let Some(note) = &job.balance {
                    notes.insert(job.id.clone(), note.clone());
                }
            }
            match chosen.get(&job.id) {
                Some((had, kept)) if kept.home == Some(*had) => {}
                Some(_) if job.home != Some(from) => {}
                seen => {
                    if seen.is_none() {
                        order.push(job.id.clone());
                    }
                    chosen.insert(job.id.clone(), (from, job));
                }
            }
        }
    }
    order
        .into_iter()
        .filter_map(|id| {
            let (_, mut job) = chosen.remove(&id)?;
            if let Some(why) = pins.remove(&id) {
                job.pinned = Some(why);
            }
            if let Some(note) = notes.remove(&id) {
                job.balance = Some(note);
            }
            Some(job)
        })
        .collect()
}

/// The alive peers to ask: number and stream address.
fn peers_of(map: &NodeMap, me: u32) -> Vec<(u32, SocketAddr)> {
    map.nodes
        .iter()
        .filter(|n| n.state == NodeState::Alive)
        .filter_map(|n| Some((n.number?, SocketAddr::from((n.address?, map.port)))))
        .filter(|(number, _)| *number != me)
        .collect()
}

/// This node's jobs and those of every alive peer that answers in time; a peer that does not
/// is left out (and logged).
pub fn gather(peers: &Arc<Peers>, map: &NodeMap, local: Vec<JobInfo>) -> Vec<JobInfo> {
    let (me, _) = peers.me();
    let asked: Vec<_> = peers_of(map, me)
        .into_iter()
        .map(|(number, addr)| {
            let p = peers.clone();
            (number, std::thread::spawn(move || p.remote_ps(addr)))
        })
        .collect();
    let mut lists = vec![(me, local)];
    for (number, handle) in asked {
        match handle.join() {
            Ok(Ok(jobs)) => lists.push((number, jobs)),
            Ok(Err(e)) => tracing::info!(node = number, "no job list from the node: {e}"),
            Err(_) => tracing::warn!(node = number, "the job list query failed"),
        }
    }
    merge(lists)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, home: u32, node: u32) -> JobInfo {
        JobInfo {
            id: id.into(),
            home: Some(home),
            node: Some(node),
            ..JobInfo::default()
        }
    }

    #[test]
    fn each_job_once_as_its_home_tells_it_with_the_runner_s_pin() {
        let mut at_home = job("aaaaaaaa", 1, 2);
        at_home.migrations = 3;
        let mut on_two = job("aaaaaaaa", 1, 2);
        on_two.pinned = Some("it has a socket open".into());
        let lists = vec![
            // Node 2 answers first: its guest copy must not win over the home's record.
            (2, vec![on_two, job("bbbbbbbb", 2, 2)]),
            (1, vec![at_home, job("cccccccc", 1, 1)]),
            (3, vec![]),
        ];
        let jobs = merge(lists);
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["aaaaaaaa", "bbbbbbbb", "cccccccc"]);
        assert_eq!(jobs[0].migrations, 3, "the home's record");
        assert_eq!(jobs[0].pinned.as_deref(), Some("it has a socket open"));
    }

    #[test]
    fn a_guest_whose_home_did_not_answer_still_shows() {
        let jobs = merge(vec![(2, vec![job("aaaaaaaa", 1, 2)])]);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].home, Some(1));
    }
}
