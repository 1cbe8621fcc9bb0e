//! UEFI firmware: OVMF from Debian's `ovmf` package.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where Debian installs OVMF.
const OVMF_DIR: &str = "/usr/share/OVMF";

/// Code/variables-template pairs, preferred first (Debian 12 ships the 4 MiB build as the default).
const OVMF_PAIRS: [(&str, &str); 2] = [
    ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
    ("OVMF_CODE.fd", "OVMF_VARS.fd"),
];

/// An OVMF build: the read-only code and the template of the variable store (each node gets a copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovmf {
    pub code: PathBuf,
    pub vars_template: PathBuf,
}

impl Ovmf {
    /// Finds OVMF (without Secure Boot) in `/usr/share/OVMF`.
    pub fn find() -> Result<Self> {
        Self::find_in(Path::new(OVMF_DIR))
    }

    fn find_in(dir: &Path) -> Result<Self> {
        OVMF_PAIRS
            .iter()
            .map(|(code, vars)| Ovmf {
                code: dir.join(code),
                vars_template: dir.join(vars),
            })
            .find(|o| o.code.is_file() && o.vars_template.is_file())
            .ok_or_else(|| Error::OvmfMissing {
                looked_for: OVMF_PAIRS
                    .iter()
                    .map(|(c, v)| format!("{}/{{{c},{v}}}", dir.display()))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_4m_pair_and_needs_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let touch = |n: &str| std::fs::write(dir.path().join(n), b"").unwrap();
        let err = Ovmf::find_in(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("OVMF_CODE_4M.fd") && err.contains("ovmf package"),
            "{err}"
        );
        touch("OVMF_CODE.fd");
        touch("OVMF_VARS.fd");
        touch("OVMF_CODE_4M.fd");
        assert_eq!(
            Ovmf::find_in(dir.path()).unwrap().code,
            dir.path().join("OVMF_CODE.fd")
        );
        touch("OVMF_VARS_4M.fd");
        let ovmf = Ovmf::find_in(dir.path()).unwrap();
        assert_eq!(ovmf.code, dir.path().join("OVMF_CODE_4M.fd"));
        assert_eq!(ovmf.vars_template, dir.path().join("OVMF_VARS_4M.fd"));
    }
}
