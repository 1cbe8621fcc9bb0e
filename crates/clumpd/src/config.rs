//! The `clump.*` options of the kernel command line that the runtime reads.

use clump_api::NodeChange;
use std::time::Duration;

pub const DEFAULT_PORT: u16 = 7171;
pub const DEFAULT_PROBE_CAP: usize = 1024;
pub const DEFAULT_PROBE_RATE: u32 = 1000;
/// How often a job away from home is checkpointed to its home unless the command line says
/// otherwise (`clump.checkpoint=on` is this too).
pub const DEFAULT_CHECKPOINT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub port: u16,
    /// How many addresses the ARP sweep asks at most; 0 turns the sweep off.
    pub probe_cap: usize,
    /// ARP frames per second at most.
    pub probe_rate: u32,
    /// How long the sweep waits for late replies after its last frame.
    pub probe_linger: Duration,
    /// A speed figure that replaces the measurement (`clump.speed=`).
    pub speed: Option<u32>,
    /// Guest policy and balancer settings: `clump.block=1`, `clump.window=20:00-07:00`,
    /// `clump.balance=off`, `clump.balance.NAME=VALUE` (checked when applied).
    pub control: Vec<clump_api::NodeChange>,
    /// How often jobs running here for another home are checkpointed there
    /// (`clump.checkpoint=SECONDS|off`); `None`: never.
    pub checkpoint: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            probe_cap: DEFAULT_PROBE_CAP,
            probe_rate: DEFAULT_PROBE_RATE,
            probe_linger: Duration::from_millis(500),
            speed: None,
            control: Vec::new(),
            checkpoint: Some(DEFAULT_CHECKPOINT),
        }
    }
}

impl Options {
    /// Reads the options from a kernel command line; a bad value is reported and ignored.
    pub fn from_cmdline(cmdline: &str) -> (Self, Vec<String>) {
        let mut options = Self::default();
        let mut problems = Vec::new();
        for arg in cmdline.split_ascii_whitespace() {
            let Some((name, value)) = arg.split_once('=') else {
                continue;
            };
            let bad = |problems: &mut Vec<String>| {
                problems.push(format!("ignoring {name}={value}: not a valid value"))
            };
            match name {
                "clump.port" => match value.parse::<u16>() {
                    Ok(p) if p > 0 => options.port = p,
                    _ => bad(&mut problems),
                },
                "clump.probe" => match value {
                    "off" | "0" => options.probe_cap = 0,
                    "on" => options.probe_cap = DEFAULT_PROBE_CAP,
                    n => match n.parse::<usize>() {
                        Ok(cap) if cap <= 1 << 20 => options.probe_cap = cap,
                        _ => bad(&mut problems),
                    },
                },
                "clump.probe_rate" => match value.parse::<u32>() {
                    Ok(r) if (1..=100_000).contains(&r) => options.probe_rate = r,
                    _ => bad(&mut problems),
                },
                "clump.speed" => match value.parse::<u32>() {
                    Ok(s) if (1..=1_000_000).contains(&s) => options.speed = Some(s),
                    _ => bad(&mut problems),
                },
                "clump.block" => match value {
                    "1" | "on" | "yes" => options.control.push(NodeChange::Block(true)),
                    "0" | "off" | "no" => {}
                    _ => bad(&mut problems),
                },
                "clump.checkpoint" => match value {
                    "off" | "0" => options.checkpoint = None,
                    "on" => options.checkpoint = Some(DEFAULT_CHECKPOINT),
                    n => match n.parse::<u64>() {
                        Ok(s) if (1..=86_400).contains(&s) => {
                            options.checkpoint = Some(Duration::from_secs(s))
                        }
                        _ => bad(&mut problems),
                    },
                },
                "clump.window" => options.control.push(NodeChange::Window(Some(value.into()))),
                "clump.balance" => options.control.push(NodeChange::Knob {
                    name: "balancer".into(),
                    value: value.into(),
                }),
                _ => {
                    if let Some(knob) = name.strip_prefix("clump.balance.") {
                        options.control.push(NodeChange::Knob {
                            name: knob.into(),
                            value: value.into(),
                        });
                    }
                }
            }
        }
        (options, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_options() {
        let (o, problems) = Options::from_cmdline("console=ttyS0 quiet clump.key=00");
        assert_eq!(o, Options::default());
        assert!(problems.is_empty());
    }

    #[test]
    fn reads_every_option() {
        let (o, problems) = Options::from_cmdline(
            "clump.port=9000 clump.probe=256 clump.probe_rate=50 clump.speed=1500 clump.checkpoint=15",
        );
        assert_eq!(
            (o.port, o.probe_cap, o.probe_rate, o.speed, o.checkpoint),
            (9000, 256, 50, Some(1500), Some(Duration::from_secs(15)))
        );
        assert!(problems.is_empty());
        assert_eq!(Options::from_cmdline("clump.probe=off").0.probe_cap, 0);
        assert_eq!(Options::from_cmdline("clump.checkpoint=off").0.checkpoint, None);
        assert_eq!(Options::from_cmdline("").0.checkpoint, Some(DEFAULT_CHECKPOINT));
        assert_eq!(
            Options::from_cmdline("clump.checkpoint=on").0.checkpoint,
            Some(DEFAULT_CHECKPOINT)
        );
    }

    #[test]
    fn guest_policy_and_balancer_options_are_collected_in_order() {
        let (o, problems) = Options::from_cmdline(
            "clump.block=1 clump.window=20:00-07:00 clump.balance=off clump.balance.stability=1500",
        );
        assert!(problems.is_empty());
        assert_eq!(
            o.control,
            [
                NodeChange::Block(true),
                NodeChange::Window(Some("20:00-07:00".into())),
                NodeChange::Knob {
                    name: "balancer".into(),
                    value: "off".into()
                },
                NodeChange::Knob {
                    name: "stability".into(),
                    value: "1500".into()
                },
            ]
        );
    }

    #[test]
    fn bad_values_are_reported_and_ignored() {
        let (o, problems) = Options::from_cmdline(
            "clump.port=0 clump.probe=-1 clump.probe_rate=0 clump.speed=x clump.checkpoint=-5",
        );
        assert_eq!(o, Options::default());
        assert_eq!(problems.len(), 5, "{problems:?}");
    }
}
