//! How this node takes guests: blocked, draining (by hand or for a shutdown), its after-hours
//! window; and whether its balancer runs. The daemon publishes it in the node's record, the
//! balancer acts on it, `clump node` changes it.

use clump_balance::{Policy, Window, WindowState};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct Control {
    pub blocked: bool,
    /// `clump node drain`.
    pub draining: bool,
    /// The daemon was asked to stop: guests leave first.
    pub stopping: bool,
    pub window: Option<Window>,
    /// Minutes before the window's end that guests start leaving.
    pub window_lead: u32,
    pub balancer: bool,
    pub policy: Policy,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            blocked: false,
            draining: false,
            stopping: false,
            window: None,
            window_lead: clump_balance::window::DEFAULT_LEAD_MIN,
            balancer: true,
            policy: Policy::default(),
        }
    }
}

/// Minutes since midnight on the node's clock (UTC: the image has no time zone).
pub fn minute_of_day(now: SystemTime) -> u32 {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    ((secs / 60) % (24 * 60)) as u32
}

impl Control {
    pub fn window_state(&self, minute: u32) -> Option<WindowState> {
        self.window.map(|w| w.state(minute, self.window_lead))
    }

    /// Guests must leave: drained by hand, stopping, or the window ends or has ended.
    pub fn sends_guests_away(&self, minute: u32) -> bool {
        self.draining
            || self.stopping
            || matches!(
                self.window_state(minute),
                Some(WindowState::Closing | WindowState::Closed)
            )
    }

    pub fn accepts_guests(&self, minute: u32) -> bool {
        !self.blocked && !self.sends_guests_away(minute)
    }

    /// Draining is what the others see as "leaving"; blocked is the rest of not taking guests.
    pub fn flags(&self, minute: u32) -> u8 {
        use clump_cluster::record::{FLAG_BLOCKED, FLAG_DRAINING};
        let mut flags = 0;
        if self.draining || self.stopping {
            flags |= FLAG_DRAINING;
        }
        if !self.accepts_guests(minute) {
            flags |= FLAG_BLOCKED;
        }
        flags
    }

    /// A change from `clump node` (or the command line); the error says what is wrong.
    pub fn apply(&mut self, change: &clump_api::NodeChange) -> Result<(), String> {
        use clump_api::NodeChange;
        match change {
            NodeChange::Block(on) => self.blocked = *on,
            NodeChange::Drain(on) => self.draining = *on,
            NodeChange::Window(None) => self.window = None,
            NodeChange::Window(Some(text)) => self.window = Some(Window::parse(text)?),
            NodeChange::Knob { name, value } if name == "balancer" => {
                self.balancer = match value.as_str() {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("balancer takes on or off, not {other:?}")),
                }
            }
            NodeChange::Knob { name, value } => self.policy.set(name, value)?,
        }
        Ok(())
    }

    pub fn report(&self, minute: u32, guests: u32) -> clump_api::NodeControl {
        clump_api::NodeControl {
            blocked: self.blocked,
            draining: self.draining || self.stopping,
            window: self.window.map(|w| w.to_string()),
            window_state: self.window_state(minute).map(|s| {
                match s {
                    WindowState::Open => "open",
                    WindowState::Closing => "closing",
                    WindowState::Closed => "closed",
                }
                .to_string()
            }),
            accepts_guests: self.accepts_guests(minute),
            guests,
            balancer: self.balancer,
            knobs: self
                .policy
                .knobs()
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clump_api::NodeChange;
    use clump_cluster::record::{FLAG_BLOCKED, FLAG_DRAINING};

    #[test]
    fn block_drain_and_window_set_the_flags_others_see() {
        let mut c = Control::default();
        assert_eq!(c.flags(600), 0);
        c.apply(&NodeChange::Block(true)).unwrap();
        assert_eq!(c.flags(600), FLAG_BLOCKED);
        c.apply(&NodeChange::Block(false)).unwrap();
        c.apply(&NodeChange::Drain(true)).unwrap();
        assert_eq!(c.flags(600), FLAG_DRAINING | FLAG_BLOCKED);
        c.apply(&NodeChange::Drain(false)).unwrap();
        c.apply(&NodeChange::Window(Some("20:00-07:00".into()))).unwrap();
        // 10:00 is outside: no guests, and those here leave.
        assert!(!c.accepts_guests(600) && c.sends_guests_away(600));
        assert_eq!(c.flags(600), FLAG_BLOCKED);
        assert!(c.accepts_guests(23 * 60));
        assert!(c.apply(&NodeChange::Window(Some("later".into()))).is_err());
        c.apply(&NodeChange::Knob {
            name: "balancer".into(),
            value: "off".into(),
        })
        .unwrap();
        assert!(!c.balancer);
        assert!(c
            .apply(&NodeChange::Knob {
                name: "stability".into(),
                value: "1".into()
            })
            .is_err());
        let r = c.report(600, 2);
        assert_eq!(r.window.as_deref(), Some("20:00-07:00"));
        assert_eq!(r.window_state.as_deref(), Some("closed"));
        assert_eq!(r.guests, 2);
    }
}
