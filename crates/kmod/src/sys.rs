//! The one place that touches the kernel, behind a trait so the loader is tested without root.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::path::Path;

/// Loads one module file into the kernel.
pub trait ModuleSys {
    /// Loads the module at `path`. `Err` with `ErrorKind::AlreadyExists` means it was loaded already.
    fn load(&mut self, path: &Path) -> io::Result<()>;
}

/// The real kernel: `finit_module(2)` on the opened file.
#[derive(Debug, Default)]
pub struct LinuxModules;

impl ModuleSys for LinuxModules {
    fn load(&mut self, path: &Path) -> io::Result<()> {
        let file = File::open(path)?;
        let no_params: &CStr = c"";
        rustix::system::finit_module(&file, no_params, 0).map_err(io::Error::from)
    }
}
