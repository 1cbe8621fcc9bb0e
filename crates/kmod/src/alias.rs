//! `modules.alias`: `alias <fnmatch pattern> <module>` per line.

use crate::{module_name, Error};
use glob::Pattern;

struct Entry {
    /// The pattern's text up to its first wildcard: a cheap filter before the glob match.
    literal_prefix: String,
    pattern: Pattern,
    module: String,
}

/// The alias patterns of `modules.alias`, in file order (modprobe's order).
#[derive(Default)]
pub struct AliasTable {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for AliasTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliasTable")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl AliasTable {
    /// Parses the file, keeping every good line; bad lines are returned, not fatal, so one broken
    /// line cannot stop a node from loading its NIC driver.
    pub fn parse(text: &str) -> (Self, Vec<Error>) {
        let mut table = AliasTable::default();
        let mut errors = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Ok(entry) => table.entries.push(entry),
                Err(reason) => errors.push(Error::Parse {
                    file: "modules.alias",
                    line: idx + 1,
                    reason,
                }),
            }
        }
        (table, errors)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The modules whose aliases match `modalias`, each once, in file order.
    pub fn lookup(&self, modalias: &str) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        for e in &self.entries {
            if modalias.starts_with(&e.literal_prefix)
                && e.pattern.matches(modalias)
                && !found.contains(&e.module)
            {
                found.push(e.module.clone());
            }
        }
        found
    }
}

fn parse_line(line: &str) -> Result<Entry, String> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("alias"), Some(pat), Some(module), None) => {
            let pattern = Pattern::new(pat).map_err(|e| format!("bad pattern {pat:?}: {e}"))?;
            let literal_prefix: String = pat
                .chars()
                .take_while(|c| !matches!(c, '*' | '?' | '['))
                .collect();
            Ok(Entry {
                literal_prefix,
                pattern,
                module: module_name(module),
            })
        }
        (Some("alias"), ..) => Err("expected `alias <pattern> <module>`".into()),
        (Some(word), ..) => Err(format!("unknown keyword {word:?}")),
        (None, ..) => Err("empty line".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# Aliases extracted from modules themselves.
alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias pci:v00001234d00001111sv*sd*bc03sc*i* bochs
alias pci:v00001234d00001111sv*sd*bc03sc*i* bochs
alias acpi*:PNP0C0C:* button
alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139too
alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139cp
alias net-pf-17 af-packet
";

    #[test]
    fn matches_like_modprobe() {
        let (t, errs) = AliasTable::parse(SAMPLE);
        assert!(errs.is_empty());
        assert_eq!(
            t.lookup("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"),
            ["virtio_pci"]
        );
        assert_eq!(t.lookup("virtio:d00000001v00001AF4"), ["virtio_net"]);
        assert_eq!(
            t.lookup("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"),
            ["e1000"]
        );
        assert_eq!(
            t.lookup("pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00"),
            ["bochs"]
        );
        assert_eq!(t.lookup("acpi:PNP0C0C:"), ["button"]);
        assert_eq!(
            t.lookup("pci:v000010ECd00008139sv00001AF4sd00001100bc02sc00i00"),
            ["8139too", "8139cp"]
        );
        assert_eq!(t.lookup("net-pf-17"), ["af_packet"]);
        assert!(t.lookup("pci:v0000DEADd0000BEEFsv0sd0bc0sc0i0").is_empty());
        assert!(t.lookup("").is_empty());
    }

    #[test]
    fn bad_lines_are_reported_and_skipped() {
        let text = "alias a* one\nalias\nbogus x y\nalias b[ two\nalias c* three extra\nalias c* three\n";
        let (t, errs) = AliasTable::parse(text);
        assert_eq!(t.len(), 2);
        let lines: Vec<usize> = errs
            .iter()
            .map(|e| match e {
                Error::Parse { line, .. } => *line,
                other => panic!("unexpected {other}"),
            })
            .collect();
        assert_eq!(lines, [2, 3, 4, 5]);
        assert_eq!(t.lookup("c1"), ["three"]);
    }

    #[test]
    fn binary_garbage_does_not_panic() {
        let text =
            String::from_utf8_lossy(&[0xff, b'\n', b'a', 0, b' ', b'*', b'\n', b'[', b']']).into_owned();
        let (t, errs) = AliasTable::parse(&text);
        assert!(t.is_empty());
        assert_eq!(errs.len(), 3);
    }
}
