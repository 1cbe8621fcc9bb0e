//! `modules.dep`: `path/of/module.ko: path/of/dep1.ko path/of/dep2.ko` per line.

use crate::{module_name, Error};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone)]
struct Entry {
    path: String,
    deps: Vec<String>,
}

/// The module dependency graph, keyed by canonical module name.
#[derive(Debug, Default)]
pub struct DepTable {
    modules: HashMap<String, Entry>,
}

/// A module to load and the path of its file, relative to `/lib/modules/<kver>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    pub name: String,
    pub path: String,
}

impl DepTable {
    /// Parses the file, keeping every good line and returning the bad ones.
    pub fn parse(text: &str) -> (Self, Vec<Error>) {
        let mut table = DepTable::default();
        let mut errors = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((path, deps)) = line.split_once(':') else {
                errors.push(Error::Parse {
                    file: "modules.dep",
                    line: idx + 1,
                    reason: "missing ':'".into(),
                });
                continue;
            };
            let path = path.trim();
            if path.is_empty() || path.contains(char::is_whitespace) {
                errors.push(Error::Parse {
                    file: "modules.dep",
                    line: idx + 1,
                    reason: "bad module path".into(),
                });
                continue;
            }
            let deps = deps.split_whitespace().map(module_name).collect();
            table.modules.insert(
                module_name(path),
                Entry {
                    path: path.to_string(),
                    deps,
                },
            );
        }
        (table, errors)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(&module_name(name))
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// `name` and everything it needs, dependencies first, each once. Unknown dependencies are
    /// left out (the kernel will name the missing symbol when the module loads); a cycle, which
    /// depmod would reject, cannot loop here.
    pub fn load_order(&self, name: &str) -> Option<Vec<ModuleFile>> {
        let root = module_name(name);
        self.modules.get(&root)?;
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        self.visit(&root, &mut seen, &mut order);
        Some(order)
    }

    fn visit(&self, name: &str, seen: &mut HashSet<String>, order: &mut Vec<ModuleFile>) {
        if !seen.insert(name.to_string()) {
            return;
        }
        let Some(entry) = self.modules.get(name) else {
            return;
        };
        // modprobe loads the listed dependencies from the last to the first.
        for dep in entry.deps.iter().rev() {
            self.visit(dep, seen, order);
        }
        order.push(ModuleFile {
            name: name.to_string(),
            path: entry.path.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/gpu/drm/tiny/bochs.ko: kernel/drivers/gpu/drm/drm_vram_helper.ko kernel/drivers/gpu/drm/drm_kms_helper.ko kernel/drivers/gpu/drm/drm.ko
kernel/drivers/gpu/drm/drm_vram_helper.ko: kernel/drivers/gpu/drm/drm_kms_helper.ko kernel/drivers/gpu/drm/drm.ko
kernel/drivers/gpu/drm/drm_kms_helper.ko: kernel/drivers/gpu/drm/drm.ko
kernel/drivers/gpu/drm/drm.ko:
kernel/x/a.ko: kernel/x/b.ko
kernel/x/b.ko: kernel/x/a.ko
kernel/x/uses-missing.ko: kernel/x/gone.ko
";

    fn names(v: Vec<ModuleFile>) -> Vec<String> {
        v.into_iter().map(|m| m.name).collect()
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let (t, errs) = DepTable::parse(SAMPLE);
        assert!(errs.is_empty());
        assert_eq!(
            names(t.load_order("virtio_net").unwrap()),
            ["failover", "net_failover", "virtio_net"]
        );
        assert_eq!(
            names(t.load_order("bochs").unwrap()),
            ["drm", "drm_kms_helper", "drm_vram_helper", "bochs"]
        );
        assert_eq!(
            t.load_order("virtio-net").unwrap()[2].path,
            "kernel/drivers/net/virtio_net.ko"
        );
    }

    #[test]
    fn unknown_cycles_and_missing_deps() {
        let (t, _) = DepTable::parse(SAMPLE);
        assert!(t.load_order("nonexistent").is_none());
        assert_eq!(names(t.load_order("a").unwrap()), ["b", "a"]);
        assert_eq!(names(t.load_order("uses_missing").unwrap()), ["uses_missing"]);
    }

    #[test]
    fn malformed_lines() {
        let (t, errs) = DepTable::parse("no colon here\n: kernel/x.ko\nkernel/a b.ko: x\nkernel/ok.ko:\n");
        assert_eq!(t.len(), 1);
        assert_eq!(errs.len(), 3);
    }
}
