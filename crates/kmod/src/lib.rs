//! Kernel module loading without libkmod: the part of `modprobe` a node needs at boot.
//!
//! Layers, smoltcp style: parsers for the files `depmod` writes ([`alias`], [`dep`], [`builtin`]) and
//! for kernel uevents ([`uevent`]) that never touch the system; a [`Loader`] that turns a modalias or a
//! module name into `finit_module` calls in dependency order through the [`ModuleSys`] trait; and
//! [`coldplug`], which walks sysfs until no new device shows up.

pub mod alias;
pub mod builtin;
pub mod coldplug;
pub mod dep;
mod loader;
mod name;
pub mod sys;
pub mod uevent;

pub use alias::AliasTable;
pub use coldplug::{coldplug, scan_modaliases, ColdplugReport};
pub use dep::DepTable;
pub use loader::{LoadEvent, Loader, Outcome};
pub use name::module_name;
pub use sys::{LinuxModules, ModuleSys};

use std::path::PathBuf;

/// Why a module index file could not be read or a line of it was skipped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}:{line}: {reason}")]
    Parse {
        file: &'static str,
        line: usize,
        reason: String,
    },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}
