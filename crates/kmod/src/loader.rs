use crate::builtin::{parse_builtin, parse_proc_modules};
use crate::{module_name, AliasTable, DepTable, Error, ModuleSys};
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

/// What happened to one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Loaded,
    /// The kernel had it already (loaded before us, or by a concurrent request).
    AlreadyLoaded,
    /// Compiled into the kernel.
    Builtin,
    /// Not in modules.dep: the image does not ship it.
    NotShipped,
    /// The kernel refused it; the message says why.
    Failed(String),
}

/// One module the loader dealt with, with the alias that asked for it (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadEvent {
    pub module: String,
    pub outcome: Outcome,
}

/// modprobe for a node: resolves names and modaliases, loads dependencies first, each module once.
pub struct Loader<S: ModuleSys> {
    root: PathBuf,
    aliases: AliasTable,
    deps: DepTable,
    builtin: HashSet<String>,
    /// Loaded, builtin or failed: never tried again in this boot.
    done: HashSet<String>,
    sys: S,
}

impl<S: ModuleSys> std::fmt::Debug for Loader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("root", &self.root)
            .field("done", &self.done.len())
            .finish()
    }
}

impl<S: ModuleSys> Loader<S> {
    pub fn new(root: PathBuf, aliases: AliasTable, deps: DepTable, builtin: HashSet<String>, sys: S) -> Self {
        Loader {
            root,
            aliases,
            deps,
            builtin,
            done: HashSet::new(),
            sys,
        }
    }

    /// Reads the index files under `root` (`/lib/modules/<kver>`) and `/proc/modules`. A missing
    /// modules.builtin or /proc/modules is not fatal; missing alias or dep files are. Bad lines are
    /// returned so the caller can log them.
    pub fn open(root: &Path, proc_modules: &Path, sys: S) -> Result<(Self, Vec<Error>), Error> {
        let read = |name: &str| {
            let path = root.join(name);
            std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })
        };
        let (aliases, mut errors) = AliasTable::parse(&read("modules.alias")?);
        let (deps, dep_errors) = DepTable::parse(&read("modules.dep")?);
        errors.extend(dep_errors);
        let builtin = read("modules.builtin")
            .map(|t| parse_builtin(&t))
            .unwrap_or_default();
        let mut loader = Loader::new(root.to_path_buf(), aliases, deps, builtin, sys);
        if let Ok(text) = std::fs::read_to_string(proc_modules) {
            loader.done.extend(parse_proc_modules(&text));
        }
        Ok((loader, errors))
    }

    /// Loads every module that claims `modalias`, with its dependencies.
    pub fn load_modalias(&mut self, modalias: &str) -> Vec<LoadEvent> {
        let mut events = Vec::new();
        for module in self.aliases.lookup(modalias) {
            events.extend(self.load(&module));
        }
        events
    }

    /// Loads `name` and its dependencies. Returns an event for each module acted on; modules dealt
    /// with earlier in this boot give no event.
    pub fn load(&mut self, name: &str) -> Vec<LoadEvent> {
        let name = module_name(name);
        if self.done.contains(&name) {
            return Vec::new();
        }
        if self.builtin.contains(&name) {
            self.done.insert(name.clone());
            return vec![LoadEvent {
                module: name,
                outcome: Outcome::Builtin,
            }];
        }
        let Some(order) = self.deps.load_order(&name) else {
            self.done.insert(name.clone());
            return vec![LoadEvent {
                module: name,
                outcome: Outcome::NotShipped,
            }];
        };
        let mut events = Vec::new();
        for file in order {
            if !self.done.insert(file.name.clone()) {
                continue;
            }
            let outcome = if self.builtin.contains(&file.name) {
                Outcome::Builtin
            } else {
                match self.sys.load(&self.root.join(&file.path)) {
                    Ok(()) => Outcome::Loaded,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Outcome::AlreadyLoaded,
                    Err(e) => Outcome::Failed(e.to_string()),
                }
            };
            events.push(LoadEvent {
                module: file.name,
                outcome,
            });
        }
        events
    }

    /// Never loads `name` in this boot (a blacklist entry).
    pub fn skip(&mut self, name: &str) {
        self.done.insert(module_name(name));
    }

    pub fn aliases(&self) -> &AliasTable {
        &self.aliases
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recording {
        calls: Vec<PathBuf>,
        fail: Option<&'static str>,
        exists: Option<&'static str>,
    }

    impl ModuleSys for Recording {
        fn load(&mut self, path: &Path) -> io::Result<()> {
            self.calls.push(path.to_path_buf());
            let name = module_name(&path.to_string_lossy());
            if self.fail == Some(name.as_str()) {
                return Err(io::Error::from_raw_os_error(8)); // ENOEXEC: bad module format
            }
            if self.exists == Some(name.as_str()) {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            Ok(())
        }
    }

    fn loader(sys: Recording) -> Loader<Recording> {
        let (aliases, _) = AliasTable::parse(
            "alias virtio:d00000001v* virtio_net\nalias pci:v00001AF4d* virtio_pci\nalias pci:v000010ECd00008139* 8139too\nalias pci:v000010ECd00008139* 8139cp\nalias foo* ext4\nalias bar* gone\n",
        );
        let (deps, _) = DepTable::parse(
            "kernel/virtio_net.ko: kernel/net_failover.ko kernel/failover.ko\nkernel/net_failover.ko: kernel/failover.ko\nkernel/failover.ko:\nkernel/virtio_pci.ko: kernel/virtio_pci_modern_dev.ko\nkernel/virtio_pci_modern_dev.ko:\nkernel/8139too.ko: kernel/mii.ko\nkernel/8139cp.ko: kernel/mii.ko\nkernel/mii.ko:\n",
        );
        let builtin = parse_builtin("kernel/fs/ext4/ext4.ko\n");
        Loader::new(PathBuf::from("/lib/modules/6.1"), aliases, deps, builtin, sys)
    }

    #[test]
    fn loads_deps_first_then_never_again() {
        let mut l = loader(Recording::default());
        let ev = l.load_modalias("virtio:d00000001v00001AF4");
        let mods: Vec<&str> = ev.iter().map(|e| e.module.as_str()).collect();
        assert_eq!(mods, ["failover", "net_failover", "virtio_net"]);
        assert!(ev.iter().all(|e| e.outcome == Outcome::Loaded));
        assert_eq!(
            l.sys.calls[0],
            PathBuf::from("/lib/modules/6.1/kernel/failover.ko")
        );
        assert!(l.load_modalias("virtio:d00000001v00001AF4").is_empty());
        assert_eq!(l.sys.calls.len(), 3);
    }

    #[test]
    fn shared_dependency_loaded_once_for_two_drivers() {
        let mut l = loader(Recording::default());
        let ev = l.load_modalias("pci:v000010ECd00008139sv0sd0bc02sc00i00");
        let mods: Vec<&str> = ev.iter().map(|e| e.module.as_str()).collect();
        assert_eq!(mods, ["mii", "8139too", "8139cp"]);
    }

    #[test]
    fn builtin_missing_failed_and_existing() {
        let mut l = loader(Recording {
            fail: Some("virtio_pci"),
            exists: Some("failover"),
            ..Default::default()
        });
        assert_eq!(l.load_modalias("foo1")[0].outcome, Outcome::Builtin);
        assert_eq!(l.load_modalias("bar1")[0].outcome, Outcome::NotShipped);
        let ev = l.load_modalias("pci:v00001AF4d00001000");
        assert_eq!(ev[0].outcome, Outcome::Loaded);
        assert!(matches!(ev[1].outcome, Outcome::Failed(_)));
        let ev = l.load("virtio-net");
        assert_eq!(ev[0].outcome, Outcome::AlreadyLoaded);
        assert!(
            l.load("virtio_pci").is_empty(),
            "a failed module is not retried in a loop"
        );
    }
}
