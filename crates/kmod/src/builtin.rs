//! `modules.builtin` and `/proc/modules`: which modules need no loading.

use crate::module_name;
use std::collections::HashSet;

/// Names of modules compiled into the kernel (`modules.builtin`: one path per line).
pub fn parse_builtin(text: &str) -> HashSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(module_name)
        .collect()
}

/// Names of modules already loaded (`/proc/modules`: the name is the first word).
pub fn parse_proc_modules(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(module_name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_and_loaded() {
        let b = parse_builtin("kernel/drivers/net/ethernet/intel/e1000/e1000.ko\n\nkernel/fs/ext4/ext4.ko\n");
        assert!(b.contains("e1000") && b.contains("ext4") && b.len() == 2);
        let l =
            parse_proc_modules("virtio_net 61440 0 - Live 0x0\nnet_failover 20480 1 virtio_net, Live 0x0\n");
        assert!(l.contains("virtio_net") && l.contains("net_failover"));
    }
}
