//! The N-node lab: nodes on one bridge inside a network namespace the lab creates, with dnsmasq as
//! DHCP (and TFTP, for PXE) server on that bridge, and no uplink.
//!
//! Nothing of the lab is visible from the host's own network: the bridge, the taps and dnsmasq live in
//! the namespace `clump-lab-<pid>-<n>`, and QEMU runs there (`ip netns exec`). The host side of the
//! lab is the bridge's address (the gateway, `.1`), reached with [`Lab::exec`] (a command run in
//! the namespace). Each lab gets its own /24 in 10.64.0.0/10, derived from the pid and a counter,
//! so that labs running in parallel do not share addresses even in their logs.
//!
//! Teardown: dropping the [`Lab`] kills the nodes' QEMUs and dnsmasq (process groups) and deletes the
//! namespace, which destroys the bridge and the taps with it; this also happens while a panic
//! unwinds. If the lab process is killed outright, the kernel kills QEMU and dnsmasq (parent-death
//! signal) and the next [`Lab::start`] deletes namespaces left by labs whose process is gone.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{Error, Result};
use crate::node::{shell_quote, Node};
use crate::process::Process;
use crate::spec::{Mac, NetBackend, NodeSpec};

/// Prefix of every namespace a lab creates.
pub const NETNS_PREFIX: &str = "clump-lab-";
/// The bridge inside the namespace.
pub const BRIDGE: &str = "br0";
/// How long dnsmasq may take to bind its sockets.
const DNSMASQ_STARTUP: Duration = Duration::from_secs(10);
/// How long dnsmasq may take to exit after SIGTERM before it is killed.
const DNSMASQ_STOP: Duration = Duration::from_secs(5);
/// Lines of dnsmasq's log quoted in errors.
const TAIL_LINES: usize = 30;
/// dnsmasq's shortest lease.
pub const MIN_LEASE: Duration = Duration::from_secs(120);

/// Labs started by this process so far (part of the namespace name and of the subnet).
static LABS: AtomicU32 = AtomicU32::new(0);

/// How a lab is set up.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Where dnsmasq's files and the nodes' workdirs go; a temporary directory (removed with the lab)
    /// when `None`.
    pub workdir: Option<PathBuf>,
    /// dnsmasq's TFTP root for PXE (usually `out/pxe`); no TFTP server when `None`.
    pub tftp_root: Option<PathBuf>,
    /// DHCP lease time (dnsmasq's minimum is 2 minutes).
    pub lease_time: Duration,
    /// Whether [`Lab::start`] starts dnsmasq (tests of a network without a server say no).
    pub dhcp: bool,
}

impl Default for LabConfig {
    fn default() -> Self {
        Self {
            workdir: None,
            tftp_root: None,
            lease_time: Duration::from_secs(3600),
            dhcp: true,
        }
    }
}

/// The lab's IPv4 network: a /24 whose `.1` is the bridge (gateway and DHCP server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    base: [u8; 3],
}

impl Subnet {
    /// Prefix length of every lab network.
    pub const PREFIX_LEN: u8 = 24;

    /// A /24 in 10.64.0.0/10 for lab number `n` of process `pid`: distinct for up to 16384
    /// (pid, n) pairs that differ in `pid * 8 + n` modulo 2^14.
    pub fn derived(pid: u32, n: u32) -> Subnet {
        let k = pid.wrapping_mul(8).wrapping_add(n) % (1 << 14);
        let [_, _, hi, lo] = k.to_be_bytes();
        Subnet {
            base: [10, 64 + hi, lo],
        }
    }

    /// The network address (`a.b.c.0`).
    pub fn network(self) -> Ipv4Addr {
        self.host(0)
    }

    /// The bridge's address: gateway, DHCP and TFTP server.
    pub fn gateway(self) -> Ipv4Addr {
        self.host(1)
    }

    /// Address `.n` of the network.
    pub fn host(self, n: u8) -> Ipv4Addr {
        let [a, b, c] = self.base;
        Ipv4Addr::new(a, b, c, n)
    }

    /// The addresses dnsmasq hands out (`.100` to `.199`).
    pub fn dhcp_range(self) -> (Ipv4Addr, Ipv4Addr) {
        (self.host(100), self.host(199))
    }

    /// Whether `addr` is in this network.
    pub fn contains(self, addr: Ipv4Addr) -> bool {
        addr.octets()[..3] == self.base
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network(), Self::PREFIX_LEN)
    }
}

/// One line of dnsmasq's lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpLease {
    /// Expiry time (seconds since the epoch).
    pub expires: u64,
    pub mac: Mac,
    pub address: Ipv4Addr,
    /// The host name the client sent, if any.
    pub hostname: Option<String>,
}

/// Parses dnsmasq's lease file (`<expiry> <mac> <ip> <hostname|*> <client-id|*>` per line); lines
/// that do not parse (e.g. a DUID line) are skipped.
pub fn parse_leases(text: &str) -> Vec<DhcpLease> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let expires = fields.next()?.parse().ok()?;
            let mac = parse_mac(fields.next()?)?;
            let address = fields.next()?.parse().ok()?;
            let hostname = fields.next().filter(|h| *h != "*").map(str::to_owned);
            Some(DhcpLease {
                expires,
                mac,
                address,
                hostname,
            })
        })
        .collect()
}

fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(Mac(mac))
}

/// The lab's files.
#[derive(Debug, Clone)]
pub struct LabLayout {
    pub dir: PathBuf,
    /// dnsmasq's lease file.
    pub leases: PathBuf,
    /// dnsmasq's log (its stderr under `--no-daemon`, with `--log-dhcp`).
    pub dnsmasq_log: PathBuf,
    /// dnsmasq's pid file.
    pub dnsmasq_pid: PathBuf,
}

impl LabLayout {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            leases: dir.join("dnsmasq.leases"),
            dnsmasq_log: dir.join("dnsmasq.log"),
            dnsmasq_pid: dir.join("dnsmasq.pid"),
        }
    }
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: &str) -> Result<Netns> {
        ip(&["netns", "add", name])?;
        Ok(Netns {
            name: name.to_owned(),
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            tracing::error!(netns = %self.name, "could not delete the lab's network namespace: {e}");
        } else {
            tracing::debug!(netns = %self.name, "network namespace deleted");
        }
    }
}

/// A running lab. Field order is drop order: nodes, then dnsmasq, then the namespace.
#[derive(Debug)]
pub struct Lab {
    nodes: Vec<Node>,
    dnsmasq: Option<Process>,
    netns: Netns,
    subnet: Subnet,
    layout: LabLayout,
    config: LabConfig,
    taps: usize,
    /// Loss set with [`Lab::set_loss`] and its counts (see `netfault.rs`).
    faults: crate::netfault::Faults,
    _tempdir: Option<TempDir>,
}

impl Lab {
    /// Creates the namespace with its bridge and, unless `config.dhcp` is off, starts dnsmasq.
    /// Fails (never degrades) without root, `ip` or dnsmasq.
    pub fn start(config: LabConfig) -> Result<Lab> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::NotRoot);
        }
        for (program, package) in [("ip", "iproute2"), ("dnsmasq", "dnsmasq-base")] {
            if !program_exists(program) {
                return Err(Error::ToolMissing { program, package });
            }
        }
        if config.lease_time < MIN_LEASE {
            return Err(Error::Spec(format!(
                "lease time {} s is below dnsmasq's minimum of {} s",
                config.lease_time.as_secs(),
                MIN_LEASE.as_secs()
            )));
        }
        if let Some(root) = &config.tftp_root {
            if !root.join("boot.ipxe").is_file() {
                return Err(Error::MissingArtefact {
                    path: root.join("boot.ipxe"),
                    hint: "./build.sh pxe",
                });
            }
        }
        remove_stale_namespaces();

        let pid = std::process::id();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NETNS_PREFIX}{pid}-{n}");
        let subnet = Subnet::derived(pid, n);

        let (dir, tempdir) = match &config.workdir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
                (dir.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("clump-lab-")
                    .tempdir()
                    .map_err(Error::io("creating a temporary lab directory"))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let dir = std::path::absolute(&dir).map_err(Error::io(format!("resolving {}", dir.display())))?;
        let layout = LabLayout::new(&dir);
        for stale in [&layout.leases, &layout.dnsmasq_log, &layout.dnsmasq_pid] {
            match std::fs::remove_file(stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(format!("removing {}", stale.display()))(e))
                }
                _ => {}
            }
        }

        let netns = Netns::create(&name)?;
        let mut lab = Lab {
            nodes: Vec::new(),
            dnsmasq: None,
            netns,
            subnet,
            layout,
            config,
            taps: 0,
            faults: crate::netfault::Faults::default(),
            _tempdir: tempdir,
        };
        let gateway = format!("{}/{}", subnet.gateway(), Subnet::PREFIX_LEN);
        lab.ip(&["link", "set", "lo", "up"])?;
        lab.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        lab.ip(&["addr", "add", &gateway, "dev", BRIDGE])?;
        lab.ip(&["link", "set", BRIDGE, "up"])?;
        if lab.config.dhcp {
            lab.start_dhcp()?;
        }
        tracing::info!(netns = %name, %subnet, dir = %dir.display(), "lab started");
        Ok(lab)
    }

    /// The namespace's name (`clump-lab-<pid>-<n>`).
    pub fn netns(&self) -> &str {
        &self.netns.name
    }

    /// The lab's network.
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The lab's files.
    pub fn layout(&self) -> &LabLayout {
        &self.layout
    }

    /// Starts a node with every NIC of `spec` on the lab's bridge (each on its own tap; whatever
    /// backend the spec named is replaced). Without a workdir in the spec, the node's files go to
    /// `<lab dir>/<node name>/`. Returns the node's index.
    pub fn start_node(&mut self, mut spec: NodeSpec) -> Result<usize> {
        spec.check()?;
        if spec.medium == crate::spec::Medium::Pxe && self.config.tftp_root.is_none() {
            return Err(Error::Spec(format!(
                "node {}: PXE boot needs a lab with a TFTP root (LabConfig::tftp_root)",
                spec.name
            )));
        }
        if spec.nics.is_empty() {
            return Err(Error::Spec(format!("node {}: a lab node needs a NIC", spec.name)));
        }
        for nic in &mut spec.nics {
            let ifname = format!("tap{}", self.taps);
            self.taps += 1;
            self.ip(&["tuntap", "add", "dev", &ifname, "mode", "tap"])?;
            self.ip(&["link", "set", &ifname, "master", BRIDGE])?;
            self.ip(&["link", "set", &ifname, "up"])?;
            nic.backend = NetBackend::Tap {
                netns: self.netns.name.clone(),
                ifname,
            };
        }
        if spec.workdir.is_none() {
            spec.workdir = Some(self.layout.dir.join(&spec.name));
        }
        let node = Node::start(spec)?;
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// The nodes, in the order they were started.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The nodes, to drive them.
    pub fn nodes_mut(&mut self) -> &mut [Node] {
        &mut self.nodes
    }

    /// Node `index`.
    pub fn node(&mut self, index: usize) -> Result<&mut Node> {
        let count = self.nodes.len();
        self.nodes
            .get_mut(index)
            .ok_or_else(|| Error::Spec(format!("the lab has no node {index} ({count} nodes)")))
    }

    /// Starts dnsmasq (DHCP, and TFTP if the lab has a TFTP root) on the bridge and waits until it
    /// has bound its sockets. The lease file survives a restart, so leases are kept.
    pub fn start_dhcp(&mut self) -> Result<()> {
        if self.dhcp_running()? {
            return Ok(());
        }
        let args = dnsmasq_args(
            &self.config,
            self.subnet,
            &self.layout,
            self.config.tftp_root.as_deref(),
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.layout.dnsmasq_log)
            .map_err(Error::io(format!(
                "opening {}",
                self.layout.dnsmasq_log.display()
            )))?;
        let offset = log
            .metadata()
            .map_err(Error::io("reading the dnsmasq log's size"))?
            .len();
        let stderr = log
            .try_clone()
            .map_err(Error::io("duplicating the dnsmasq log"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns.name, "dnsmasq"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        tracing::debug!(
            "starting dnsmasq: ip netns exec {} dnsmasq {}",
            self.netns.name,
            args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
        );
        let mut process = Process::spawn(cmd).map_err(Error::io("starting dnsmasq"))?;
        let deadline = Instant::now() + DNSMASQ_STARTUP;
        loop {
            let text = self.dnsmasq_log_since(offset)?;
            if text.contains("DHCP, sockets bound") {
                break;
            }
            if let Some(status) = process.try_wait().map_err(Error::io("checking on dnsmasq"))? {
                return Err(self.dnsmasq_error(format!("exited ({status}) while starting")));
            }
            if Instant::now() >= deadline {
                return Err(self.dnsmasq_error(format!(
                    "did not bind its sockets within {} s",
                    DNSMASQ_STARTUP.as_secs()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(netns = %self.netns.name, pid = process.id(), "dnsmasq started");
        self.dnsmasq = Some(process);
        Ok(())
    }

    /// Stops dnsmasq (SIGTERM, then SIGKILL after a few seconds). Nothing to do if it is not running.
    pub fn stop_dhcp(&mut self) -> Result<()> {
        let Some(mut process) = self.dnsmasq.take() else {
            return Ok(());
        };
        if process
            .try_wait()
            .map_err(Error::io("checking on dnsmasq"))?
            .is_none()
        {
            let pid = i32::try_from(process.id()).map_err(|e| Error::Spec(e.to_string()))?;
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM);
            if process
                .wait_timeout(DNSMASQ_STOP)
                .map_err(Error::io("waiting for dnsmasq"))?
                .is_none()
            {
                tracing::warn!("dnsmasq ignored SIGTERM; killing it");
            }
        }
        process.kill().map_err(Error::io("killing dnsmasq"))?;
        tracing::info!(netns = %self.netns.name, "dnsmasq stopped");
        Ok(())
    }

    /// Stops and starts dnsmasq again.
    pub fn restart_dhcp(&mut self) -> Result<()> {
        self.stop_dhcp()?;
        self.start_dhcp()
    }

    /// Whether dnsmasq is running.
    pub fn dhcp_running(&mut self) -> Result<bool> {
        match self.dnsmasq.as_mut() {
            None => Ok(false),
            Some(p) => Ok(p.try_wait().map_err(Error::io("checking on dnsmasq"))?.is_none()),
        }
    }

    /// dnsmasq's process id, if it is running.
    pub fn dhcp_pid(&mut self) -> Result<Option<u32>> {
        Ok(if self.dhcp_running()? {
            self.dnsmasq.as_ref().map(Process::id)
        } else {
            None
        })
    }

    /// The leases in dnsmasq's lease file (none before the first one).
    pub fn leases(&self) -> Result<Vec<DhcpLease>> {
        match std::fs::read_to_string(&self.layout.leases) {
            Ok(text) => Ok(parse_leases(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io(format!("reading {}", self.layout.leases.display()))(e)),
        }
    }

    /// The lease dnsmasq holds for `mac`, waiting at most `timeout` for it.
    pub fn wait_for_lease(&self, mac: Mac, timeout: Duration) -> Result<DhcpLease> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(lease) = self.leases()?.into_iter().find(|l| l.mac == mac) {
                return Ok(lease);
            }
            if Instant::now() >= deadline {
                return Err(
                    self.dnsmasq_error(format!("no lease for {mac} after {:.1} s", timeout.as_secs_f64()))
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// dnsmasq's whole log (every start of this lab).
    pub fn dnsmasq_log(&self) -> Result<String> {
        self.dnsmasq_log_since(0)
    }

    fn dnsmasq_log_since(&self, offset: u64) -> Result<String> {
        match std::fs::read(&self.layout.dnsmasq_log) {
            Ok(bytes) => {
                let from = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                Ok(String::from_utf8_lossy(&bytes[from..]).into_owned())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(Error::io(format!(
                "reading {}",
                self.layout.dnsmasq_log.display()
            ))(e)),
        }
    }

    fn dnsmasq_error(&self, problem: String) -> Error {
        let log = self.dnsmasq_log().unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        Error::Dnsmasq {
            problem,
            context: format!(
                "--- last {TAIL_LINES} lines of {} ---\n{}",
                self.layout.dnsmasq_log.display(),
                lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
            ),
        }
    }

    /// Runs `program args` inside the lab's namespace (the host side of the bridge) and returns its
    /// output, whatever its exit status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.netns.name, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(Error::io(format!("running {program} in {}", self.netns.name)))
    }

    /// The loss set per tap, and what it dropped.
    pub(crate) fn faults(&self) -> &crate::netfault::Faults {
        &self.faults
    }

    pub(crate) fn faults_mut(&mut self) -> &mut crate::netfault::Faults {
        &mut self.faults
    }

    /// Runs `ip -n <netns> args` and fails if it does; returns its stdout.
    pub(crate) fn ip_in_netns(&self, args: &[&str]) -> Result<String> {
        self.ip(args)
    }

    /// Runs `ip -n <netns> args` and fails if it does.
    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.netns.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// The interfaces in the namespace (`ip -o link` names), e.g. to check the taps.
    pub fn interfaces(&self) -> Result<Vec<String>> {
        Ok(link_names(&self.ip(&["-o", "link", "show"])?))
    }

    /// Stops everything: the nodes (QEMU killed), dnsmasq, the namespace with its bridge and taps.
    /// Dropping the lab does the same; this reports errors instead of logging them.
    pub fn shutdown(mut self) -> Result<()> {
        for mut node in self.nodes.drain(..) {
            node.kill()?;
        }
        self.stop_dhcp()?;
        let name = self.netns.name.clone();
        drop(self);
        if netns_names()?.contains(&name) {
            return Err(Error::Spec(format!("network namespace {name} is still there")));
        }
        Ok(())
    }
}

/// The dnsmasq arguments for a lab.
fn dnsmasq_args(
    config: &LabConfig,
    subnet: Subnet,
    layout: &LabLayout,
    tftp_root: Option<&Path>,
) -> Vec<String> {
    let (first, last) = subnet.dhcp_range();
    let mut args = vec![
        "--no-daemon".to_owned(),
        "--conf-file=/dev/null".to_owned(),
        format!("--interface={BRIDGE}"),
        "--bind-interfaces".to_owned(),
        // No DNS: DHCP (and TFTP) only.
        "--port=0".to_owned(),
        // Root keeps access to the lab's files (the workdir may be anyone's).
        "--user=root".to_owned(),
        "--group=root".to_owned(),
        format!("--pid-file={}", layout.dnsmasq_pid.display()),
        format!("--dhcp-leasefile={}", layout.leases.display()),
        format!(
            "--dhcp-range={first},{last},255.255.255.0,{}",
            config.lease_time.as_secs()
        ),
        "--dhcp-authoritative".to_owned(),
        "--log-dhcp".to_owned(),
    ];
    if let Some(root) = tftp_root {
        args.extend([
            "--enable-tftp".to_owned(),
            format!("--tftp-root={}", root.display()),
            // QEMU's NIC ROMs are iPXE already: they get the script.
            "--dhcp-userclass=set:ipxe,iPXE".to_owned(),
            "--dhcp-boot=tag:ipxe,boot.ipxe".to_owned(),
            // Firmware without iPXE chain-loads it first (as in out/pxe/dnsmasq-pxe.conf.example).
            "--dhcp-match=set:efi64,option:client-arch,7".to_owned(),
            "--dhcp-match=set:efi64,option:client-arch,9".to_owned(),
            "--dhcp-boot=tag:efi64,tag:!ipxe,snponly.efi".to_owned(),
            "--dhcp-boot=tag:!efi64,tag:!ipxe,undionly.kpxe".to_owned(),
        ]);
    }
    args
}

/// Runs `ip args` and fails if it does; returns its stdout.
fn ip(args: &[&str]) -> Result<String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::ToolMissing {
                program: "ip",
                package: "iproute2",
            },
            _ => Error::io(format!("running ip {}", args.join(" ")))(e),
        })?;
    if !output.status.success() {
        return Err(Error::Command {
            command: format!("ip {}", args.join(" ")),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Interface names from `ip -o link show` output (`2: tap0@if3: <...> ...` gives `tap0`).
pub fn link_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?;
            Some(name.split('@').next().unwrap_or(name).to_owned())
        })
        .collect()
}

/// The names of the host's network namespaces (`ip netns list`).
pub fn netns_names() -> Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// Deletes `clump-lab-<pid>-<n>` namespaces whose process is gone (a lab killed before its drop ran).
fn remove_stale_namespaces() {
    let names = match netns_names() {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!("cannot list network namespaces: {e}");
            return;
        }
    };
    let owners: BTreeMap<String, u32> = names
        .into_iter()
        .filter_map(|name| {
            let pid = name.strip_prefix(NETNS_PREFIX)?.split('-').next()?.parse().ok()?;
            Some((name, pid))
        })
        .collect();
    for (name, pid) in owners {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::warn!(netns = %name, pid, "deleting the namespace of a lab whose process is gone");
            if let Err(e) = ip(&["netns", "del", &name]) {
                tracing::warn!(netns = %name, "could not delete it: {e}");
            }
        }
    }
}

/// Whether `program` is an executable file in `$PATH`.
pub(crate) fn program_exists(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|dir| {
            dir.join(program)
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_private_distinct_and_in_10_64_slash_10() {
        let a = Subnet::derived(1234, 0);
        let b = Subnet::derived(1234, 1);
        let c = Subnet::derived(1235, 0);
        assert_ne!(a, b);
        assert_ne!(a, c);
        for s in [a, b, c, Subnet::derived(u32::MAX, u32::MAX)] {
            let [x, y, _, z] = s.network().octets();
            assert_eq!((x, z), (10, 0));
            assert!((64..128).contains(&y), "{s}");
            assert_eq!(s.gateway().octets()[3], 1);
            assert!(s.contains(s.dhcp_range().0) && s.contains(s.dhcp_range().1));
            assert!(!s.contains(Ipv4Addr::new(169, 254, 1, 1)));
        }
        assert_eq!(Subnet::derived(1, 2).to_string(), "10.64.10.0/24");
    }

    #[test]
    fn lease_file_lines_are_parsed_and_junk_skipped() {
        let text = "1700000000 52:54:00:ab:cd:00 10.64.3.150 clump-node1 01:52:54:00:ab:cd:00\n\
                    1700000100 52:54:00:ab:ce:00 10.64.3.151 * *\n\
                    duid 00:01:00:01\n\
                    1 zz:54:00:ab:ce:00 10.64.3.152 * *\n";
        let leases = parse_leases(text);
        assert_eq!(leases.len(), 2, "{leases:?}");
        assert_eq!(leases[0].mac, Mac([0x52, 0x54, 0, 0xab, 0xcd, 0]));
        assert_eq!(leases[0].address, Ipv4Addr::new(10, 64, 3, 150));
        assert_eq!(leases[0].hostname.as_deref(), Some("clump-node1"));
        assert_eq!(leases[1].hostname, None);
        assert_eq!(leases[1].expires, 1_700_000_100);
    }

    #[test]
    fn link_names_drop_the_peer_suffix() {
        let text =
            "1: lo: <LOOPBACK,UP> mtu 65536\n3: tap0: <BROADCAST> mtu 1500 master br0\n4: veth1@if5: <X>\n";
        assert_eq!(link_names(text), ["lo", "tap0", "veth1"]);
    }

    #[test]
    fn dnsmasq_serves_tftp_and_the_ipxe_script_only_with_a_root() {
        let layout = LabLayout::new(Path::new("/l"));
        let subnet = Subnet::derived(1, 2);
        let config = LabConfig::default();
        let plain = dnsmasq_args(&config, subnet, &layout, None).join(" ");
        assert!(plain.contains("--dhcp-range=10.64.10.100,10.64.10.199,255.255.255.0,3600"));
        assert!(plain.contains("--interface=br0 --bind-interfaces --port=0"));
        assert!(plain.contains("--dhcp-leasefile=/l/dnsmasq.leases"));
        assert!(!plain.contains("tftp"));
        let pxe = dnsmasq_args(&config, subnet, &layout, Some(Path::new("/o/pxe"))).join(" ");
        assert!(pxe.contains("--enable-tftp --tftp-root=/o/pxe"));
        assert!(pxe.contains("--dhcp-userclass=set:ipxe,iPXE --dhcp-boot=tag:ipxe,boot.ipxe"));
    }
}
