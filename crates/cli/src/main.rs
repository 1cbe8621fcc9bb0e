//! `clump`: the command people type on a node.

mod log;
mod power;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "clump", version, about = "Control a Clump cluster node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
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
    /// Shut the node down in order and power it off.
    Poweroff,
    /// Shut the node down in order and restart it.
    Reboot,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Log { follow, lines } => log::print(std::path::Path::new(log::LOG_FILE), lines, follow),
        Command::Poweroff => power::request(power::Action::PowerOff),
        Command::Reboot => power::request(power::Action::Reboot),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clump: {e:#}");
            ExitCode::FAILURE
        }
    }
}
