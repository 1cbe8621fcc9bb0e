//! Network faults in a lab (issue 8, "Faults"): packet loss, delay jitter and a partition of one
//! node, each on that node's own link and nowhere else.
//!
//! `tc netem` would be the usual tool, but the kernels this project runs on may lack `sch_netem`
//! (the development host's has no such module), so each fault uses what a stock kernel and QEMU
//! have:
//!
//! - **Loss** ([`Lab::set_loss`]): an nftables rule in the lab's namespace, family `bridge`, hook
//!   `prerouting`, drops the given share of the frames *the node sends* into the bridge (`iifname
//!   "tapN" numgen random mod 10000 < N drop`, with a counter). A frame between two nodes passes
//!   that rule once, at its sender's tap, so 5 % on every node is 5 % per frame end to end, as
//!   `netem loss 5%` on each port's egress would give. ARP and DHCP frames are lost alike.
//! - **Jitter** ([`Node::set_jitter`]): QEMU's `filter-buffer` netfilter object on each of the
//!   node's netdevs (added and removed over QMP, no restart), on the queue of the frames the guest
//!   sends. It holds them and releases all it holds every `interval`, so each frame waits between
//!   0 and `interval` (uniform, mean half of it), in order: delay that varies from frame to frame,
//!   never reordering within one node's traffic.
//! - **Partition** ([`Lab::partition`], [`Lab::heal`]): the node's taps leave the bridge (`ip link
//!   set tapN nomaster`) and come back. The guest keeps its carrier (as behind a switch whose
//!   uplink broke) and sees no frame of the others meanwhile; nothing in it restarts.
//! - **Blocked UDP port** ([`Lab::block_udp`], [`Lab::unblock_udp`]): nftables rules in the
//!   lab's namespace drop the UDP datagrams to one port that the node sends or is sent, and
//!   nothing else: with the cluster's gossip port, every other node declares the node dead while
//!   its TCP streams (jobs, moves) go on, as a gossip that misjudges a live node would.
//!
//! Every command runs inside the lab's namespace only: the host's own network is never touched.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::lab::{Lab, BRIDGE};
use crate::node::Node;
use crate::spec::NetBackend;

/// The nftables table the lab's loss rules live in (family `bridge`, in the lab's namespace).
pub const FAULT_TABLE: &str = "clump_faults";
/// The nftables table of [`Lab::block_udp`] (family `bridge`, in the lab's namespace).
pub const BLOCK_TABLE: &str = "clump_blocks";
/// Loss is set in hundredths of a percent (`numgen random mod 10000`).
const LOSS_SCALE: u32 = 10_000;
/// `filter-buffer` objects the lab adds are named `<prefix><netdev id>`.
const JITTER_PREFIX: &str = "clump-jitter-";

/// The loss a lab has set, by tap, and the frames it dropped before the table was last
/// replaced (replacing it starts its counters at 0).
#[derive(Debug, Default)]
pub(crate) struct Faults {
    losses: BTreeMap<String, Loss>,
    dropped_before: BTreeMap<String, u64>,
}

impl Faults {
    fn any_loss(&self) -> bool {
        self.losses.values().any(|l| l.0 > 0)
    }
}

/// A share of frames to drop, in hundredths of a percent (0..=10000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loss(u32);

impl Loss {
    /// `percent` % of the frames (0 to 100; rounded to hundredths of a percent).
    pub fn percent(percent: f64) -> Result<Loss> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(Error::Spec(format!(
                "a loss of {percent} % is not between 0 and 100 %"
            )));
        }
        Ok(Loss((percent * 100.0).round() as u32))
    }

    /// The share in hundredths of a percent.
    pub fn hundredths(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02} %", self.0 / 100, self.0 % 100)
    }
}

/// The start of an `nft -f` transaction that drops bridge table `name` whether or not it is
/// there (declaring it first creates it if missing), for the rest to make it anew.
fn replace_table(name: &str) -> String {
    format!("table bridge {name}\ndelete table bridge {name}\n")
}

/// The whole loss table for `losses` (tap name -> share), as one `nft -f` transaction that
/// replaces what was there: the table is declared (created if missing), deleted and made anew, so
/// no frame ever sees half a change. An empty map leaves no table behind.
pub fn loss_ruleset(losses: &BTreeMap<String, Loss>) -> String {
    let mut text = replace_table(FAULT_TABLE);
    let active: Vec<_> = losses.iter().filter(|(_, l)| l.0 > 0).collect();
    if active.is_empty() {
        return text;
    }
    text.push_str(&format!(
        "table bridge {FAULT_TABLE} {{\n  chain loss {{\n    type filter hook prerouting priority -300; policy accept;\n"
    ));
    for (tap, loss) in active {
        text.push_str(&format!(
            "    iifname \"{tap}\" numgen random mod {LOSS_SCALE} < {} counter drop\n",
            loss.0
        ));
    }
    text.push_str("  }\n}\n");
    text
}

/// The rules that drop UDP datagrams to `port` sent from or to `taps`, as one `nft -f`
/// transaction that replaces the table; no taps leave no table behind.
pub fn udp_block_ruleset(taps: &[String], port: u16) -> String {
    let mut text = replace_table(BLOCK_TABLE);
    if taps.is_empty() {
        return text;
    }
    let (mut from, mut to) = (String::new(), String::new());
    for tap in taps {
        from.push_str(&format!("    iifname \"{tap}\" udp dport {port} counter drop\n"));
        // A broadcast is flooded to each port through `forward`, once per port.
        to.push_str(&format!("    oifname \"{tap}\" udp dport {port} counter drop\n"));
    }
    text.push_str(&format!(
        "table bridge {BLOCK_TABLE} {{\n  chain from_node {{\n    type filter hook prerouting priority -300; policy accept;\n{from}  }}\n  chain to_node {{\n    type filter hook forward priority -300; policy accept;\n{to}  }}\n}}\n"
    ));
    text
}

/// Frames dropped so far per tap, from `nft -j list table bridge clump_faults`.
pub fn parse_drop_counters(json_text: &str) -> Result<BTreeMap<String, u64>> {
    let value: Value = serde_json::from_str(json_text)
        .map_err(|e| Error::Spec(format!("nft printed JSON that does not parse: {e}")))?;
    let mut counters = BTreeMap::new();
    let items = value["nftables"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for rule in items.iter().filter_map(|i| i.get("rule")) {
        let exprs = rule["expr"].as_array().map(Vec::as_slice).unwrap_or_default();
        let tap = exprs.iter().find_map(|e| {
            let m = e.get("match")?;
            (m["left"]["meta"]["key"] == "iifname").then(|| m["right"].as_str())?
        });
        let packets = exprs
            .iter()
            .find_map(|e| e.get("counter")?.get("packets")?.as_u64());
        if let (Some(tap), Some(packets)) = (tap, packets) {
            *counters.entry(tap.to_owned()).or_default() += packets;
        }
    }
    Ok(counters)
}

/// QMP arguments of the `filter-buffer` that delays the frames netdev `netdev` takes from the
/// guest by 0 to `max` (QEMU's `interval` is in microseconds and must be at least 1).
pub fn jitter_object(netdev: &str, max: Duration) -> Value {
    let interval = u64::try_from(max.as_micros()).unwrap_or(u64::MAX).max(1);
    json!({
        "qom-type": "filter-buffer",
        "id": format!("{JITTER_PREFIX}{netdev}"),
        "netdev": netdev,
        // "rx": the netdev's receive queue, where what the guest's NIC sends arrives.
        "queue": "rx",
        "interval": interval,
    })
}

/// The tap names of `node`'s NICs (lab nodes have only taps).
fn taps(node: &Node) -> Vec<String> {
    node.spec()
        .nics
        .iter()
        .filter_map(|nic| match &nic.backend {
            NetBackend::Tap { ifname, .. } => Some(ifname.clone()),
            NetBackend::Isolated => None,
        })
        .collect()
}

impl Lab {
    /// Drops `loss` of the frames node `index` sends (on each of its taps); [`Loss::percent`]`(0.0)`
    /// ends it. Needs `nft` (Debian's nftables package) and nftables' bridge family in the kernel.
    pub fn set_loss(&mut self, index: usize, loss: Loss) -> Result<()> {
        let taps = taps(self.node(index)?);
        let mut losses = self.faults().losses.clone();
        for tap in taps {
            losses.insert(tap, loss);
        }
        // The new table's counters start at 0: what the old one counted is kept first.
        let counted = self.drop_counters()?;
        self.nft(&["-f", "-"], Some(&loss_ruleset(&losses)))?;
        let faults = self.faults_mut();
        faults.losses = losses;
        for (tap, n) in counted {
            *faults.dropped_before.entry(tap).or_default() += n;
        }
        tracing::info!(node = index, %loss, "loss set");
        Ok(())
    }

    /// Frames dropped from node `index`'s taps by [`Lab::set_loss`] since the lab started.
    pub fn dropped(&mut self, index: usize) -> Result<u64> {
        let taps = taps(self.node(index)?);
        let now = self.drop_counters()?;
        let before = &self.faults().dropped_before;
        Ok(taps
            .iter()
            .map(|t| now.get(t).copied().unwrap_or(0) + before.get(t).copied().unwrap_or(0))
            .sum())
    }

    /// The counters of the loss table as it is (none without loss).
    fn drop_counters(&self) -> Result<BTreeMap<String, u64>> {
        if !self.faults().any_loss() {
            return Ok(BTreeMap::new());
        }
        let text = self.nft(&["-j", "list", "table", "bridge", FAULT_TABLE], None)?;
        parse_drop_counters(&text)
    }

    /// Cuts node `index` off: its taps leave the bridge. The node runs on and keeps its carrier.
    pub fn partition(&mut self, index: usize) -> Result<()> {
        for tap in taps(self.node(index)?) {
            self.ip_in_netns(&["link", "set", &tap, "nomaster"])?;
        }
        tracing::info!(node = index, "partitioned");
        Ok(())
    }

    /// Ends [`Lab::partition`]: the taps of node `index` are on the bridge again (forwarding at
    /// once: the lab's bridge runs no STP).
    pub fn heal(&mut self, index: usize) -> Result<()> {
        for tap in taps(self.node(index)?) {
            self.ip_in_netns(&["link", "set", &tap, "master", BRIDGE])?;
            self.ip_in_netns(&["link", "set", &tap, "up"])?;
        }
        tracing::info!(node = index, "partition healed");
        Ok(())
    }

    /// Drops every UDP datagram to `port` that node `index` sends or is sent (one node at a
    /// time); [`Lab::unblock_udp`] ends it.
    pub fn block_udp(&mut self, index: usize, port: u16) -> Result<()> {
        let taps = taps(self.node(index)?);
        self.nft(&["-f", "-"], Some(&udp_block_ruleset(&taps, port)))?;
        tracing::info!(node = index, port, "UDP port blocked");
        Ok(())
    }

    /// Ends [`Lab::block_udp`].
    pub fn unblock_udp(&mut self) -> Result<()> {
        self.nft(&["-f", "-"], Some(&udp_block_ruleset(&[], 0)))?;
        tracing::info!("UDP port unblocked");
        Ok(())
    }

    /// Whether node `index`'s taps are all on the bridge.
    pub fn attached(&mut self, index: usize) -> Result<bool> {
        let taps = taps(self.node(index)?);
        let text = self.ip_in_netns(&["-o", "link", "show", "master", BRIDGE])?;
        let on = crate::lab::link_names(&text);
        Ok(taps.iter().all(|t| on.contains(t)))
    }

    /// Runs `nft ARGS` in the lab's namespace (with `input` on its stdin); fails if it does.
    fn nft(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        if !crate::lab::program_exists("nft") {
            return Err(Error::ToolMissing {
                program: "nft",
                package: "nftables",
            });
        }
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.netns(), "nft"])
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io(format!("running nft in {}", self.netns())))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            std::io::Write::write_all(&mut stdin, text.as_bytes())
                .map_err(Error::io("writing nft's rules"))?;
        }
        let output = child.wait_with_output().map_err(Error::io("waiting for nft"))?;
        if !output.status.success() {
            return Err(Error::Command {
                command: format!("nft {} (in {})", args.join(" "), self.netns()),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Node {
    /// Delays every frame the node sends by 0 to `max` (QEMU's `filter-buffer` on each netdev,
    /// added over QMP); a second call replaces the first. [`Node::clear_jitter`] ends it.
    pub fn set_jitter(&mut self, max: Duration) -> Result<()> {
        self.clear_jitter()?;
        for netdev in self.netdev_ids() {
            self.qmp()
                .execute("object-add", Some(jitter_object(&netdev, max)))?;
        }
        tracing::info!(node = %self.name(), max_ms = max.as_millis(), "jitter set");
        Ok(())
    }

    /// Removes what [`Node::set_jitter`] added (frames it holds go on at once); nothing to do
    /// without it.
    pub fn clear_jitter(&mut self) -> Result<()> {
        for netdev in self.netdev_ids() {
            let id = format!("{JITTER_PREFIX}{netdev}");
            match self.qmp().execute("object-del", Some(json!({ "id": id }))) {
                Ok(_) => {}
                // Not there: no jitter was set on this netdev.
                Err(Error::QmpCommand { desc, .. }) if desc.contains("not found") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// QEMU's ids of the node's netdevs (`net0`, `net1`, ... in NIC order).
    fn netdev_ids(&self) -> Vec<String> {
        (0..self.spec().nics.len())
            .map(crate::qemu_args::netdev_id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_kept_in_hundredths_of_a_percent_and_bounded() {
        assert_eq!(Loss::percent(5.0).unwrap().hundredths(), 500);
        assert_eq!(Loss::percent(0.25).unwrap().to_string(), "0.25 %");
        assert_eq!(Loss::percent(100.0).unwrap().hundredths(), LOSS_SCALE);
        assert!(Loss::percent(-1.0).is_err());
        assert!(Loss::percent(100.5).is_err());
        assert!(Loss::percent(f64::NAN).is_err());
    }

    #[test]
    fn the_ruleset_replaces_the_table_whole_and_drops_only_what_each_node_sends() {
        let mut losses = BTreeMap::new();
        losses.insert("tap0".to_owned(), Loss::percent(5.0).unwrap());
        losses.insert("tap1".to_owned(), Loss::percent(0.0).unwrap());
        losses.insert("tap2".to_owned(), Loss::percent(12.5).unwrap());
        let text = loss_ruleset(&losses);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(lines[0], "table bridge clump_faults");
        assert_eq!(lines[1], "delete table bridge clump_faults");
        assert!(text.contains("type filter hook prerouting priority -300; policy accept;"));
        assert!(text.contains("iifname \"tap0\" numgen random mod 10000 < 500 counter drop"));
        assert!(text.contains("iifname \"tap2\" numgen random mod 10000 < 1250 counter drop"));
        assert!(!text.contains("tap1"), "a node without loss has no rule:\n{text}");

        let none = loss_ruleset(&BTreeMap::new());
        assert_eq!(
            none,
            "table bridge clump_faults\ndelete table bridge clump_faults\n"
        );
    }

    #[test]
    fn a_udp_block_drops_one_port_both_ways_and_goes_away_whole() {
        let text = udp_block_ruleset(&["tap1".to_owned()], 7171);
        assert!(text.starts_with("table bridge clump_blocks\ndelete table bridge clump_blocks\n"));
        assert!(text.contains("hook prerouting") && text.contains("hook forward"));
        assert!(text.contains("iifname \"tap1\" udp dport 7171 counter drop"));
        assert!(text.contains("oifname \"tap1\" udp dport 7171 counter drop"));
        assert_eq!(
            udp_block_ruleset(&[], 7171),
            "table bridge clump_blocks\ndelete table bridge clump_blocks\n"
        );
    }

    #[test]
    fn drop_counters_are_read_per_tap_from_nft_json() {
        // What `nft -j list table bridge clump_faults` printed on the development host (1.0.6).
        let text = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
          {"table": {"family": "bridge", "name": "clump_faults", "handle": 1}},
          {"chain": {"family": "bridge", "table": "clump_faults", "name": "loss", "handle": 1,
            "type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept"}},
          {"rule": {"family": "bridge", "table": "clump_faults", "chain": "loss", "handle": 2,
            "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "tap0"}},
                     {"match": {"op": "<", "left": {"numgen": {"mode": "random", "mod": 10000, "offset": 0}}, "right": 500}},
                     {"counter": {"packets": 17, "bytes": 2040}}, {"drop": null}]}},
          {"rule": {"family": "bridge", "table": "clump_faults", "chain": "loss", "handle": 3,
            "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "tap2"}},
                     {"match": {"op": "<", "left": {"numgen": {"mode": "random", "mod": 10000, "offset": 0}}, "right": 500}},
                     {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}}]}"#;
        let counters = parse_drop_counters(text).unwrap();
        assert_eq!(counters.get("tap0"), Some(&17));
        assert_eq!(counters.get("tap2"), Some(&0));
        assert_eq!(counters.len(), 2);
        assert!(parse_drop_counters("not json").is_err());
        assert!(parse_drop_counters("{}").unwrap().is_empty());
    }

    #[test]
    fn jitter_is_a_filter_buffer_on_the_guest_s_outgoing_queue_in_microseconds() {
        let obj = jitter_object("net0", Duration::from_millis(100));
        assert_eq!(obj["qom-type"], "filter-buffer");
        assert_eq!(obj["id"], "clump-jitter-net0");
        assert_eq!(obj["netdev"], "net0");
        assert_eq!(obj["queue"], "rx");
        assert_eq!(obj["interval"], 100_000);
        // QEMU refuses an interval of 0.
        assert_eq!(jitter_object("net1", Duration::ZERO)["interval"], 1);
    }
}
