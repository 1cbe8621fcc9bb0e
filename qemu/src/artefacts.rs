//! Where the built artefacts are: `$CLUMP_OUT`, or `out/` at the workspace root.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The build output directory (`out/`) and the files in it that a node boots from.
#[derive(Debug, Clone)]
pub struct Artefacts {
    out: PathBuf,
}

impl Artefacts {
    /// `$CLUMP_OUT` if set, else `<workspace root>/out`.
    pub fn from_env() -> Self {
        match std::env::var_os("CLUMP_OUT") {
            Some(dir) if !dir.is_empty() => Self::at(dir),
            _ => Self::at(workspace_root().join("out")),
        }
    }

    /// Artefacts in the given output directory.
    pub fn at(out: impl Into<PathBuf>) -> Self {
        Self { out: out.into() }
    }

    /// The output directory itself.
    pub fn out_dir(&self) -> &Path {
        &self.out
    }

    /// `out/clump.iso`, which must exist.
    pub fn iso(&self) -> Result<PathBuf> {
        existing(self.out.join("clump.iso"), "./build.sh iso")
    }

    /// `out/pxe/vmlinuz`, which must exist.
    pub fn pxe_kernel(&self) -> Result<PathBuf> {
        existing(self.out.join("pxe/vmlinuz"), "./build.sh pxe")
    }

    /// `out/pxe`, the TFTP root of a netboot, which must hold `boot.ipxe`, `vmlinuz` and `initrd.img`.
    pub fn pxe_dir(&self) -> Result<PathBuf> {
        self.pxe_script()?;
        self.pxe_kernel()?;
        self.pxe_initrd()?;
        Ok(self.out.join("pxe"))
    }

    /// `out/pxe/boot.ipxe`, which must exist.
    pub fn pxe_script(&self) -> Result<PathBuf> {
        existing(self.out.join("pxe/boot.ipxe"), "./build.sh pxe")
    }

    /// `out/pxe/initrd.img`, which must exist.
    pub fn pxe_initrd(&self) -> Result<PathBuf> {
        existing(self.out.join("pxe/initrd.img"), "./build.sh pxe")
    }
}

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn existing(path: PathBuf, hint: &'static str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingArtefact { path, hint })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_iso_names_the_file_and_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let err = Artefacts::at(dir.path()).iso().unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{}/clump.iso not found: run ./build.sh iso", dir.path().display())
        );
    }

    #[test]
    fn present_files_are_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pxe")).unwrap();
        std::fs::write(dir.path().join("pxe/vmlinuz"), b"k").unwrap();
        let artefacts = Artefacts::at(dir.path());
        assert_eq!(artefacts.pxe_kernel().unwrap(), dir.path().join("pxe/vmlinuz"));
        assert!(artefacts.pxe_initrd().is_err());
    }
}
