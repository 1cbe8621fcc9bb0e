//! The QEMU command line for a node (pure: no I/O, unit-tested).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::spec::{Firmware, Medium, NetBackend, NodeSpec};

/// The QEMU binary (x86_64 system emulator).
pub const QEMU: &str = "qemu-system-x86_64";

/// The files of a running node inside its workdir.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    /// Everything the guest writes to ttyS0, as the lab reads it from the serial socket.
    pub serial_log: PathBuf,
    /// ttyS0 as a unix socket (QEMU listens): what is written to it is typed into the console.
    pub serial_socket: PathBuf,
    /// The QMP socket (QEMU listens).
    pub qmp_socket: PathBuf,
    /// QEMU's own stdout and stderr.
    pub qemu_output: PathBuf,
    /// The node's private copy of the OVMF variable store (UEFI only).
    pub uefi_vars: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            serial_log: dir.join("serial.log"),
            serial_socket: dir.join("serial.sock"),
            qmp_socket: dir.join("qmp.sock"),
            qemu_output: dir.join("qemu.log"),
            uefi_vars: dir.join("OVMF_VARS.fd"),
        }
    }
}

/// QEMU's arguments for `spec`. `ovmf_code` is required for [`Firmware::Uefi`].
pub fn qemu_args(spec: &NodeSpec, layout: &Layout, ovmf_code: Option<&Path>) -> Vec<OsString> {
    let mut args = Args::default();
    args.push(["-name", &spec.name]);
    // TCG only: KVM is not usable on the machines this project runs on.
    args.push(["-machine", "q35", "-accel", "tcg"]);
    args.push(["-m", &spec.memory_mib.to_string(), "-smp", &spec.cpus.to_string()]);
    // -nodefaults: no default NIC (it would be user-mode networking), no default serial/monitor.
    args.push(["-nodefaults", "-display", "none", "-vga", "std", "-no-reboot"]);
    args.push(["-chardev"]);
    // No `logfile=`: the lab writes serial.log from the socket (see `serial::Console`).
    args.os([
        "socket,id=serial0,server=on,wait=off,path=".into(),
        opt_path(&layout.serial_socket),
    ]);
    args.push(["-serial", "chardev:serial0"]);
    args.push(["-chardev"]);
    args.os([
        "socket,id=qmp,server=on,wait=off,path=".into(),
        opt_path(&layout.qmp_socket),
    ]);
    args.push(["-mon", "chardev=qmp,mode=control"]);

    if let (Firmware::Uefi, Some(code)) = (spec.firmware, ovmf_code) {
        args.push(["-drive"]);
        args.os([
            "if=pflash,format=raw,unit=0,readonly=on,file=".into(),
            opt_path(code),
        ]);
        args.push(["-drive"]);
        args.os([
            "if=pflash,format=raw,unit=1,file=".into(),
            opt_path(&layout.uefi_vars),
        ]);
    }

    match &spec.medium {
        Medium::Cd(iso) => {
            args.push(["-drive"]);
            args.os([
                "if=none,id=boot,media=cdrom,format=raw,readonly=on,file=".into(),
                opt_path(iso),
            ]);
            args.push(["-device", "ide-cd,drive=boot,bootindex=0"]);
        }
        Medium::Usb(image) => {
            args.push(["-device", "qemu-xhci,id=xhci"]);
            args.push(["-drive"]);
            args.os([
                "if=none,id=boot,format=raw,readonly=on,file=".into(),
                opt_path(image),
            ]);
            args.push(["-device", "usb-storage,bus=xhci.0,drive=boot,bootindex=0"]);
        }
        Medium::Kernel { kernel, initrd, .. } => {
            args.push(["-kernel"]);
            args.os([kernel.into()]);
            args.push(["-initrd"]);
            args.os([initrd.into()]);
            args.push(["-append", &spec.kernel_cmdline().unwrap_or_default()]);
        }
        // The first NIC is the boot device (below); no disk at all.
        Medium::Pxe => {}
    }

    for (i, nic) in spec.nics.iter().enumerate() {
        match &nic.backend {
            NetBackend::Isolated => args.push(["-netdev", &format!("hubport,id={},hubid={i}", netdev_id(i))]),
            NetBackend::Tap { ifname, .. } => args.push([
                "-netdev",
                &format!("tap,id={},ifname={ifname},script=no,downscript=no", netdev_id(i)),
            ]),
        }
        let boot = if i == 0 && spec.medium == Medium::Pxe {
            ",bootindex=0"
        } else {
            ""
        };
        args.push([
            "-device",
            &format!(
                "{},netdev={},mac={}{boot}",
                nic.model.qemu_device(),
                netdev_id(i),
                nic.mac
            ),
        ]);
    }
    args.0
}

/// QEMU's id of NIC `index`'s netdev (QMP names it so, e.g. for the lab's netfilters).
pub fn netdev_id(index: usize) -> String {
    format!("net{index}")
}

/// A path as a QEMU option value: commas are doubled.
fn opt_path(path: &Path) -> OsString {
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

trait ConcatOs {
    fn concat_os(self) -> OsString;
}

impl<const N: usize> ConcatOs for [OsString; N] {
    fn concat_os(self) -> OsString {
        self.into_iter().fold(OsString::new(), |mut acc, p| {
            acc.push(p);
            acc
        })
    }
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push<const N: usize>(&mut self, items: [&str; N]) {
        self.0.extend(items.iter().map(OsString::from));
    }

    /// One argument concatenated from parts.
    fn os<const N: usize>(&mut self, parts: [OsString; N]) {
        self.0.push(parts.concat_os());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{NicModel, NodeSpec};

    fn joined(spec: &NodeSpec, ovmf: Option<&Path>) -> String {
        let layout = Layout::new(Path::new("/w"));
        qemu_args(spec, &layout, ovmf)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn tcg_only_no_user_networking_no_default_devices() {
        let spec =
            NodeSpec::new("n1", Firmware::Bios, Medium::Cd("/o/clump.iso".into())).nic(NicModel::E1000);
        let cmd = joined(&spec, None);
        assert!(cmd.contains("-accel tcg"));
        assert!(!cmd.contains("kvm"));
        assert!(!cmd.contains("user"), "{cmd}");
        assert!(cmd.contains("-nodefaults"));
        assert!(cmd.contains("-no-reboot"));
        assert!(
            cmd.contains("path=/w/serial.sock -serial chardev:serial0"),
            "{cmd}"
        );
        assert!(!cmd.contains("logfile"), "the lab writes the serial log: {cmd}");
        assert!(cmd.contains("path=/w/qmp.sock"));
        assert!(cmd.contains("file=/o/clump.iso -device ide-cd,drive=boot,bootindex=0"));
        assert!(!cmd.contains("pflash"));
    }

    #[test]
    fn each_nic_has_its_own_hub() {
        let spec = NodeSpec::new("n", Firmware::Bios, Medium::Cd("/x".into()))
            .nic(NicModel::VirtioNetPci)
            .nic(NicModel::Rtl8139);
        let cmd = joined(&spec, None);
        let mac0 = spec.nics[0].mac;
        assert!(cmd.contains(&format!(
            "-netdev hubport,id=net0,hubid=0 -device virtio-net-pci,netdev=net0,mac={mac0}"
        )));
        assert!(cmd.contains("-netdev hubport,id=net1,hubid=1 -device rtl8139,netdev=net1,mac="));
    }

    #[test]
    fn pxe_boots_the_first_tap_nic_and_has_no_disk() {
        let mut spec = NodeSpec::new("n", Firmware::Bios, Medium::Pxe)
            .nic(NicModel::E1000)
            .nic(NicModel::Rtl8139);
        for (i, nic) in spec.nics.iter_mut().enumerate() {
            nic.backend = NetBackend::Tap {
                netns: "clump-lab-1-0".into(),
                ifname: format!("tap{i}"),
            };
        }
        let cmd = joined(&spec, None);
        assert!(cmd.contains(
            "-netdev tap,id=net0,ifname=tap0,script=no,downscript=no -device e1000,netdev=net0,mac="
        ));
        assert!(
            cmd.contains(",bootindex=0 -netdev tap,id=net1,ifname=tap1,"),
            "{cmd}"
        );
        assert_eq!(cmd.matches("bootindex").count(), 1, "{cmd}");
        assert!(!cmd.contains("-drive") && !cmd.contains("-kernel"), "{cmd}");
        assert!(!cmd.contains("user"), "{cmd}");
    }

    #[test]
    fn uefi_usb_uses_pflash_and_xhci() {
        let spec = NodeSpec::new("n", Firmware::Uefi, Medium::Usb("/o/a,b.iso".into()));
        let cmd = joined(&spec, Some(Path::new("/fw/CODE.fd")));
        assert!(cmd.contains("unit=0,readonly=on,file=/fw/CODE.fd"));
        assert!(cmd.contains("unit=1,file=/w/OVMF_VARS.fd"));
        assert!(cmd.contains("qemu-xhci,id=xhci"));
        assert!(cmd.contains("file=/o/a,,b.iso"), "commas are escaped: {cmd}");
        assert!(cmd.contains("usb-storage,bus=xhci.0,drive=boot,bootindex=0"));
    }

    #[test]
    fn kernel_boot_passes_the_command_line_as_one_argument() {
        let spec = NodeSpec::new(
            "n",
            Firmware::Bios,
            Medium::Kernel {
                kernel: "/p/vmlinuz".into(),
                initrd: "/p/initrd.img".into(),
                append: "a b=c".into(),
            },
        );
        let args = qemu_args(&spec, &Layout::new(Path::new("/w")), None);
        let i = args.iter().position(|a| a == "-append").unwrap();
        assert_eq!(args[i + 1], "a b=c");
        let spec = spec.cmdline("clump.key=ab").cmdline("x=\"y z\"");
        let args = qemu_args(&spec, &Layout::new(Path::new("/w")), None);
        let i = args.iter().position(|a| a == "-append").unwrap();
        assert_eq!(args[i + 1], "a b=c clump.key=ab x=\"y z\"");
        assert!(joined(&spec, None).contains("-kernel /p/vmlinuz -initrd /p/initrd.img"));
    }
}
