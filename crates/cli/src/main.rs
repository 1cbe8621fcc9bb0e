//! `clump`: the command people type on a node.

mod cluster;
mod jobs;
mod log;
mod mon;
mod node;
mod power;

use clap::{Parser, Subcommand};
use clump_api::NodeChange;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "clump",
    version,
    about = "Control a Clump cluster node",
    after_help = "Environment:\n  \
        CLUMP_API_SOCKET  clumpd's socket (default /run/clump/clumpd.sock); when clumpd does\n                    \
        not answer, `clump nodes` shows the nodes.json beside it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug, PartialEq)]
enum Command {
    /// Print the node's boot and service log (PID 1's ring buffer).
    Log {
        /// Keep printing new lines as they come.
        #[arg(short, long)]
        follow: bool,
        /// Print only the last N lines.
        #[arg(short = 'n', long)]
        lines: Option<usize>,
    },
    /// Show the nodes of the cluster as this node sees them.
    Nodes {
        /// Print the node map as JSON (the shape of /run/clump/nodes.json).
        #[arg(long)]
        json: bool,
    },
    /// Change this node.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Print what happened in the cluster (nodes joining, leaving, dying, conflicts).
    Events {
        /// Only the events after this sequence number (the `#N` of a line).
        #[arg(long, default_value_t = 0, value_name = "N")]
        since: u64,
        /// Keep printing new events as they happen.
        #[arg(short, long)]
        follow: bool,
        /// One JSON object per event and line.
        #[arg(long)]
        json: bool,
    },
    /// Print the counters of clumpd and its gossip layer.
    Stats {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Watch every node live: load, memory, speed, jobs (keys: l m s j, Tab, PgUp/PgDn, q).
    ///
    /// Keys: l load, m memory, s speed, j jobs; Tab or Left/Right cycle the views; Up/Down,
    /// PgUp/PgDn, Home/End scroll the nodes; Ctrl-L draws the screen anew; q, Esc or Ctrl-C quit.
    /// Load is per core, relative to the reference speed: 1.00 means every core of the node runs
    /// one task at speed 1000.
    Mon {
        /// The view to start with.
        #[arg(long, value_enum, default_value_t = mon::app::View::Load)]
        view: mon::app::View,
        /// Seconds between refreshes (0.2 to 3600).
        #[arg(long, default_value = "1", value_name = "SECONDS", value_parser = mon::parse_interval)]
        interval: std::time::Duration,
        /// No colours (also when NO_COLOR is set); states are words either way.
        #[arg(long)]
        no_color: bool,
        /// Print one frame, every node on it, as plain text and exit.
        #[arg(long)]
        once: bool,
    },
    /// Run a program as a job and stay attached: stdin, stdout and stderr are relayed, Ctrl-C,
    /// TERM, HUP and QUIT reach the job, and `clump run` exits with its status (or 128+signal).
    Run {
        /// Run on this node, the job's home, whatever the others offer.
        #[arg(long, conflicts_with_all = ["on", "best"])]
        home: bool,
        /// Run on NODE (a number, hostname or address): the job starts here and moves there.
        #[arg(long, value_name = "NODE", conflicts_with = "best")]
        on: Option<String>,
        /// Run on the best node by speed-normalised load and free memory (the default).
        #[arg(long)]
        best: bool,
        /// Lock the job to the node it runs on once placed (`clump unlock` frees it).
        #[arg(long)]
        lock: bool,
        /// Print the job's id alone on its line and return at once.
        #[arg(short, long)]
        detach: bool,
        /// The program and its arguments (after `--`).
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "PROGRAM"
        )]
        command: Vec<String>,
    },
    /// List the jobs of the cluster: id, user, home, node, state, CPU time, memory,
    /// migrations, command, and why a job cannot move.
    Ps {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
        /// Only this node's: the jobs started here and the guests it runs.
        #[arg(long)]
        local: bool,
    },
    /// Attach to a job: its kept output, then live output; stdin and signals go to it.
    Attach { job: String },
    /// Wait for a job to end and exit with its status (or 128+signal).
    Wait { job: String },
    /// Print what is kept of a job's stdout and stderr (the last 1 MiB).
    Output { job: String },
    /// Send a signal to a job (HUP, INT, QUIT, KILL, USR1, USR2, TERM).
    Kill {
        #[arg(short, long, default_value = "TERM", value_name = "SIG")]
        signal: String,
        job: String,
    },
    /// Move a running job of this node to another node (a number, hostname or address) while it
    /// runs; its output keeps coming here. Memory is copied in rounds while the job runs, then
    /// it is frozen for the rest.
    Migrate {
        job: String,
        node: String,
        /// Freeze the job for the whole copy instead (to compare).
        #[arg(long)]
        no_precopy: bool,
    },
    /// Bring a job of this node back from the node it runs on.
    Home { job: String },
    /// Keep a job of this node on the node it runs on: no move, by hand or by the balancer.
    Lock { job: String },
    /// Let a locked job move again.
    Unlock { job: String },
    /// Shut the node down in order and power it off.
    Poweroff,
    /// Shut the node down in order and restart it.
    Reboot,
}

#[derive(Subcommand, Debug, PartialEq)]
enum NodeCommand {
    /// Fix the speed this node announces (root only), or go back to the measured one.
    SetSpeed {
        /// The speed to announce, 1 to 1000000 (bigger is faster).
        #[arg(
            value_parser = clap::value_parser!(u32).range(1..=1_000_000),
            required_unless_present = "measured"
        )]
        speed: Option<u32>,
        /// Announce the measured speed again.
        #[arg(long, conflicts_with = "speed")]
        measured: bool,
    },
    /// How this node takes guest jobs, its window and its balancer's knobs.
    Status,
    /// Take no guest jobs (those here stay; `drain` sends them away).
    Block,
    /// Take guest jobs again.
    Unblock,
    /// Send the guest jobs away (home, or to another node) and take none; waits until they left.
    Drain {
        /// Return at once; the node drains on.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Stop draining: take guest jobs again.
    Undrain,
    /// Take guests only within HH:MM-HH:MM of the node's clock (e.g. 20:00-07:00; "off": always).
    /// Guests leave before the window ends.
    Window { window: String },
    /// Show the balancer's knobs, or set one: NAME VALUE (`balancer off` turns it off).
    Balance {
        name: Option<String>,
        value: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = clump_api::socket_path();
    let result = match cli.command {
        Command::Log { follow, lines } => log::print(std::path::Path::new(log::LOG_FILE), lines, follow),
        Command::Nodes { json } => cluster::nodes(&socket, json),
        Command::Node { command } => match command {
            NodeCommand::SetSpeed { speed, .. } => cluster::set_speed(&socket, speed),
            NodeCommand::Status | NodeCommand::Balance { name: None, .. } => node::change(&socket, None),
            NodeCommand::Block => node::change(&socket, Some(NodeChange::Block(true))),
            NodeCommand::Unblock => node::change(&socket, Some(NodeChange::Block(false))),
            NodeCommand::Drain { no_wait, timeout } => {
                node::drain(&socket, !no_wait, std::time::Duration::from_secs(timeout))
            }
            NodeCommand::Undrain => node::change(&socket, Some(NodeChange::Drain(false))),
            NodeCommand::Window { window } => {
                let w = (window != "off").then_some(window);
                node::change(&socket, Some(NodeChange::Window(w)))
            }
            NodeCommand::Balance {
                name: Some(name),
                value,
            } => match value {
                Some(value) => node::change(&socket, Some(NodeChange::Knob { name, value })),
                None => Err(anyhow::anyhow!(
                    "clump node balance {name} VALUE: the value is missing"
                )),
            },
        },
        Command::Events { since, follow, json } => cluster::events(&socket, since, follow, json),
        Command::Stats { json } => cluster::stats(&socket, json),
        Command::Mon {
            view,
            interval,
            no_color,
            once,
        } => {
            let env = |name| std::env::var(name).ok();
            let color = mon::color_allowed(no_color, env("NO_COLOR").as_deref(), env("TERM").as_deref());
            mon::run(
                &socket,
                &mon::Options {
                    view,
                    interval,
                    color,
                    once,
                },
            )
        }
        Command::Run {
            home,
            on,
            best,
            lock,
            detach,
            command,
        } => {
            let placement = match (home, on, best) {
                (_, Some(node), _) => jobs::Placement::On(node),
                (_, None, true) => jobs::Placement::Best,
                (true, None, false) => jobs::Placement::Home,
                (false, None, false) => jobs::Placement::Default,
            };
            jobs::run(&socket, placement, lock, detach, command)
        }
        Command::Ps { json, local } => jobs::ps(&socket, json, local),
        Command::Attach { job } => jobs::attach(&socket, &job),
        Command::Wait { job } => jobs::wait(&socket, &job),
        Command::Output { job } => jobs::output(&socket, &job),
        Command::Kill { signal, job } => jobs::kill(&socket, &signal, &job),
        Command::Migrate {
            job,
            node,
            no_precopy,
        } => jobs::migrate(&socket, &job, Some(&node), !no_precopy),
        Command::Home { job } => jobs::migrate(&socket, &job, None, true),
        Command::Lock { job } => jobs::lock(&socket, &job, true),
        Command::Unlock { job } => jobs::lock(&socket, &job, false),
        Command::Poweroff => power::request(power::Action::PowerOff),
        Command::Reboot => power::request(power::Action::Reboot),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`clump events -f | head`): nothing left to say to anyone.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clump: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("clump").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn the_command_line_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn nodes_and_stats() {
        assert_eq!(parse(&["nodes"]).unwrap(), Command::Nodes { json: false });
        assert_eq!(
            parse(&["nodes", "--json"]).unwrap(),
            Command::Nodes { json: true }
        );
        assert_eq!(parse(&["stats"]).unwrap(), Command::Stats { json: false });
        assert_eq!(
            parse(&["stats", "--json"]).unwrap(),
            Command::Stats { json: true }
        );
        assert!(parse(&["nodes", "extra"]).is_err());
    }

    #[test]
    fn events() {
        assert_eq!(
            parse(&["events"]).unwrap(),
            Command::Events {
                since: 0,
                follow: false,
                json: false
            }
        );
        assert_eq!(
            parse(&["events", "--since", "42", "-f"]).unwrap(),
            Command::Events {
                since: 42,
                follow: true,
                json: false
            }
        );
        assert_eq!(
            parse(&["events", "--follow", "--json"]).unwrap(),
            Command::Events {
                since: 0,
                follow: true,
                json: true
            }
        );
        assert!(parse(&["events", "--since", "-1"]).is_err());
    }

    #[test]
    fn set_speed_takes_a_figure_in_range_or_measured() {
        let set = |speed, measured| Command::Node {
            command: NodeCommand::SetSpeed { speed, measured },
        };
        assert_eq!(
            parse(&["node", "set-speed", "5000"]).unwrap(),
            set(Some(5000), false)
        );
        assert_eq!(parse(&["node", "set-speed", "1"]).unwrap(), set(Some(1), false));
        assert_eq!(
            parse(&["node", "set-speed", "1000000"]).unwrap(),
            set(Some(1_000_000), false)
        );
        assert_eq!(
            parse(&["node", "set-speed", "--measured"]).unwrap(),
            set(None, true)
        );
        for bad in [
            &["node", "set-speed"][..],
            &["node", "set-speed", "0"],
            &["node", "set-speed", "1000001"],
            &["node", "set-speed", "fast"],
            &["node", "set-speed", "5000", "--measured"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mon_takes_a_view_an_interval_and_flags() {
        use mon::app::View;
        let mon = |view, ms, no_color, once| Command::Mon {
            view,
            interval: std::time::Duration::from_millis(ms),
            no_color,
            once,
        };
        assert_eq!(parse(&["mon"]).unwrap(), mon(View::Load, 1000, false, false));
        assert_eq!(
            parse(&["mon", "--view", "memory", "--interval", "2.5", "--no-color"]).unwrap(),
            mon(View::Memory, 2500, true, false)
        );
        assert_eq!(
            parse(&["mon", "--view=jobs", "--once"]).unwrap(),
            mon(View::Jobs, 1000, false, true)
        );
        assert_eq!(
            parse(&["mon", "--view", "speed"]).unwrap(),
            mon(View::Speed, 1000, false, false)
        );
        for bad in [
            &["mon", "--view", "disk"][..],
            &["mon", "--interval", "0"],
            &["mon", "--interval", "soon"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn run_takes_the_program_after_its_flags() {
        let run = |home, on: Option<&str>, best, detach, command: &[&str]| Command::Run {
            home,
            on: on.map(str::to_owned),
            best,
            lock: false,
            detach,
            command: command.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            parse(&["run", "--", "sh", "-c", "exit 3"]).unwrap(),
            run(false, None, false, false, &["sh", "-c", "exit 3"])
        );
        assert_eq!(
            parse(&["run", "--detach", "--home", "--", "ls", "-l"]).unwrap(),
            run(true, None, false, true, &["ls", "-l"])
        );
        assert_eq!(
            parse(&["run", "--on", "12", "sleep", "1"]).unwrap(),
            run(false, Some("12"), false, false, &["sleep", "1"])
        );
        assert_eq!(
            parse(&["run", "--best", "--", "yes"]).unwrap(),
            run(false, None, true, false, &["yes"])
        );
        assert_eq!(
            parse(&["run", "--lock", "--on", "2", "--", "yes"]).unwrap(),
            Command::Run {
                home: false,
                on: Some("2".into()),
                best: false,
                lock: true,
                detach: false,
                command: vec!["yes".into()],
            }
        );
        assert_eq!(parse(&["lock", "x"]).unwrap(), Command::Lock { job: "x".into() });
        assert_eq!(
            parse(&["unlock", "x"]).unwrap(),
            Command::Unlock { job: "x".into() }
        );
        for bad in [
            &["run"][..],
            &["run", "--"],
            &["run", "--home", "--on", "3", "--", "x"],
            &["run", "--on", "3", "--best", "--", "x"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn job_commands() {
        assert_eq!(
            parse(&["ps", "--json"]).unwrap(),
            Command::Ps {
                json: true,
                local: false
            }
        );
        assert_eq!(
            parse(&["ps", "--local"]).unwrap(),
            Command::Ps {
                json: false,
                local: true
            }
        );
        assert_eq!(
            parse(&["attach", "0a1b2c3d"]).unwrap(),
            Command::Attach {
                job: "0a1b2c3d".into()
            }
        );
        assert_eq!(parse(&["wait", "x"]).unwrap(), Command::Wait { job: "x".into() });
        assert_eq!(
            parse(&["output", "x"]).unwrap(),
            Command::Output { job: "x".into() }
        );
        assert_eq!(
            parse(&["kill", "x"]).unwrap(),
            Command::Kill {
                signal: "TERM".into(),
                job: "x".into()
            }
        );
        assert_eq!(
            parse(&["kill", "-s", "KILL", "x"]).unwrap(),
            Command::Kill {
                signal: "KILL".into(),
                job: "x".into()
            }
        );
        assert!(parse(&["kill"]).is_err());
    }

    #[test]
    fn a_broken_pipe_is_recognised_through_context() {
        use anyhow::Context;
        let e = Err::<(), _>(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing")
            .unwrap_err();
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("clumpd is not running")));
    }
}
