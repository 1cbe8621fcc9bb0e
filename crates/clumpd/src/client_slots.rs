//! How many local API connections each caller may hold. Every connection is a thread that may
//! wait for ever (`watch`, `wait`, an attached job), and the socket is open to every local user:
//! one total bound would let one user take every slot and lock out root, `clump` and the status
//! screen. So users share a pool, each holds at most a few of it, and root has its own.

use std::collections::HashMap;
use std::sync::Mutex;

/// Connections all users other than root hold together at most.
pub const USERS: usize = 32;
/// Connections one user other than root holds at most.
pub const PER_USER: usize = 8;
/// Connections root holds at most (the screen holds two).
pub const ROOT: usize = 16;

/// The slots in use, by uid (`None`: a caller whose uid `SO_PEERCRED` could not tell, counted
/// as a user).
#[derive(Debug, Default)]
pub struct ClientSlots {
    held: Mutex<HashMap<Option<u32>, usize>>,
}

impl ClientSlots {
    /// Takes a slot for `uid`; false when it may hold no more now.
    pub fn take(&self, uid: Option<u32>) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.get(&uid).copied().unwrap_or(0);
        let allowed = if uid == Some(0) {
            mine < ROOT
        } else {
            let users: usize = held.iter().filter(|(u, _)| **u != Some(0)).map(|(_, n)| n).sum();
            mine < PER_USER && users < USERS
        };
        if allowed {
            held.insert(uid, mine + 1);
        }
        allowed
    }

    /// Gives back a slot [`ClientSlots::take`] gave `uid`.
    pub fn give(&self, uid: Option<u32>) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_cannot_lock_out_root_or_the_others() {
        let slots = ClientSlots::default();
        for _ in 0..PER_USER {
            assert!(slots.take(Some(1000)));
        }
        assert!(!slots.take(Some(1000)), "one user holds at most {PER_USER}");
        assert!(slots.take(Some(1001)), "another user still gets one");
        for _ in 0..ROOT {
            assert!(slots.take(Some(0)), "root has its own slots");
        }
        assert!(!slots.take(Some(0)));
        slots.give(Some(1000));
        assert!(slots.take(Some(1000)), "a slot given back is free again");
    }

    #[test]
    fn users_together_are_bounded() {
        let slots = ClientSlots::default();
        let mut taken = 0;
        for uid in 1000..1100 {
            if slots.take(Some(uid)) {
                taken += 1;
            }
            if slots.take(None) {
                taken += 1;
            }
        }
        assert_eq!(taken, USERS);
        assert!(slots.take(Some(0)));
    }
}
