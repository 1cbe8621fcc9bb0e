//! What a node is made of: firmware, boot medium, memory, CPUs and NICs.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::artefacts::Artefacts;
use crate::error::{Error, Result};

/// The kernel command line of a Clump node (the one GRUB, iPXE and pxelinux pass; see ARCHITECTURE.md).
pub const NODE_CMDLINE: &str = "console=tty0 console=ttyS0,115200 quiet loglevel=3 panic=10";

/// Default guest memory.
pub const DEFAULT_MEMORY_MIB: u32 = 1024;

/// The firmware the virtual PC starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS (QEMU's default).
    Bios,
    /// OVMF from Debian's `ovmf` package, with a private copy of the variable store.
    Uefi,
}

/// What the node boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Medium {
    /// An ISO image in a CD-ROM drive.
    Cd(PathBuf),
    /// An image attached as a USB mass-storage disk on an xHCI controller.
    Usb(PathBuf),
    /// Direct kernel boot (QEMU loads kernel and initramfs itself), e.g. from `out/pxe`.
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
    /// No disk: the firmware boots the first NIC through its iPXE ROM (DHCP + TFTP from the lab's
    /// dnsmasq, which serves `out/pxe`). Only useful on a [`crate::Lab`] with a TFTP root.
    Pxe,
}

/// The ways people and tests usually boot a node from the build outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// `out/clump.iso` as a CD under SeaBIOS.
    IsoBios,
    /// `out/clump.iso` as a CD under OVMF.
    IsoUefi,
    /// `out/clump.iso` as a USB disk under SeaBIOS.
    Usb,
    /// `out/pxe/vmlinuz` + `initrd.img` by direct kernel boot (fastest).
    Kernel,
    /// Netboot under SeaBIOS: the NIC's iPXE ROM fetches `boot.ipxe` from the lab's TFTP server.
    PxeBios,
    /// Netboot under OVMF: the NIC's iPXE EFI driver fetches `boot.ipxe` from the lab's TFTP server.
    PxeUefi,
}

impl Boot {
    /// All values, in the order the CLI lists them.
    pub const ALL: [Boot; 6] = [
        Boot::IsoBios,
        Boot::IsoUefi,
        Boot::Usb,
        Boot::Kernel,
        Boot::PxeBios,
        Boot::PxeUefi,
    ];

    /// Whether this boot needs a DHCP and TFTP server (a [`crate::Lab`]).
    pub fn is_netboot(self) -> bool {
        matches!(self, Boot::PxeBios | Boot::PxeUefi)
    }

    /// Firmware and medium for this way of booting, with the artefacts checked to exist.
    pub fn resolve(self, artefacts: &Artefacts) -> Result<(Firmware, Medium)> {
        Ok(match self {
            Boot::IsoBios => (Firmware::Bios, Medium::Cd(artefacts.iso()?)),
            Boot::IsoUefi => (Firmware::Uefi, Medium::Cd(artefacts.iso()?)),
            Boot::Usb => (Firmware::Bios, Medium::Usb(artefacts.iso()?)),
            Boot::Kernel => (
                Firmware::Bios,
                Medium::Kernel {
                    kernel: artefacts.pxe_kernel()?,
                    initrd: artefacts.pxe_initrd()?,
                    append: NODE_CMDLINE.to_owned(),
                },
            ),
            Boot::PxeBios => {
                artefacts.pxe_script()?;
                (Firmware::Bios, Medium::Pxe)
            }
            Boot::PxeUefi => {
                artefacts.pxe_script()?;
                (Firmware::Uefi, Medium::Pxe)
            }
        })
    }
}

impl fmt::Display for Boot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Boot::IsoBios => "iso-bios",
            Boot::IsoUefi => "iso-uefi",
            Boot::Usb => "usb",
            Boot::Kernel => "kernel",
            Boot::PxeBios => "pxe-bios",
            Boot::PxeUefi => "pxe-uefi",
        })
    }
}

impl FromStr for Boot {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Boot::ALL.into_iter().find(|b| b.to_string() == s).ok_or_else(|| {
            format!("unknown boot medium {s:?} (one of: iso-bios, iso-uefi, usb, kernel, pxe-bios, pxe-uefi)")
        })
    }
}

/// An emulated network card model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicModel {
    VirtioNetPci,
    E1000,
    E1000e,
    Rtl8139,
}

impl NicModel {
    /// All models the lab knows.
    pub const ALL: [NicModel; 4] = [
        NicModel::VirtioNetPci,
        NicModel::E1000,
        NicModel::E1000e,
        NicModel::Rtl8139,
    ];

    /// QEMU's device name (`-device <name>`).
    pub fn qemu_device(self) -> &'static str {
        match self {
            NicModel::VirtioNetPci => "virtio-net-pci",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Rtl8139 => "rtl8139",
        }
    }
}

impl fmt::Display for NicModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.qemu_device())
    }
}

impl FromStr for NicModel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        NicModel::ALL
            .into_iter()
            .find(|m| m.qemu_device() == s)
            .ok_or_else(|| {
                format!("unknown NIC model {s:?} (one of: virtio-net-pci, e1000, e1000e, rtl8139)")
            })
    }
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A stable, locally administered address in QEMU's 52:54:00 range for NIC `index` of node `node`,
    /// so that nodes of one lab get distinct addresses and a node keeps its address between boots.
    pub fn derived(node: &str, index: u8) -> Mac {
        // FNV-1a: small, stable across Rust versions (unlike DefaultHasher).
        let hash = node.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let [a, b, ..] = hash.to_be_bytes();
        Mac([0x52, 0x54, 0x00, a, b, index])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Where a NIC's frames go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetBackend {
    /// A QEMU hub with this NIC as its only port: the link has carrier, nothing leaves QEMU.
    Isolated,
    /// A tap device `ifname` that already exists in network namespace `netns` (a [`crate::Lab`]
    /// creates both and puts the tap on its bridge). QEMU then runs inside that namespace; all tap
    /// NICs of one node must be in the same namespace.
    Tap { netns: String, ifname: String },
}

/// One network card of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub model: NicModel,
    pub mac: Mac,
    pub backend: NetBackend,
}

/// Everything needed to start one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Short name, used in logs, errors and derived MAC addresses.
    pub name: String,
    pub firmware: Firmware,
    pub medium: Medium,
    pub memory_mib: u32,
    pub cpus: u32,
    pub nics: Vec<Nic>,
    /// Where the serial log, sockets and firmware variables go; a temporary directory (removed when
    /// the node is dropped) when `None`.
    pub workdir: Option<PathBuf>,
    /// Options added to the kernel command line (e.g. `clump.key=<64 hex>`). Direct kernel boot
    /// ([`Medium::Kernel`]) only: GRUB and iPXE take theirs from the image, so [`crate::Node::start`]
    /// refuses extra options for any other medium.
    pub extra_cmdline: Vec<String>,
}

impl NodeSpec {
    /// A node with 1 CPU, [`DEFAULT_MEMORY_MIB`] and no NIC.
    pub fn new(name: impl Into<String>, firmware: Firmware, medium: Medium) -> Self {
        Self {
            name: name.into(),
            firmware,
            medium,
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: 1,
            nics: Vec::new(),
            workdir: None,
            extra_cmdline: Vec::new(),
        }
    }

    /// A node booted the given way from the build outputs.
    pub fn from_artefacts(name: impl Into<String>, boot: Boot, artefacts: &Artefacts) -> Result<Self> {
        let (firmware, medium) = boot.resolve(artefacts)?;
        Ok(Self::new(name, firmware, medium))
    }

    /// Adds an isolated NIC of the given model with a derived MAC address.
    pub fn nic(mut self, model: NicModel) -> Self {
        let index = u8::try_from(self.nics.len()).unwrap_or(u8::MAX);
        let mac = Mac::derived(&self.name, index);
        self.nics.push(Nic {
            model,
            mac,
            backend: NetBackend::Isolated,
        });
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    pub fn workdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// Adds an option to the kernel command line (direct kernel boot only; see
    /// [`NodeSpec::extra_cmdline`]).
    pub fn cmdline(mut self, option: impl Into<String>) -> Self {
        self.extra_cmdline.push(option.into());
        self
    }

    /// The whole kernel command line QEMU passes (`-append`): the medium's, then the extra options.
    /// `None` for media that boot through firmware and a boot loader.
    pub fn kernel_cmdline(&self) -> Option<String> {
        let Medium::Kernel { append, .. } = &self.medium else {
            return None;
        };
        let mut line = append.clone();
        for option in &self.extra_cmdline {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(option);
        }
        Some(line)
    }

    /// Checks what [`crate::Node::start`] cannot do: extra kernel options without direct kernel boot.
    pub fn check(&self) -> Result<()> {
        if !self.extra_cmdline.is_empty() && self.kernel_cmdline().is_none() {
            return Err(Error::Spec(format!(
                "node {}: extra kernel command line options ({}) need direct kernel boot (medium kernel)",
                self.name,
                self.extra_cmdline.join(" ")
            )));
        }
        Ok(())
    }

    /// The network namespace QEMU must run in: the one of the node's tap NICs, if it has any.
    pub fn netns(&self) -> Result<Option<&str>> {
        let mut found: Option<&str> = None;
        for nic in &self.nics {
            if let NetBackend::Tap { netns, .. } = &nic.backend {
                match found {
                    Some(other) if other != netns => {
                        return Err(Error::Spec(format!(
                            "node {}: tap NICs in two network namespaces ({other}, {netns})",
                            self.name
                        )))
                    }
                    _ => found = Some(netns),
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for boot in Boot::ALL {
            assert_eq!(boot.to_string().parse::<Boot>().unwrap(), boot);
        }
        for model in NicModel::ALL {
            assert_eq!(model.to_string().parse::<NicModel>().unwrap(), model);
        }
        assert!("ne2k".parse::<NicModel>().unwrap_err().contains("rtl8139"));
        assert!("floppy".parse::<Boot>().unwrap_err().contains("iso-uefi"));
    }

    #[test]
    fn derived_macs_are_stable_local_and_distinct() {
        let a0 = Mac::derived("node1", 0);
        assert_eq!(a0, Mac::derived("node1", 0));
        assert_ne!(a0, Mac::derived("node1", 1));
        assert_ne!(a0, Mac::derived("node2", 0));
        assert!(a0.to_string().starts_with("52:54:00:"));
        assert_eq!(a0.to_string().len(), 17);
    }

    #[test]
    fn extra_options_go_on_the_kernel_command_line_of_a_direct_boot_only() {
        let kernel = Medium::Kernel {
            kernel: "/p/vmlinuz".into(),
            initrd: "/p/initrd.img".into(),
            append: NODE_CMDLINE.into(),
        };
        let spec = NodeSpec::new("n", Firmware::Bios, kernel).cmdline("clump.key=00ff");
        assert!(spec.check().is_ok());
        assert_eq!(
            spec.kernel_cmdline().unwrap(),
            format!("{NODE_CMDLINE} clump.key=00ff")
        );
        let cd = NodeSpec::new("n", Firmware::Bios, Medium::Cd("x.iso".into()));
        assert!(cd.check().is_ok() && cd.kernel_cmdline().is_none());
        let err = cd.cmdline("clump.shell=off").check().unwrap_err().to_string();
        assert!(err.contains("clump.shell=off") && err.contains("kernel"), "{err}");
    }

    #[test]
    fn nics_get_consecutive_macs() {
        let spec = NodeSpec::new("n", Firmware::Bios, Medium::Cd("x.iso".into()))
            .nic(NicModel::E1000)
            .nic(NicModel::Rtl8139);
        assert_eq!(spec.nics[0].mac.0[5], 0);
        assert_eq!(spec.nics[1].mac.0[5], 1);
        assert_eq!(spec.nics[1].model, NicModel::Rtl8139);
    }
}
