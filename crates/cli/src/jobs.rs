//! The job commands: `clump run`, `ps`, `attach`, `wait`, `output`, `kill`. They talk to the
//! local `clumpd`; the job runs there as the caller (SO_PEERCRED).

use anyhow::{bail, Context, Result};
use clump_api::jobs::{base64_decode, base64_encode, MAX_CHUNK};
use clump_api::{table, Client, JobStream, Place, Request, StreamInput, StreamOutput};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a job should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// No choice made: the best node (this one unless another clearly beats it).
    Default,
    Home,
    On(String),
    Best,
}

/// Signals `clump run` and `clump attach` pass on to the job instead of dying of them.
const FORWARDED: [Signal; 4] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT];

/// The caller's environment as `NAME=value` strings (entries that are not UTF-8 are left out:
/// the API carries JSON strings).
fn environment() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some(format!("{}={}", k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// `clump run`: exits with the job's status unless detached.
pub fn run(socket: &Path, placement: Placement, lock: bool, detach: bool, argv: Vec<String>) -> Result<()> {
    let place = match placement {
        Placement::Default | Placement::Best => Place::Best,
        Placement::Home => Place::Home,
        Placement::On(node) => Place::On(node),
    };
    let cwd = std::env::current_dir().context("cannot tell the current directory")?;
    let cwd = cwd
        .to_str()
        .with_context(|| format!("the current directory {} is not UTF-8", cwd.display()))?
        .to_owned();
    let env = environment();
    // clumpd reads at most MAX_LINE bytes per request; say why before it hangs up on us.
    let probe = Request::Run {
        argv: argv.clone(),
        cwd: cwd.clone(),
        env: env.clone(),
        attach: true,
        place: place.clone(),
        lock,
    };
    let size = serde_json::to_vec(&probe).map_or(0, |v| v.len());
    if size > clump_api::MAX_LINE {
        bail!(
            "the command and environment take {size} bytes, more than the {} a request may hold: \
             unset some environment variables",
            clump_api::MAX_LINE
        );
    }
    if detach {
        let started = Client::connect(socket)?.run_detached(argv, cwd, env, place, lock)?;
        if let Some(notice) = &started.notice {
            eprintln!("clump: {notice}");
        }
        println!("{}", started.job);
        return Ok(());
    }
    // Blocked before any thread starts, so every thread inherits it and only the forwarder
    // takes them.
    let signals = block_forwarded()?;
    let mut stream = Client::connect(socket)?.stream(&Request::Run {
        argv,
        cwd,
        env,
        attach: true,
        place,
        lock,
    })?;
    let job = match stream.read()? {
        Some(StreamOutput::Started(job)) => job,
        other => bail!("unexpected first line from clumpd: {other:?}"),
    };
    relay(socket, stream, &job, signals)
}

/// `clump lock JOB` / `clump unlock JOB`.
pub fn lock(socket: &Path, job: &str, locked: bool) -> Result<()> {
    Client::connect(socket)?.lock(job, locked)?;
    if locked {
        println!("job {job} stays on the node it runs on until `clump unlock {job}`");
    } else {
        println!("job {job} may move again");
    }
    Ok(())
}

/// `clump attach JOB`: what is kept of the job's output, then live output, stdin relayed,
/// signals forwarded; exits with the job's status.
pub fn attach(socket: &Path, job: &str) -> Result<()> {
    let signals = block_forwarded()?;
    let mut stream = Client::connect(socket)?.stream(&Request::Attach {
        job: job.into(),
        offset: None,
    })?;
    match stream.read()? {
        Some(StreamOutput::Attached { offset, .. }) if offset > 0 => {
            eprintln!("clump: the first {offset} bytes of the job's output are no longer kept");
        }
        Some(StreamOutput::Attached { .. }) => {}
        other => bail!("unexpected first line from clumpd: {other:?}"),
    }
    relay(socket, stream, job, signals)
}

fn block_forwarded() -> Result<SigSet> {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).context("cannot block signals")?;
    Ok(set)
}

/// Relays the stream until the job's exit, then exits with its status.
fn relay(socket: &Path, mut stream: JobStream, job: &str, signals: SigSet) -> Result<()> {
    let socket: PathBuf = socket.to_owned();
    let job_name = job.to_owned();
    std::thread::spawn(move || loop {
        let Ok(signal) = signals.wait() else { continue };
        let name = signal.as_str().trim_start_matches("SIG");
        // Its own connection: the stream may be busy with stdin the job does not read.
        if let Err(e) = Client::connect(&socket).and_then(|mut c| c.signal(&job_name, name)) {
            eprintln!("clump: cannot pass {name} on to job {job_name}: {e}");
            std::process::exit(128 + signal as i32);
        }
    });
    let mut input = stream.input()?;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; MAX_CHUNK];
        loop {
            let sent = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = input.send(&StreamInput::Eof);
                    return;
                }
                Ok(n) => input.send(&StreamInput::Stdin {
                    data: base64_encode(&buf[..n]),
                }),
            };
            if sent.is_err() {
                return;
            }
        }
    });
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    loop {
        match stream.read()? {
            Some(StreamOutput::Stdout(data)) => {
                let bytes = base64_decode(&data).context("clumpd sent output that is not base64")?;
                // A reader that went away (`clump run ... | head`) ends nothing: the job runs on.
                let _ = stdout.write_all(&bytes).and_then(|()| stdout.flush());
            }
            Some(StreamOutput::Stderr(data)) => {
                let bytes = base64_decode(&data).context("clumpd sent output that is not base64")?;
                let _ = stderr.write_all(&bytes).and_then(|()| stderr.flush());
            }
            Some(StreamOutput::Notice(text)) => {
                let _ = writeln!(stderr, "clump: {text}");
            }
            Some(StreamOutput::Exit(status)) => {
                let _ = stdout.flush();
                exit_with(job, status);
            }
            Some(_) => {}
            None => bail!("clumpd closed the stream of job {job} before it ended"),
        }
    }
}

/// The user name of a uid from /etc/passwd, else the number.
fn user_name(passwd: &str, uid: u32) -> String {
    passwd
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
        })
        .unwrap_or_else(|| uid.to_string())
}

/// `clump ps [--json]`.
pub fn ps(socket: &Path, json: bool, local: bool) -> Result<()> {
    let mut client = Client::connect(socket)?;
    let jobs = if local { client.ps()? } else { client.cluster_ps()? };
    let text = if json {
        serde_json::to_string_pretty(&jobs).context("cannot encode the jobs")? + "\n"
    } else {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        table::jobs(&jobs, now, |uid| user_name(&passwd, uid))
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

/// `clump wait JOB`: exits with the job's status.
pub fn wait(socket: &Path, job: &str) -> Result<()> {
    let status = Client::connect(socket)?.wait(job)?;
    exit_with(job, status);
}

/// Exits as the job did; a job whose end nobody saw (its node went away) says so.
fn exit_with(job: &str, status: clump_api::ExitStatus) -> ! {
    if status.code.is_none() && status.signal.is_none() {
        eprintln!("clump: job {job} was lost: the node running it went away or dropped it");
    }
    std::process::exit(status.shell_code() & 0xff);
}

/// `clump output JOB`: what is kept of its stdout and stderr, each to ours.
pub fn output(socket: &Path, job: &str) -> Result<()> {
    let output = Client::connect(socket)?.output(job)?;
    if output.start > 0 {
        eprintln!(
            "clump: the first {} bytes of the output are no longer kept ({} of them never shown)",
            output.start, output.dropped
        );
    }
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    for chunk in output.chunks {
        let (out, data): (&mut dyn Write, String) = match chunk {
            StreamOutput::Stdout(d) => (&mut stdout, d),
            StreamOutput::Stderr(d) => (&mut stderr, d),
            _ => continue,
        };
        let bytes = base64_decode(&data).context("clumpd sent output that is not base64")?;
        out.write_all(&bytes)?;
        out.flush()?;
    }
    Ok(())
}

/// `clump kill [-s SIG] JOB`.
pub fn kill(socket: &Path, signal: &str, job: &str) -> Result<()> {
    Client::connect(socket)?.signal(job, signal)?;
    Ok(())
}

/// `clump migrate JOB NODE` and `clump home JOB`: returns once the job runs there.
pub fn migrate(socket: &Path, job: &str, node: Option<&str>, precopy: bool) -> Result<()> {
    let moved = Client::connect(socket)?.migrate_with(job, node, precopy)?;
    let from = moved.from.map_or("?".into(), |n| n.to_string());
    let rounds = moved.rounds.saturating_sub(1);
    let precopy = match rounds {
        0 => String::new(),
        1 => ", after 1 round of copying while it ran".into(),
        n => format!(", after {n} rounds of copying while it ran"),
    };
    println!(
        "job {} moved from node {from} to node {} in {} ms (frozen {} ms, {:.1} MiB sent{precopy})",
        moved.job,
        moved.to,
        moved.ms,
        moved.frozen_ms,
        moved.bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_named_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
        assert_eq!(user_name(passwd, 0), "root");
        assert_eq!(user_name(passwd, 65534), "nobody");
        assert_eq!(user_name(passwd, 1000), "1000");
    }
}
