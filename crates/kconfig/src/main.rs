//! `clump-kconfig CONFIG FRAGMENT`: checks the kernel configuration CONFIG (a `.config`, e.g.
//! `/boot/config-6.1.0-NN-amd64`) against the requirements in FRAGMENT (e.g. `kernel-config/clump.config`)
//! and names every option that is missing.
//!
//! Exit status: 0 when every requirement is met, 1 when something is missing, 2 on usage, read or parse
//! errors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clump_kconfig::{check, Config};

const USAGE: &str = "usage: clump-kconfig CONFIG FRAGMENT\n\n\
Checks the kernel configuration CONFIG against the requirements in FRAGMENT (a Kconfig fragment such as\n\
kernel-config/clump.config) and names what is missing. `=y` needs y; `=m` is met by m or y.\n\
Exit status: 0 all met, 1 something missing, 2 error.";

fn read_config(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Config::parse(&text).with_context(|| format!("{} is not a valid Kconfig file", path.display()))
}

fn run(args: &[String]) -> Result<bool> {
    let (config_path, fragment_path) = match args {
        [c, f] if !c.starts_with('-') && !f.starts_with('-') => (PathBuf::from(c), PathBuf::from(f)),
        _ => bail!("expected two arguments\n\n{USAGE}"),
    };
    let config = read_config(&config_path)?;
    let required = read_config(&fragment_path)?;
    if required.is_empty() {
        bail!("{} contains no requirements", fragment_path.display());
    }
    let missing = check(&config, &required);
    let mut report = String::new();
    for m in &missing {
        report.push_str(&format!("missing: {m}\n"));
    }
    let (config_path, fragment_path) = (config_path.display(), fragment_path.display());
    if missing.is_empty() {
        report.push_str(&format!(
            "clump-kconfig: {config_path}: all {} options required by {fragment_path} are met\n",
            required.len()
        ));
    } else {
        report.push_str(&format!(
            "clump-kconfig: {config_path}: {} of {} options required by {fragment_path} are missing\n",
            missing.len(),
            required.len()
        ));
    }
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::stdout().lock().write_all(report.as_bytes());
    Ok(missing.is_empty())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(args.first().map(String::as_str), Some("-h" | "--help")) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("clump-kconfig: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
