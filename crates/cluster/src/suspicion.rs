//! Suspicion timeouts at every node, not only at the prober.
//!
//! Foca starts the suspect-to-down timer only on the node whose probe failed; every other node
//! learns the verdict from the `Down` that node piggybacks a bounded number of times. A node
//! that hears the `Suspect` but misses every copy of the `Down` keeps counting the dead node
//! alive until its own probe reaches it, once per round of n probes: hours at 10,000 nodes.
//! SWIM as published (and Lifeguard) has every node that hears a suspicion time it out; this is
//! that, with a longer timeout than the prober's so the prober's verdict normally comes first.

use crate::id::Member;
use foca::State;
use std::collections::HashMap;
use std::time::Duration;

/// The suspects this node has seen, with the incarnation and the time it first saw each.
#[derive(Debug, Default)]
pub struct Suspicions {
    since: HashMap<Member, (u16, Duration)>,
}

impl Suspicions {
    /// Takes foca's current view; returns the suspects held at one incarnation for `timeout`
    /// or longer, which the caller declares down. A refutation (a new incarnation) restarts
    /// the clock; a member no longer suspect is forgotten.
    pub fn expired(
        &mut self,
        view: impl Iterator<Item = (Member, State, u16)>,
        now: Duration,
        timeout: Duration,
    ) -> Vec<(Member, u16)> {
        let mut seen = HashMap::with_capacity(self.since.len());
        for (member, state, incarnation) in view {
            if state != State::Suspect {
                continue;
            }
            let since = match self.since.get(&member) {
                Some(&(inc, at)) if inc == incarnation => at,
                _ => now,
            };
            seen.insert(member, (incarnation, since));
        }
        self.since = seen;
        self.since
            .iter()
            .filter(|(_, &(_, at))| now.saturating_sub(at) >= timeout)
            .map(|(&member, &(incarnation, _))| (member, incarnation))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.since.len()
    }

    pub fn is_empty(&self) -> bool {
        self.since.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn member(i: u8) -> Member {
        Member {
            addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 7946),
            id: NodeId([i; 16]),
            gen: 0,
        }
    }

    const T: Duration = Duration::from_secs(10);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_suspect_held_for_the_timeout_expires() {
        let mut s = Suspicions::default();
        let view = || [(member(1), State::Suspect, 0), (member(2), State::Alive, 0)].into_iter();
        assert!(s.expired(view(), secs(100), T).is_empty());
        assert!(s.expired(view(), secs(109), T).is_empty());
        assert_eq!(s.expired(view(), secs(110), T), vec![(member(1), 0)]);
    }

    #[test]
    fn a_refutation_restarts_the_clock() {
        let mut s = Suspicions::default();
        s.expired([(member(1), State::Suspect, 0)].into_iter(), secs(0), T);
        // Refuted (incarnation 1), then suspected again at that incarnation.
        let again = s.expired([(member(1), State::Suspect, 1)].into_iter(), secs(8), T);
        assert!(again.is_empty());
        let later = s.expired([(member(1), State::Suspect, 1)].into_iter(), secs(12), T);
        assert!(later.is_empty(), "only 4 s at incarnation 1");
        let due = s.expired([(member(1), State::Suspect, 1)].into_iter(), secs(18), T);
        assert_eq!(due, vec![(member(1), 1)]);
    }

    #[test]
    fn a_member_seen_alive_in_between_is_forgotten() {
        let mut s = Suspicions::default();
        s.expired([(member(1), State::Suspect, 0)].into_iter(), secs(0), T);
        s.expired([(member(1), State::Alive, 0)].into_iter(), secs(5), T);
        assert!(s.is_empty());
        let back = s.expired([(member(1), State::Suspect, 0)].into_iter(), secs(11), T);
        assert!(back.is_empty(), "the clock starts again at 11 s");
    }

    #[test]
    fn down_members_are_not_tracked() {
        let mut s = Suspicions::default();
        s.expired([(member(1), State::Down, 0)].into_iter(), secs(0), T);
        assert_eq!(s.len(), 0);
    }
}
