//! The image boots to `clump: ready` from each medium a PC offers: CD under SeaBIOS, CD under OVMF
//! (UEFI), and the same image as a USB disk. Each node is then powered off through ACPI.

use anyhow::{ensure, Context, Result};
use clump_e2e::{power_off_cleanly, screen_is_drawn, sh, start, wait_ready, READY_FROM_ISO};
use clump_lab::{Boot, NicModel};

/// Whether the running kernel was started by UEFI firmware.
fn booted_by_uefi(node: &mut clump_lab::Node) -> Result<bool> {
    Ok(sh(
        node,
        "if [ -d /sys/firmware/efi ]; then echo uefi; else echo bios; fi",
    )?
    .trim()
        == "uefi")
}

#[test]
fn iso_as_cd_under_bios_reaches_ready() -> Result<()> {
    let mut node = start("iso-bios", Boot::IsoBios, &[NicModel::VirtioNetPci])?;
    wait_ready(&mut node, READY_FROM_ISO)?;
    ensure!(
        !booted_by_uefi(&mut node)?,
        "the node says it booted by UEFI under SeaBIOS"
    );

    // The lab's screendump gives a real PNG of QEMU's standard VGA (what `clump-lab demo` saves).
    let png = node.layout().dir.join("screen.png");
    node.screendump(&png)?;
    let bytes = std::fs::read(&png).with_context(|| format!("reading {}", png.display()))?;
    ensure!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "screendump is not a PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into()?);
    let height = u32::from_be_bytes(bytes[20..24].try_into()?);
    ensure!(
        width >= 640 && height >= 400,
        "screendump is only {width}x{height}"
    );
    screen_is_drawn(&mut node, "status-screen")?;

    power_off_cleanly(&mut node)
}

#[test]
fn iso_as_cd_under_uefi_reaches_ready() -> Result<()> {
    let mut node = start("iso-uefi", Boot::IsoUefi, &[NicModel::VirtioNetPci])?;
    wait_ready(&mut node, READY_FROM_ISO)?;
    ensure!(
        booted_by_uefi(&mut node)?,
        "no /sys/firmware/efi: the node did not boot through OVMF"
    );
    // Under UEFI the kernel first draws on efifb, then bochs-drm takes fb0 over.
    screen_is_drawn(&mut node, "status-screen")?;
    power_off_cleanly(&mut node)
}

#[test]
fn iso_as_usb_disk_reaches_ready() -> Result<()> {
    // The USB disk is the only boot device the virtual PC has.
    let mut node = start("usb", Boot::Usb, &[NicModel::VirtioNetPci])?;
    wait_ready(&mut node, READY_FROM_ISO)?;
    let products = sh(&mut node, "cat /sys/bus/usb/devices/*/product 2>/dev/null; true")?;
    ensure!(
        products.contains("QEMU USB HARDDRIVE"),
        "the guest sees no USB disk; USB products:\n{products}"
    );
    power_off_cleanly(&mut node)
}
