//! Jobs under a real `clumpd` in a network namespace this test creates and removes (no uplink),
//! driven through the built `clump` command: stdio relayed in order, exit statuses, PID
//! namespace, detach/ps/kill/wait/output, signals through `clump run`, and a user who cannot
//! touch root's job. Needs root, `ip` and `setpriv`, and `clump` built beside `clumpd`
//! (`cargo test -p clump-clumpd -p clump-cli` builds both): without them it fails, never skips.

mod common;

use clump_api::{Client, JobInfo, JobState, NodeState};
use common::{Net, KEY};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn clump_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_clumpd")).with_file_name("clump");
    assert!(
        bin.exists(),
        "{} is not built: run `cargo test -p clump-clumpd -p clump-cli` (or `cargo build -p clump-cli`)",
        bin.display()
    );
    bin
}

fn clump(socket: &Path, args: &[&str]) -> Output {
    Command::new(clump_bin())
        .args(args)
        .env("CLUMP_API_SOCKET", socket)
        .current_dir("/tmp")
        .stdin(Stdio::null())
        .output()
        .expect("run clump")
}

/// `clump` as the user nobody (65534), without root's groups.
fn clump_as_nobody(socket: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(clump_bin())
        .args(args)
        .env("CLUMP_API_SOCKET", socket)
        .current_dir("/tmp")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv not found: install util-linux")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The cgroup v2 directory to give the daemon: under /sys/fs/cgroup when that is cgroup v2,
/// else under the hybrid layout's /sys/fs/cgroup/unified; `None` where there is neither.
fn cgroup_root() -> Option<PathBuf> {
    const CGROUP2: i64 = 0x6367_7270;
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .find(|p| rustix::fs::statfs(**p).is_ok_and(|s| s.f_type == CGROUP2))
        .map(|p| Path::new(p).join(format!("clump-test-{}", std::process::id())))
}

/// Kills whatever jobs are left and removes the test's cgroups, also when the test fails (it
/// is declared after the network, so it runs first, while clumpd still answers).
struct Teardown {
    socket: PathBuf,
    cgroup: Option<PathBuf>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Ok(jobs) = Client::connect(&self.socket).and_then(|mut c| c.ps()) {
            for j in jobs.iter().filter(|j| j.state == Some(JobState::Running)) {
                let _ = Client::connect(&self.socket).and_then(|mut c| c.signal(&j.id, "KILL"));
            }
        }
        let Some(root) = &self.cgroup else { return };
        // Whatever clumpd could not kill (it died first) goes with cgroup.kill.
        if let Ok(dirs) = std::fs::read_dir(root) {
            for dir in dirs.flatten().filter(|d| d.path().is_dir()) {
                let _ = std::fs::write(dir.path().join("cgroup.kill"), "1");
                for _ in 0..50 {
                    if std::fs::remove_dir(dir.path()).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let _ = std::fs::remove_dir(root);
    }
}

fn find(jobs: &[JobInfo], id: &str) -> JobInfo {
    jobs.iter()
        .find(|j| j.id == id)
        .cloned()
        .unwrap_or_else(|| panic!("job {id} not in {jobs:?}"))
}

fn ps(socket: &Path) -> Vec<JobInfo> {
    let out = clump(socket, &["ps", "--json"]);
    assert!(out.status.success(), "clump ps --json: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ps --json is a list of jobs")
}

#[test]
fn jobs_run_under_the_runtime_with_their_stdio_relayed() {
    let mut net = Net::new("j", 1);
    // nobody must reach the socket through the test's directories.
    std::fs::set_permissions(net.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cgroup = cgroup_root();
    let root_arg = cgroup
        .clone()
        .unwrap_or_else(|| net.dir.path().join("no-cgroup-here").join("clump"));
    let teardown = Teardown {
        socket: net.path(0, "sock"),
        cgroup,
    };
    net.start_with(0, KEY, &[OsStr::new("--cgroup-root"), root_arg.as_os_str()]);
    std::fs::set_permissions(net.path(0, ""), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = net.path(0, "sock");
    net.wait_for(
        "clumpd to answer and know its number",
        Duration::from_secs(20),
        || {
            net.map(0).is_some_and(|m| {
                m.nodes
                    .iter()
                    .any(|n| n.state == NodeState::This && n.number == Some(10))
            })
        },
    );

    // Output on both pipes, and the exit status.
    let out = clump(
        &socket,
        &["run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(3), "{}", net.log(0));

    // A counter: complete and in order.
    let out = clump(
        &socket,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "i=1; while [ $i -le 200 ]; do echo $i; i=$((i+1)); done",
        ],
    );
    let want: String = (1..=200).map(|i| format!("{i}\n")).collect();
    assert_eq!(text(&out.stdout), want);
    assert!(out.status.success());

    // A big burst (more than the pipe and a stream line hold) arrives whole.
    let out = clump(&socket, &["run", "--", "sh", "-c", "seq 1 100000"]);
    let want: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    assert!(
        text(&out.stdout) == want,
        "seq 1 100000 arrived damaged ({} bytes)",
        out.stdout.len()
    );

    // Its own PID namespace: PID 1 is the reaper, the program its first child.
    let out = clump(&socket, &["run", "--", "sh", "-c", "echo $$ $PPID"]);
    assert_eq!(text(&out.stdout), "2 1\n");
    // Own IPC and time namespaces, a session of its own, the caller's cwd.
    let out = clump(
        &socket,
        &["run", "--", "sh", "-c", "readlink /proc/self/ns/ipc /proc/self/ns/time; awk '/^NSsid/ {print $NF}' /proc/self/status; pwd"],
    );
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    let own = |ns: &str| {
        std::fs::read_link(format!("/proc/self/ns/{ns}"))
            .expect("ns")
            .display()
            .to_string()
    };
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_ne!(lines[0], own("ipc"));
    assert_ne!(lines[1], own("time"));
    assert_eq!(lines[2].trim(), "1", "the reaper (PID 1) leads the job's session");
    assert_eq!(lines[3], "/tmp");
    // `ip netns exec` gives the daemon a sysfs of its own without /sys/fs/cgroup, so jobs run
    // without cgroups here and the daemon says why (cgroups are tested by the next test).
    assert!(
        net.log(0).contains("jobs run without cgroups: "),
        "{}",
        net.log(0)
    );

    // Stdin reaches the job, and its end too.
    let mut child = Command::new(clump_bin())
        .args(["run", "--", "sh", "-c", "cat; echo done"])
        .env("CLUMP_API_SOCKET", &socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("clump run");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"hello\nworld\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(text(&out.stdout), "hello\nworld\ndone\n");

    // Detached: the id alone, then ps shows it running with its command, home and uid.
    let out = clump(&socket, &["run", "--detach", "--", "sleep", "60"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    assert_eq!(text(&out.stdout), format!("{id}\n"));
    assert!(id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    let job = find(&ps(&socket), &id);
    assert_eq!(job.argv, ["sleep", "60"]);
    assert_eq!(job.state, Some(JobState::Running));
    assert_eq!((job.uid, job.home, job.node), (0, Some(10), Some(10)));
    let table = text(&clump(&socket, &["ps"]).stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("running") && l.ends_with("sleep 60")),
        "{table}"
    );
    // The running job is in this node's gossip record.
    net.wait_for("the node map to count the job", Duration::from_secs(10), || {
        net.map(0).is_some_and(|m| {
            m.nodes
                .iter()
                .any(|n| n.state == NodeState::This && n.jobs == Some(1))
        })
    });

    // Another user sees the job listed but cannot read or touch it; its own job is its own.
    let out = clump_as_nobody(&socket, &["output", &id]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("belongs to uid 0"),
        "{}",
        text(&out.stderr)
    );
    for args in [&["kill", &id][..], &["attach", &id], &["wait", &id]] {
        let out = clump_as_nobody(&socket, args);
        assert!(
            !out.status.success() && text(&out.stderr).contains("belongs to uid 0"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = clump_as_nobody(&socket, &["run", "--", "id", "-u"]);
    assert_eq!(text(&out.stdout), "65534\n", "{}", text(&out.stderr));

    // kill: TERM by default; wait then exits 128+15, and ps says how it ended.
    let out = clump(&socket, &["kill", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = clump(&socket, &["wait", &id]);
    assert_eq!(out.status.code(), Some(128 + 15));
    let job = find(&ps(&socket), &id);
    assert_eq!(job.state, Some(JobState::Killed));
    assert_eq!(job.exit.and_then(|e| e.signal), Some(15));
    let table = text(&clump(&socket, &["ps"]).stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("killed TERM")),
        "{table}"
    );

    // output after the end: both pipes, kept apart.
    let out = clump(
        &socket,
        &[
            "run",
            "--detach",
            "--",
            "sh",
            "-c",
            "echo one; echo two >&2; exit 5",
        ],
    );
    let id = text(&out.stdout).trim().to_owned();
    assert_eq!(clump(&socket, &["wait", &id]).status.code(), Some(5));
    let out = clump(&socket, &["output", &id]);
    assert_eq!(
        (text(&out.stdout).as_str(), text(&out.stderr).as_str()),
        ("one\n", "two\n")
    );
    // attach to an ended job: its output, then its status.
    let out = clump(&socket, &["attach", &id]);
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("one\n", Some(5))
    );

    // Ctrl-C at `clump run` reaches the job, which decides what to do with it.
    let mut child = Command::new(clump_bin())
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "trap 'echo got INT; exit 7' INT; echo ready; while :; do sleep 0.1; done",
        ])
        .env("CLUMP_API_SOCKET", &socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("clump run");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("signal");
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("got INT"));
    let started = Instant::now();
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(7));
    assert!(started.elapsed() < Duration::from_secs(5));

    // Asked to run on a node the cluster does not have: it runs here, and says why.
    let out = clump(
        &socket,
        &["run", "--on", "99", "--", "sh", "-c", "sleep 0.5; exit 5"],
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("runs on this node") && err.contains("no node \"99\""),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(5), "{err}");

    // Locked: `clump ps` says so and nothing moves it; unlocked, a move is tried again (and
    // fails here for want of another node, for another reason).
    let out = clump(&socket, &["run", "--detach", "--lock", "--", "sleep", "30"]);
    let locked = text(&out.stdout).trim().to_owned();
    assert_eq!(locked.len(), 8, "no job id: {locked:?} {}", text(&out.stderr));
    assert!(find(&ps(&socket), &locked).locked, "run --lock did not lock");
    let out = clump(&socket, &["ps"]);
    assert!(
        text(&out.stdout).contains(&format!("job {locked} stays where it is: locked by its user")),
        "{}",
        text(&out.stdout)
    );
    let out = clump(&socket, &["migrate", &locked, "2"]);
    assert!(
        !out.status.success() && text(&out.stderr).contains("is locked"),
        "{}",
        text(&out.stderr)
    );
    let out = clump_as_nobody(&socket, &["unlock", &locked]);
    assert!(!out.status.success(), "another user unlocked root's job");
    assert!(clump(&socket, &["unlock", &locked]).status.success());
    assert!(!find(&ps(&socket), &locked).locked, "unlock did not unlock");
    let out = clump(&socket, &["migrate", &locked, "2"]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && !err.contains("locked"), "{err}");
    assert!(clump(&socket, &["lock", &locked]).status.success());
    assert!(find(&ps(&socket), &locked).locked, "lock did not lock");
    let _ = clump(&socket, &["kill", "-s", "KILL", &locked]);

    drop(teardown);
    assert!(net.log(0).contains("job started"), "{}", net.log(0));
}

/// Without a key the daemon opens no socket on any network, so it runs outside a network
/// namespace here, where the machine's cgroup v2 hierarchy is visible.
#[test]
fn a_job_runs_in_a_cgroup_of_its_own() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test creates cgroups: run as root"
    );
    let root = cgroup_root().expect("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    std::fs::write(p("cmdline"), "console=ttyS0\n").expect("cmdline");
    let log = std::fs::File::create(p("log")).expect("log");
    let mut daemon = Daemon(
        common::keyless_clumpd(dir.path())
            .arg("--cgroup-root")
            .arg(&root)
            .stderr(log)
            .spawn()
            .expect("clumpd"),
    );
    let teardown = Teardown {
        socket: p("sock"),
        cgroup: Some(root.clone()),
    };
    let start = Instant::now();
    while Client::connect(p("sock")).and_then(|mut c| c.ps()).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "clumpd does not answer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = clump(
        &p("sock"),
        &[
            "run",
            "--detach",
            "--",
            "sh",
            "-c",
            "cat /proc/self/cgroup; sleep 60",
        ],
    );
    let id = text(&out.stdout).trim().to_owned();
    let log = || std::fs::read_to_string(p("log")).unwrap_or_default();
    assert!(
        root.join(&id).is_dir(),
        "no cgroup {}/{id}\n{}",
        root.display(),
        log()
    );
    // CPU time comes from the cgroup's cpu.stat; the job's own view names its cgroup.
    let name = root.file_name().and_then(|n| n.to_str()).unwrap_or("?");
    let start = Instant::now();
    loop {
        let out = clump(&p("sock"), &["output", &id]);
        if text(&out.stdout).contains(&format!("/{name}/{id}")) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{}", text(&out.stdout));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Once sh has written that, the reaper and sh are both in the cgroup (sleep maybe too).
    let procs = std::fs::read_to_string(root.join(&id).join("cgroup.procs")).expect("cgroup.procs");
    assert!(procs.lines().count() >= 2, "the reaper and sh at least: {procs}");
    reaper_keeps_no_sigcont_after_a_freeze(&procs);
    assert!(clump(&p("sock"), &["kill", "-s", "KILL", &id]).status.success());
    assert_eq!(clump(&p("sock"), &["wait", &id]).status.code(), Some(128 + 9));
    // Gone with the job.
    let start = Instant::now();
    while root.join(&id).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "cgroup {id} left behind"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(teardown);
    let pid = rustix::process::Pid::from_child(&daemon.0);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal");
    assert!(daemon.0.wait().expect("wait").success());
}

/// A daemon killed when the test ends, also on failure.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A checkpoint or a failed move stops the job's tree and resumes it with SIGCONT, as here.
/// The reaper blocks every signal; a SIGCONT it does not take stays pending, goes into the
/// job's next CRIU dump, and the restore of that dump fails ("stopped by signal 5"): every
/// later move of a job once checkpointed failed so in the lab.
fn reaper_keeps_no_sigcont_after_a_freeze(procs: &str) {
    let field = |pid: &str, name: &str| -> String {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    let reaper = procs
        .lines()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--clump-job-reaper"))
        })
        .unwrap_or_else(|| panic!("no reaper among {procs}"));
    let pid = rustix::process::Pid::from_raw(reaper.parse().expect("a pid")).expect("not 0");
    let wait_state = |stopped: bool| {
        let start = Instant::now();
        while field(reaper, "State:").starts_with('T') != stopped {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "reaper state {}",
                field(reaper, "State:")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).expect("SIGSTOP");
    wait_state(true);
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).expect("SIGCONT");
    wait_state(false);
    std::thread::sleep(Duration::from_millis(100));
    let sigcont_bit = 1u64 << (nix::sys::signal::Signal::SIGCONT as u32 - 1);
    for name in ["SigPnd:", "ShdPnd:"] {
        let pending = u64::from_str_radix(&field(reaper, name), 16).expect("a hex signal mask");
        assert_eq!(
            pending & sigcont_bit,
            0,
            "the reaper keeps SIGCONT pending ({name} {pending:x})"
        );
    }
}
