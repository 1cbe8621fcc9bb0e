/// The canonical name of a module, as the kernel reports it in /proc/modules: `-` becomes `_`, and a
/// path or file name loses its directory and `.ko[.xz|.zst|.gz]` suffix.
pub fn module_name(s: &str) -> String {
    let base = s.rsplit('/').next().unwrap_or(s);
    let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|suffix| base.strip_suffix(suffix))
        .unwrap_or(base);
    stem.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::module_name;

    #[test]
    fn normalises_paths_suffixes_and_dashes() {
        assert_eq!(module_name("kernel/drivers/net/virtio_net.ko"), "virtio_net");
        assert_eq!(
            module_name("kernel/drivers/x/snd-hda-intel.ko.xz"),
            "snd_hda_intel"
        );
        assert_eq!(module_name("e1000e"), "e1000e");
        assert_eq!(module_name("af-packet"), "af_packet");
    }
}
