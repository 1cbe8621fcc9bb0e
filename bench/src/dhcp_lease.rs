//! Time from link up to a DHCP lease: clump-netd beside busybox udhcpc, against the same dnsmasq,
//! each run on a fresh veth in network namespaces made for it (no uplink) and removed afterwards.
//!
//! `cargo run --release -p clump-bench --bin dhcp-lease -- --runs 10 --busybox PATH --netd PATH`

use anyhow::{ensure, Context, Result};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// A busybox binary with udhcpc (build.sh extracts Debian's busybox-static into the cache).
    #[arg(long)]
    busybox: PathBuf,
    /// The clump-netd binary.
    #[arg(long)]
    netd: PathBuf,
}

fn ip(args: &[&str]) -> Result<()> {
    let st = Command::new("ip").args(args).status().context("ip")?;
    ensure!(st.success(), "ip {args:?} failed");
    Ok(())
}

/// The server namespace with dnsmasq; removed on drop.
struct Server {
    ns: String,
    dnsmasq: std::process::Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// A client namespace joined to the server's bridge by a veth; removed on drop.
struct Client(String);

impl Drop for Client {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn server(dir: &Path) -> Result<Server> {
    let ns = format!("clump-b-srv{}", std::process::id());
    ip(&["netns", "add", &ns])?;
    ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &ns, "addr", "add", "10.79.0.1/24", "dev", "br0"])?;
    ip(&["-n", &ns, "link", "set", "br0", "up"])?;
    let dnsmasq = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--interface=br0",
        ])
        .args([
            "--bind-interfaces",
            "--port=0",
            "--dhcp-range=10.79.0.50,10.79.0.250,2m",
            "--no-ping",
        ])
        .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("dnsmasq")?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(Server { ns, dnsmasq })
}

fn client(server: &Server, n: usize) -> Result<Client> {
    let ns = format!("clump-b-cli{}-{n}", std::process::id());
    ip(&["netns", "add", &ns])?;
    let c = Client(ns.clone());
    let (vs, vc) = (format!("bvs{n}"), format!("bvc{n}"));
    ip(&["link", "add", &vs, "type", "veth", "peer", "name", &vc])?;
    ip(&["link", "set", &vs, "netns", &server.ns])?;
    ip(&["-n", &server.ns, "link", "set", &vs, "master", "br0", "up"])?;
    ip(&["link", "set", &vc, "netns", &ns, "name", "vc"])?;
    Ok(c)
}

/// Brings the link up, runs the client until it has a lease, returns the time since link up.
fn time_lease(c: &Client, cmd: &[String], done: impl Fn() -> bool) -> Result<Duration> {
    let start = Instant::now();
    ip(&["-n", &c.0, "link", "set", "vc", "up"])?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &c.0])
        .args(cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let limit = start + Duration::from_secs(30);
    loop {
        if done() {
            let took = start.elapsed();
            let _ = child.kill();
            let _ = child.wait();
            return Ok(took);
        }
        if let Some(st) = child.try_wait()? {
            ensure!(st.success(), "{cmd:?} failed: {st:?}");
            return Ok(start.elapsed());
        }
        ensure!(Instant::now() < limit, "no lease within 30 s: {cmd:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        rustix::process::geteuid().is_root(),
        "needs root (network namespaces)"
    );
    let dir = tempfile::tempdir()?;
    let srv = server(dir.path())?;
    let bb = args.busybox.display().to_string();
    let netd = args.netd.display().to_string();
    let mut results: Vec<(&str, Vec<Duration>)> = vec![
        (
            "clump-netd (ARP probe, RFC 5227: 3 probes 300 ms apart)",
            Vec::new(),
        ),
        ("busybox udhcpc -q", Vec::new()),
        ("busybox udhcpc -q -a (ARP check)", Vec::new()),
    ];
    let mut n = 0;
    for _ in 0..args.runs {
        for (i, (_, samples)) in results.iter_mut().enumerate() {
            n += 1;
            let c = client(&srv, n)?;
            let lease_file = dir.path().join(format!("lease{n}.json"));
            let cmd: Vec<String> = match i {
                0 => vec![
                    netd.clone(),
                    "--iface".into(),
                    "vc".into(),
                    "--lease-file".into(),
                    lease_file.display().to_string(),
                    "--resolv-conf".into(),
                    dir.path().join("resolv").display().to_string(),
                ],
                1 => vec![
                    bb.clone(),
                    "udhcpc".into(),
                    "-f".into(),
                    "-q".into(),
                    "-n".into(),
                    "-i".into(),
                    "vc".into(),
                    "-s".into(),
                    "/bin/true".into(),
                ],
                _ => vec![
                    bb.clone(),
                    "udhcpc".into(),
                    "-f".into(),
                    "-q".into(),
                    "-n".into(),
                    "-a".into(),
                    "-i".into(),
                    "vc".into(),
                    "-s".into(),
                    "/bin/true".into(),
                ],
            };
            let lf = lease_file.clone();
            let done = move || i == 0 && std::fs::read_to_string(&lf).is_ok_and(|t| t.contains("\"bound\""));
            samples.push(time_lease(&c, &cmd, done)?);
        }
    }
    println!(
        "Link up to lease, {} runs each, interleaved, dnsmasq 2.90 with --no-ping on a veth (ms):\n",
        args.runs
    );
    println!("| client | median | min | max |\n|---|---:|---:|---:|");
    for (name, samples) in results {
        let (m, lo, hi) = median(samples);
        println!(
            "| {name} | {} | {} | {} |",
            m.as_millis(),
            lo.as_millis(),
            hi.as_millis()
        );
    }
    Ok(())
}
