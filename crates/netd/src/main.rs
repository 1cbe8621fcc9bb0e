//! `clump-netd`: gets the node on the network. Runs DHCP (RFC 2131) on every Ethernet NIC with
//! carrier in parallel, keeps the first lease, renews it, and releases it on SIGTERM.

mod arp_probe;
mod link;
mod state_file;
mod static_addr;

use anyhow::{bail, Context, Result};
use clap::Parser;
use clump_net::{nic, Rtnl};
use link::{Link, Outcome, Paths};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rustix::event::{poll, PollFd, PollFlags};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "clump-netd", version, about = "DHCP for a Clump node")]
struct Args {
    /// Interfaces to try (default: every Ethernet NIC with carrier).
    #[arg(long = "iface")]
    ifaces: Vec<String>,
    /// Where the lease is published.
    #[arg(long, default_value = "/run/clump/lease.json")]
    lease_file: PathBuf,
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Hostname sent to the server (option 12).
    #[arg(long)]
    hostname: Option<String>,
    /// Seconds without a DHCP lease before also claiming a link-local address (RFC 3927);
    /// 0 turns the fallback off. DHCP keeps trying either way.
    #[arg(long, default_value_t = 10)]
    link_local_after: u64,
    /// A fixed address instead of DHCP: ADDRESS/PREFIX[,GATEWAY] (the kernel's `clump.ip=`).
    #[arg(long = "static", value_name = "ADDRESS/PREFIX[,GATEWAY]")]
    static_addr: Option<String>,
}

/// Configures the fixed address, publishes it, and holds it until SIGTERM.
fn run_static(
    nic: &clump_net::Nic,
    addr: static_addr::StaticAddr,
    rtnl: &mut Rtnl,
    lease_file: &std::path::Path,
    sigfd: &SignalFd,
) -> Result<()> {
    rtnl.replace_address(nic.index, addr.address, addr.prefix_len, None, None)?;
    if let Some(gw) = addr.gateway {
        rtnl.replace_default_route(nic.index, gw)?;
    }
    let write = |state: &str| {
        let lease = (state == "bound").then(|| {
            serde_json::json!({ "address": addr.address, "prefix_len": addr.prefix_len, "router": addr.gateway })
        });
        let file = state_file::LeaseFile {
            iface: &nic.name,
            driver: &nic.driver,
            mac: &nic.mac,
            via: "static",
            state,
            lease,
            written_at: since_boot().as_secs(),
            dropped: Default::default(),
        };
        state_file::write_json(lease_file, &file)
    };
    write("bound")?;
    tracing::info!(iface = %nic.name, addr = %format!("{}/{}", addr.address, addr.prefix_len), "static address");
    loop {
        let mut fds = [PollFd::new(sigfd, PollFlags::IN)];
        let _ = poll(&mut fds, None);
        if matches!(sigfd.read_signal(), Ok(Some(_))) {
            let _ = rtnl.delete_address(nic.index, addr.address, addr.prefix_len);
            write("unbound")?;
            tracing::info!("stopped");
            return Ok(());
        }
    }
}

/// Log timestamps on the kernel's clock, like PID 1's `t=`, so the two logs line up.
struct BootTime;

impl tracing_subscriber::fmt::time::FormatTime for BootTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let t = since_boot();
        write!(w, "clump-netd: [{:>5}.{:03}]", t.as_secs(), t.subsec_millis())
    }
}

pub fn since_boot() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(ts.tv_sec.unsigned_abs(), ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_timer(BootTime)
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)?;
    let sigfd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;

    let class_net = std::path::Path::new("/sys/class/net");
    let nics: Vec<_> = if args.ifaces.is_empty() {
        nic::list_ethernet(class_net)
            .into_iter()
            .filter(|n| nic::carrier(class_net, &n.name) == Some(true))
            .collect()
    } else {
        args.ifaces
            .iter()
            .filter_map(|name| nic::by_name(class_net, name))
            .collect()
    };
    if nics.is_empty() {
        bail!("no Ethernet interface with carrier to run DHCP on");
    }
    let mut rtnl = Rtnl::open().context("rtnetlink")?;
    if let Some(text) = &args.static_addr {
        let addr = static_addr::parse(text).map_err(|e| anyhow::anyhow!("--static {text}: {e}"))?;
        return run_static(&nics[0], addr, &mut rtnl, &args.lease_file, &sigfd);
    }
    let seed = u64::from(std::process::id()) ^ since_boot().as_nanos() as u64;
    let mut links = Vec::new();
    for (i, n) in nics.into_iter().enumerate() {
        let name = n.name.clone();
        match Link::open(n, args.hostname.clone(), seed.wrapping_add(i as u64)) {
            Ok(l) => links.push(l),
            Err(e) => tracing::warn!(iface = %name, error = %e, "cannot run DHCP here"),
        }
    }
    if links.is_empty() {
        bail!("no interface could be opened for DHCP");
    }
    let paths = Paths {
        lease_file: args.lease_file,
        resolv_conf: args.resolv_conf,
    };
    tracing::info!(ifaces = %links.iter().map(|l| l.nic.name.as_str()).collect::<Vec<_>>().join(","), "dhcp started");

    let started = since_boot();
    let fallback = (args.link_local_after > 0).then(|| started + Duration::from_secs(args.link_local_after));
    loop {
        let now = since_boot();
        // No server answered in time: claim a link-local address on the first NIC, so nodes on a
        // bare switch still find each other; a lease that comes later replaces it.
        if let Some(at) = fallback {
            let any_address = links
                .iter()
                .any(|l| l.bound.is_some() || l.link_local.is_running());
            if now >= at && !any_address {
                tracing::info!(iface = %links[0].nic.name, "no DHCP server answered: claiming a link-local address");
                links[0].link_local.start(now);
            }
        }
        let mut chosen = None;
        for (i, l) in links.iter_mut().enumerate() {
            if l.turn(now, &mut rtnl, &paths).contains(&Outcome::Bound) && chosen.is_none() {
                chosen = Some(i);
            }
        }
        // The first NIC with a lease is the node's; the others stop asking.
        if let Some(i) = chosen.filter(|_| links.len() > 1) {
            let keep = links.swap_remove(i);
            links.clear();
            links.push(keep);
        }
        let now = since_boot();
        let wait = links
            .iter()
            .filter_map(Link::deadline)
            .min()
            .map_or(Duration::from_secs(1), |d| d.saturating_sub(now))
            .min(Duration::from_secs(1));
        let timeout = rustix::time::Timespec {
            tv_sec: wait.as_secs() as i64,
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        let mut fds = vec![PollFd::new(&sigfd, PollFlags::IN)];
        for l in &links {
            fds.extend(
                l.fds()
                    .into_iter()
                    .map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN)),
            );
        }
        let _ = poll(&mut fds, Some(&timeout));
        let stop = !fds[0].revents().is_empty();
        drop(fds);
        if stop && matches!(sigfd.read_signal(), Ok(Some(_))) {
            for l in &mut links {
                l.release(since_boot(), &mut rtnl, &paths);
            }
            tracing::info!("stopped");
            return Ok(());
        }
    }
}
