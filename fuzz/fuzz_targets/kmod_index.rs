//! The module index files `depmod` writes (`modules.alias`, `modules.dep`, `modules.builtin`),
//! `/proc/modules` and kernel uevents, as `clump-kmod` reads them at boot. Nothing may panic; a
//! lookup names each module once; a load order ends with the module asked for, holds each module
//! once.
#![no_main]

use clump_kmod::builtin::{parse_builtin, parse_proc_modules};
use clump_kmod::{module_name, uevent, AliasTable, DepTable};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

/// Lookups per input: each is a scan of the whole table.
const LOOKUPS: usize = 16;

fuzz_target!(|data: &[u8]| {
    if let Some(ev) = uevent::parse(data) {
        assert!(!ev.action.is_empty());
        assert!(ev.devpath.starts_with('/'));
    }
    let text = String::from_utf8_lossy(data);
    let _ = parse_builtin(&text);
    let _ = parse_proc_modules(&text);

    let (aliases, _) = AliasTable::parse(&text);
    let (deps, _) = DepTable::parse(&text);
    // The input's own words as modaliases and module names: they reach the lines it holds.
    let words = text
        .split(|c: char| c.is_whitespace() || c == ':')
        .filter(|w| !w.is_empty());
    for word in words.take(LOOKUPS) {
        let found = aliases.lookup(word);
        let unique: HashSet<&String> = found.iter().collect();
        assert_eq!(
            unique.len(),
            found.len(),
            "{word:?} found a module twice: {found:?}"
        );

        let Some(order) = deps.load_order(word) else {
            assert!(!deps.contains(word));
            continue;
        };
        assert_eq!(
            order.last().map(|m| m.name.as_str()),
            Some(module_name(word).as_str())
        );
        let names: HashSet<&str> = order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names.len(), order.len(), "a module twice in {order:?}");
    }
});
