//! `clump-lab boot`: one node, its console streamed to this terminal.

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use clump_lab::{Artefacts, Boot, NicModel, Node, NodeSpec};

pub struct Options {
    pub medium: Boot,
    pub nics: Vec<NicModel>,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Extra kernel command line options (direct kernel boot only).
    pub append: Vec<String>,
    pub workdir: Option<PathBuf>,
}

enum Input {
    Line(String),
    Stop,
}

pub fn run(opts: Options) -> Result<()> {
    if opts.medium.is_netboot() {
        anyhow::bail!(
            "{} needs a DHCP and TFTP server: use `clump-lab up --medium {}`",
            opts.medium,
            opts.medium
        );
    }
    let mut spec = NodeSpec::from_artefacts("node1", opts.medium, &Artefacts::from_env())?
        .memory_mib(opts.memory_mib)
        .cpus(opts.cpus);
    let nics = if opts.nics.is_empty() {
        vec![NicModel::VirtioNetPci]
    } else {
        opts.nics
    };
    for model in nics {
        spec = spec.nic(model);
    }
    for option in opts.append {
        spec = spec.cmdline(option);
    }
    if let Some(dir) = opts.workdir {
        spec = spec.workdir(dir);
    }

    let (tx, rx) = mpsc::channel();
    let stop = tx.clone();
    ctrlc::set_handler(move || {
        let _ = stop.send(Input::Stop);
    })
    .context("installing the Ctrl-C handler")?;
    thread::Builder::new().name("stdin".into()).spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(Input::Line(line)).is_err() {
                break;
            }
        }
    })?;

    let mut node = Node::start(spec)?;
    let layout = node.layout().clone();
    eprintln!(
        "clump-lab: booting from {} (TCG); files in {}; Ctrl-C stops the node",
        opts.medium,
        layout.dir.display()
    );
    let mut log = None;
    let mut stdout = std::io::stdout();
    let mut buf = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Input::Stop) => {
                node.kill()?;
                eprintln!("\nclump-lab: stopped");
                return Ok(());
            }
            Ok(Input::Line(line)) => node.type_text(&format!("{line}\n"))?,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if log.is_none() {
            log = File::open(&layout.serial_log).ok();
        }
        if let Some(file) = log.as_mut() {
            buf.clear();
            file.read_to_end(&mut buf).context("reading the serial log")?;
            stdout.write_all(&buf)?;
            stdout.flush()?;
        }
        if let Some(status) = node.try_wait()? {
            eprintln!("\nclump-lab: QEMU exited ({status})");
            return Ok(());
        }
    }
}
