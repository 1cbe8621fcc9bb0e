//! `clumpd`, the runtime daemon of a Clump node (supervised by PID 1): waits for the lease, joins
//! the cluster, keeps the node map, serves the local API.

use anyhow::{Context, Result};
use clap::Parser;
use clump_api::MapState;
use clump_clumpd::api_server::{self, Hub};
use clump_clumpd::config::Options;
use clump_clumpd::daemon::{self, Daemon, Exit, Paths};
use clump_clumpd::{lease, nodemap};
use clump_seal::ClusterKey;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rustix::event::{poll, PollFd, PollFlags};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "clumpd",
    about = "The Clump runtime daemon: discovery, membership, node map, local API"
)]
struct Args {
    /// Kernel command line to read `clump.*` options from.
    #[arg(long, default_value = "/proc/cmdline")]
    cmdline: PathBuf,
    /// The cluster key file used when the command line has no `clump.key=`.
    #[arg(long, default_value = "/etc/clump/cluster.key")]
    key_file: PathBuf,
    #[arg(long, default_value = lease::LEASE_FILE)]
    lease: PathBuf,
    #[arg(long, default_value = clump_api::NODES_FILE)]
    nodes_json: PathBuf,
    #[arg(long, default_value = clump_api::mosix_map::MAP_FILE)]
    mosix_map: PathBuf,
    #[arg(long, default_value = clump_api::SOCKET)]
    socket: PathBuf,
    /// Where a speed set with `clump node set-speed` is kept across daemon restarts.
    #[arg(long, default_value = "/run/clump/speed")]
    speed_override: PathBuf,
    /// A node id kept on persistent storage; without one the id derives from the MAC.
    #[arg(long, default_value = "/var/lib/clump/node-id")]
    node_id: PathBuf,
    /// Overrides `clump.port=`.
    #[arg(long)]
    port: Option<u16>,
    /// Where each job gets its cgroup v2 directory; jobs run without one when its parent is not
    /// a writable cgroup v2 file system.
    #[arg(long, default_value = "/sys/fs/cgroup/clump")]
    cgroup_root: PathBuf,
    /// Where a moving job's CRIU images are written and received.
    #[arg(long, default_value = "/run/clump/migrate")]
    migrate_dir: PathBuf,
    /// The most a job's working directory may hold (MiB) and still travel with it; a job in a
    /// larger one stays where it is and says why.
    #[arg(long, default_value_t = clump_jobs::workdir::DEFAULT_LIMIT >> 20)]
    workdir_limit_mib: u64,
}

/// How long an orderly stop waits for guest jobs to leave (PID 1 waits a little longer).
const DRAIN_BOUND: Duration = Duration::from_secs(60);

struct BootTime;

impl tracing_subscriber::fmt::time::FormatTime for BootTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let t = daemon::mono();
        write!(w, "clumpd: [{:>5}.{:03}]", t.as_secs(), t.subsec_millis())
    }
}

/// The key from `clump.key=`, else from the image's key file.
fn load_key(cmdline: &str, key_file: &std::path::Path) -> Result<ClusterKey, String> {
    match ClusterKey::from_cmdline(cmdline) {
        Some(Ok(key)) => return Ok(key),
        Some(Err(err)) => {
            return Err(format!(
                "clump.key= on the kernel command line is unusable: {err}"
            ))
        }
        None => {}
    }
    ClusterKey::from_file(key_file)
        .map_err(|err| format!("no clump.key= on the kernel command line and {err}"))
}

fn main() -> Result<()> {
    // A job's PID 1 is this binary run again; it must not start anything of the daemon.
    clump_jobs::reaper::run_if_asked();
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

    let cmdline = std::fs::read_to_string(&args.cmdline).unwrap_or_default();
    let (mut options, problems) = Options::from_cmdline(&cmdline);
    for problem in problems {
        tracing::warn!("{problem}");
    }
    if let Some(port) = args.port {
        options.port = port;
    }
    let paths = Paths {
        lease: args.lease,
        nodes_json: args.nodes_json,
        mosix_map: args.mosix_map,
        speed_override: args.speed_override,
        node_id: args.node_id,
    };
    let jobs = clump_jobs::Runtime::start(clump_jobs::Config {
        exe: std::env::current_exe().context("cannot find this program's path (for job reapers)")?,
        cgroup_root: Some(args.cgroup_root.clone()),
        buffer: clump_jobs::buffer::DEFAULT_CAP,
    })
    .context("cannot start the job runtime")?;
    let hub = Hub::new(
        nodemap::without_cluster(MapState::NoLease, options.port, daemon::clock()),
        jobs,
    );
    {
        let mut control = hub.control();
        for change in &options.control {
            if let Err(e) = control.apply(change) {
                tracing::warn!("ignoring {change:?} from the kernel command line: {e}");
            }
        }
    }
    api_server::serve(&args.socket, hub.clone())
        .with_context(|| format!("cannot serve {}", args.socket.display()))?;

    let key = match load_key(&cmdline, &args.key_file) {
        Ok(key) => key,
        Err(why) => {
            // Joining without a key would mean talking to nobody or to anybody; neither is safe.
            tracing::error!("no cluster key: {why}; this node will not join a cluster");
            publish_state(&hub, &paths, MapState::NoKey, options.port);
            wait_for_signal(&sigfd, None);
            return Ok(());
        }
    };
    publish_state(&hub, &paths, MapState::NoLease, options.port);
    let lease = loop {
        if let Some(lease) = lease::read(&paths.lease) {
            break lease;
        }
        if wait_for_signal(&sigfd, Some(Duration::from_millis(200))) {
            return Ok(());
        }
    };
    let (addr, port, checkpoint) = (lease.addr, options.port, options.checkpoint);
    let mut daemon =
        Daemon::new(options, paths, hub.clone(), &key, lease).context("cannot start the cluster")?;
    let number = hub.jobs.home().unwrap_or(0);
    match clump_clumpd::peer::Peers::start(
        key.clone(),
        hub.clone(),
        addr,
        port,
        number,
        args.migrate_dir.clone(),
        args.workdir_limit_mib << 20,
    ) {
        Ok(peers) => {
            peers.set_checkpoint_interval(checkpoint);
            let _ = hub.peers.set(peers.clone());
            if let Err(e) = clump_clumpd::balance::start(hub.clone(), peers) {
                tracing::warn!("no balancer: {e}");
            }
        }
        Err(err) => tracing::warn!(%err, "jobs cannot move: cannot listen on TCP port {port}"),
    }
    match daemon.run(&sigfd) {
        Exit::Signal | Exit::Done => {
            drain(&mut daemon, &hub, &sigfd);
            tracing::info!("leaving the cluster");
            daemon.leave();
            Ok(())
        }
        Exit::LeaseChanged => {
            // PID 1 restarts us at once with the new address; a clean start beats patching state.
            daemon.leave();
            anyhow::bail!("the lease changed; restarting")
        }
    }
}

/// Before it stops (an orderly shutdown), the node sends its guests away, within
/// [`DRAIN_BOUND`]; a second signal stops it at once.
fn drain(daemon: &mut Daemon, hub: &Hub, sigfd: &SignalFd) {
    // The signal that stopped the loop is still pending on the fd: take it, so only another one
    // cuts the drain short.
    let _ = sigfd.read_signal();
    let guests = hub.jobs.guests_here();
    if guests == 0 {
        return;
    }
    tracing::info!(guests, "sending guest jobs away before stopping");
    hub.control().stopping = true;
    let end = std::time::Instant::now() + DRAIN_BOUND;
    let exit = daemon.run_while(sigfd, || {
        hub.jobs.guests_here() > 0 && std::time::Instant::now() < end
    });
    let left = hub.jobs.guests_here();
    if left > 0 {
        tracing::warn!(left, ?exit, "stopping with guest jobs still here: they are lost");
    } else {
        tracing::info!("every guest job left");
    }
}

fn publish_state(hub: &Hub, paths: &Paths, state: MapState, port: u16) {
    let map = nodemap::without_cluster(state, port, daemon::clock());
    if let Err(err) = nodemap::write_files(&map, &paths.nodes_json, &paths.mosix_map) {
        tracing::warn!(%err, "cannot write the node map");
    }
    hub.publish(|s| s.map = map);
}

/// Sleeps until a signal (true) or the timeout (false).
fn wait_for_signal(sigfd: &SignalFd, timeout: Option<Duration>) -> bool {
    let ts = timeout.map(|t| rustix::time::Timespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    let mut fds = [PollFd::new(sigfd, PollFlags::IN)];
    let _ = poll(&mut fds, ts.as_ref());
    !fds[0].revents().is_empty()
}
