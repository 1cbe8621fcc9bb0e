//! `clump-lab up`: N nodes on the lab's bridge with dnsmasq, their consoles streamed here (each line
//! prefixed with the node's name) until Ctrl-C, which tears the whole lab down.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use clump_lab::{Artefacts, Boot, Lab, LabConfig, NicModel, NodeSpec};

pub struct Options {
    pub count: usize,
    pub medium: Boot,
    pub nics: Vec<NicModel>,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Extra kernel command line options (direct kernel boot only).
    pub append: Vec<String>,
    pub workdir: Option<PathBuf>,
}

/// One node's console as it is read: the file and the bytes after its last newline.
struct Stream {
    name: String,
    file: Option<File>,
    partial: Vec<u8>,
}

pub fn run(opts: Options) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    let artefacts = Artefacts::from_env();
    let config = LabConfig {
        workdir: opts.workdir,
        tftp_root: if opts.medium.is_netboot() {
            Some(artefacts.pxe_dir()?)
        } else {
            None
        },
        ..LabConfig::default()
    };
    let mut lab = Lab::start(config)?;
    let models = if opts.nics.is_empty() {
        vec![NicModel::VirtioNetPci]
    } else {
        opts.nics
    };
    for i in 0..opts.count {
        let model = models[i % models.len()];
        let mut spec = NodeSpec::from_artefacts(format!("node{}", i + 1), opts.medium, &artefacts)?
            .memory_mib(opts.memory_mib)
            .cpus(opts.cpus)
            .nic(model);
        for option in &opts.append {
            spec = spec.cmdline(option.clone());
        }
        lab.start_node(spec)?;
    }
    eprintln!(
        "clump-lab: {} nodes booting from {} (TCG) in namespace {} on {} (gateway {}); files in {}; Ctrl-C tears the lab down",
        opts.count,
        opts.medium,
        lab.netns(),
        lab.subnet(),
        lab.subnet().gateway(),
        lab.layout().dir.display()
    );
    let mut streams: Vec<Stream> = lab
        .nodes()
        .iter()
        .map(|n| Stream {
            name: n.name().to_owned(),
            file: None,
            partial: Vec::new(),
        })
        .collect();
    let logs: Vec<PathBuf> = lab.nodes().iter().map(|n| n.serial_log().to_path_buf()).collect();
    let mut stdout = std::io::stdout();
    let mut buf = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        for (stream, log) in streams.iter_mut().zip(&logs) {
            if stream.file.is_none() {
                stream.file = File::open(log).ok();
            }
            let Some(file) = stream.file.as_mut() else {
                continue;
            };
            buf.clear();
            file.read_to_end(&mut buf).context("reading a serial log")?;
            stream.partial.extend_from_slice(&buf);
            while let Some(nl) = stream.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = stream.partial.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&line);
                write!(
                    stdout,
                    "[{}] {}",
                    stream.name,
                    text.trim_end_matches(['\r', '\n'])
                )?;
                writeln!(stdout)?;
            }
        }
        stdout.flush()?;
        for node in lab.nodes_mut() {
            if let Some(status) = node.try_wait()? {
                eprintln!("clump-lab: {} exited ({status})", node.name());
            }
        }
        if lab
            .nodes_mut()
            .iter_mut()
            .all(|n| matches!(n.try_wait(), Ok(Some(_))))
        {
            eprintln!("clump-lab: every node has exited");
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let leases = lab.leases()?;
    for lease in &leases {
        eprintln!("clump-lab: lease {} -> {}", lease.mac, lease.address);
    }
    lab.shutdown()?;
    eprintln!("clump-lab: lab torn down");
    Ok(())
}
