//! `clump-lab`: boot Clump nodes in QEMU (TCG only) for people and for `./build.sh demo`.

mod boot;
mod demo;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clump_lab::{Boot, NicModel};

#[derive(Debug, Parser)]
#[command(version, about = "Boot Clump nodes in QEMU (TCG only)")]
struct Cli {
    /// Log what the lab does in detail.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot one node and stream its serial console here until Ctrl-C (lines typed are sent to it).
    Boot {
        /// What to boot from: iso-bios, iso-uefi, usb (the ISO as a USB disk) or kernel (out/pxe, fastest).
        #[arg(long, default_value = "iso-bios")]
        medium: Boot,
        /// A network card (repeat for several): virtio-net-pci, e1000, e1000e, rtl8139 [default: virtio-net-pci].
        #[arg(long = "nic", value_name = "MODEL")]
        nics: Vec<NicModel>,
        /// Guest memory in MiB.
        #[arg(long = "mem", value_name = "MB", default_value_t = clump_lab::DEFAULT_MEMORY_MIB)]
        memory_mib: u32,
        /// Number of virtual CPUs.
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// An option for the kernel command line (repeat for several), e.g. clump.key=<64 hex>;
        /// direct kernel boot (--medium kernel) only.
        #[arg(long = "append", value_name = "OPTION")]
        append: Vec<String>,
        /// Keep the node's files (serial log, sockets, QEMU output) here instead of a temporary directory.
        #[arg(long)]
        workdir: Option<PathBuf>,
    },
    /// Start a lab: N nodes on a bridge in a private network namespace with dnsmasq (DHCP, and TFTP
    /// for PXE), their consoles streamed here until Ctrl-C, which tears it all down. Needs root.
    Up {
        /// Number of nodes.
        #[arg(short = 'n', long = "nodes", default_value_t = 3)]
        count: usize,
        /// What the nodes boot from: iso-bios, iso-uefi, usb, kernel, pxe-bios or pxe-uefi.
        #[arg(long, default_value = "iso-bios")]
        medium: Boot,
        /// NIC model of each node, in turn (repeat: node1 gets the first, node2 the second, ...)
        /// [default: virtio-net-pci].
        #[arg(long = "nic", value_name = "MODEL")]
        nics: Vec<NicModel>,
        /// Guest memory of each node in MiB.
        #[arg(long = "mem", value_name = "MB", default_value_t = clump_lab::DEFAULT_MEMORY_MIB)]
        memory_mib: u32,
        /// Number of virtual CPUs of each node.
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// An option for the kernel command line of every node (repeat for several), e.g. clump.key=<64 hex>;
        /// direct kernel boot (--medium kernel) only.
        #[arg(long = "append", value_name = "OPTION")]
        append: Vec<String>,
        /// Keep the lab's files (dnsmasq's log and leases, one directory per node) here.
        #[arg(long)]
        workdir: Option<PathBuf>,
    },
    /// Boot one node from the ISO, save its serial log and a screenshot, power it off via ACPI.
    Demo {
        /// Where to save the serial logs and screenshots [default: <out>/demo].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(if cli.verbose {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        })
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Boot {
            medium,
            nics,
            memory_mib,
            cpus,
            append,
            workdir,
        } => boot::run(boot::Options {
            medium,
            nics,
            memory_mib,
            cpus,
            append,
            workdir,
        }),
        Command::Up {
            count,
            medium,
            nics,
            memory_mib,
            cpus,
            append,
            workdir,
        } => up::run(up::Options {
            count,
            medium,
            nics,
            memory_mib,
            cpus,
            append,
            workdir,
        }),
        Command::Demo { out } => demo::run(out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clump-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}
