//! `/dev/fb0`: what the kernel says about it (two ioctls) and its memory, mapped shared. Drawing
//! goes through the mapping only: on DRM's fbdev emulation `write()` did not flush every line
//! (research note, section 5.1), while stores into the mapping are tracked and shown.

use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use rustix::ioctl::{ioctl, Getter, Opcode, Updater};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum FbError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: rustix::io::Errno,
    },
    #[error("{path}: {what} failed: {source}")]
    Ioctl {
        path: PathBuf,
        what: &'static str,
        source: rustix::io::Errno,
    },
    #[error("{path}: visual {visual} is not true colour; only true-colour framebuffers are drawn")]
    NotTrueColour { path: PathBuf, visual: u32 },
    #[error("{path}: {xres}x{yres} at {bpp} bpp with {stride} bytes a line does not fit its {mem} bytes of memory")]
    Geometry {
        path: PathBuf,
        xres: u32,
        yres: u32,
        bpp: u32,
        stride: u32,
        mem: u32,
    },
    #[error("{path}: cannot map its memory: {source}")]
    Map {
        path: PathBuf,
        source: rustix::io::Errno,
    },
}

/// `struct fb_bitfield` of `<linux/fb.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Bitfield {
    offset: u32,
    length: u32,
    msb_right: u32,
}

/// `struct fb_var_screeninfo` of `<linux/fb.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct VarScreenInfo {
    xres: u32,
    yres: u32,
    xres_virtual: u32,
    yres_virtual: u32,
    xoffset: u32,
    yoffset: u32,
    bits_per_pixel: u32,
    grayscale: u32,
    red: Bitfield,
    green: Bitfield,
    blue: Bitfield,
    transp: Bitfield,
    nonstd: u32,
    activate: u32,
    height: u32,
    width: u32,
    accel_flags: u32,
    timing: [u32; 11],
    reserved: [u32; 4],
}

/// `struct fb_fix_screeninfo` of `<linux/fb.h>` (`unsigned long` is 64 bits on x86-64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct FixScreenInfo {
    id: [u8; 16],
    smem_start: std::ffi::c_ulong,
    smem_len: u32,
    kind: u32,
    type_aux: u32,
    visual: u32,
    xpanstep: u16,
    ypanstep: u16,
    ywrapstep: u16,
    line_length: u32,
    mmio_start: std::ffi::c_ulong,
    mmio_len: u32,
    accel: u32,
    capabilities: u16,
    reserved: [u16; 2],
}

const FBIOGET_VSCREENINFO: Opcode = 0x4600;
const FBIOPUT_VSCREENINFO: Opcode = 0x4601;
const FBIOGET_FSCREENINFO: Opcode = 0x4602;
const FB_ACTIVATE_NOW: u32 = 0;
const FB_ACTIVATE_FORCE: u32 = 128;
const FB_VISUAL_TRUECOLOR: u32 = 2;

/// What the kernel reports of a framebuffer: enough to pack pixels and to notice that another
/// driver took the device over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FbInfo {
    /// The driver's name, e.g. "EFI VGA" (efifb) or "bochs-drmdrmfb".
    pub id: String,
    pub width: u32,
    pub height: u32,
    /// Bytes from one line to the next (may be more than width × bytes per pixel).
    pub stride: u32,
    pub bits_per_pixel: u32,
    /// (offset, length) of each colour in a pixel's bits.
    pub red: (u32, u32),
    pub green: (u32, u32),
    pub blue: (u32, u32),
    pub mem_len: u32,
}

impl FbInfo {
    /// Checks what a draw relies on: true colour, and the visible lines inside the memory.
    fn from_raw(path: &Path, var: &VarScreenInfo, fix: &FixScreenInfo) -> Result<FbInfo, FbError> {
        if fix.visual != FB_VISUAL_TRUECOLOR {
            return Err(FbError::NotTrueColour {
                path: path.to_owned(),
                visual: fix.visual,
            });
        }
        let bytes_pp = var.bits_per_pixel.div_ceil(8);
        let fits = u64::from(fix.line_length) * u64::from(var.yres) <= u64::from(fix.smem_len)
            && u64::from(var.xres) * u64::from(bytes_pp) <= u64::from(fix.line_length)
            && var.xres > 0
            && var.yres > 0;
        if !fits {
            return Err(FbError::Geometry {
                path: path.to_owned(),
                xres: var.xres,
                yres: var.yres,
                bpp: var.bits_per_pixel,
                stride: fix.line_length,
                mem: fix.smem_len,
            });
        }
        let name_len = fix.id.iter().position(|&b| b == 0).unwrap_or(fix.id.len());
        Ok(FbInfo {
            id: String::from_utf8_lossy(&fix.id[..name_len]).into_owned(),
            width: var.xres,
            height: var.yres,
            stride: fix.line_length,
            bits_per_pixel: var.bits_per_pixel,
            red: (var.red.offset, var.red.length),
            green: (var.green.offset, var.green.length),
            blue: (var.blue.offset, var.blue.length),
            mem_len: fix.smem_len,
        })
    }

    /// Bytes of memory the visible frame covers.
    pub fn frame_len(&self) -> usize {
        self.stride as usize * self.height as usize
    }
}

/// An open framebuffer with its visible frame mapped read-write and shared.
#[derive(Debug)]
pub struct Framebuffer {
    path: PathBuf,
    fd: OwnedFd,
    info: FbInfo,
    map: *mut std::ffi::c_void,
    len: usize,
}

impl Framebuffer {
    pub fn open(path: &Path) -> Result<Framebuffer, FbError> {
        let fd = rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(|source| {
            FbError::Open {
                path: path.to_owned(),
                source,
            }
        })?;
        // Only a framebuffer this can draw on has its mode set: one refused here is tried again
        // every second.
        query(path, &fd)?;
        if let Err(e) = set_mode(&fd) {
            tracing::warn!(path = %path.display(), "FBIOPUT_VSCREENINFO failed: {e}; what is drawn may not show");
        }
        let info = query(path, &fd)?;
        let len = info.frame_len();
        // SAFETY: a fresh shared mapping of the device at offset 0, of no more than the memory the
        // driver reported (checked in `from_raw`); nothing else in this process aliases it, and it
        // is unmapped exactly once, in `drop`.
        let map = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(|source| FbError::Map {
            path: path.to_owned(),
            source,
        })?;
        Ok(Framebuffer {
            path: path.to_owned(),
            fd,
            info,
            map,
            len,
        })
    }

    pub fn info(&self) -> &FbInfo {
        &self.info
    }

    /// The visible frame, `stride × height` bytes.
    pub fn frame(&mut self) -> &mut [u8] {
        // SAFETY: `map` is a live mapping of `len` bytes (see `open`), borrowed mutably through
        // `self` so no other slice of it exists at the same time.
        unsafe { std::slice::from_raw_parts_mut(self.map.cast::<u8>(), self.len) }
    }

    /// Asks the kernel again: a different answer (or an error) means the device changed under us,
    /// e.g. a DRM driver replaced the firmware framebuffer, and the caller should reopen it.
    pub fn still_same(&self) -> bool {
        query(&self.path, &self.fd).is_ok_and(|now| now == self.info)
            && current_name(&self.path).is_none_or(|name| name == self.info.id)
    }
}

impl Drop for Framebuffer {
    fn drop(&mut self) {
        // SAFETY: `map` and `len` are the mapping made in `open`, unmapped only here; the slices
        // `frame` hands out borrow `self` and cannot outlive it.
        if let Err(e) = unsafe { munmap(self.map, self.len) } {
            tracing::warn!(error = %e, "cannot unmap the framebuffer");
        }
    }
}

fn query(path: &Path, fd: &OwnedFd) -> Result<FbInfo, FbError> {
    let err = |what, source| FbError::Ioctl {
        path: path.to_owned(),
        what,
        source,
    };
    // SAFETY: FBIOGET_VSCREENINFO writes one `struct fb_var_screeninfo`, which `VarScreenInfo`
    // mirrors field for field with the same C layout.
    let var = unsafe { ioctl(fd, Getter::<FBIOGET_VSCREENINFO, VarScreenInfo>::new()) }
        .map_err(|e| err("FBIOGET_VSCREENINFO", e))?;
    // SAFETY: as above, for FBIOGET_FSCREENINFO and `struct fb_fix_screeninfo`.
    let fix = unsafe { ioctl(fd, Getter::<FBIOGET_FSCREENINFO, FixScreenInfo>::new()) }
        .map_err(|e| err("FBIOGET_FSCREENINFO", e))?;
    FbInfo::from_raw(path, &var, &fix)
}

/// Sets the device's current mode again, forced. A DRM driver that takes fb0 over while the
/// screen's terminal is in graphics mode gets no mode set by the console (fbcon leaves a terminal
/// in graphics mode alone), so the monitor goes on showing the firmware's framebuffer and nothing
/// drawn in the new one shows; this has the driver set its mode. For efifb it changes nothing.
fn set_mode(fd: &OwnedFd) -> Result<(), rustix::io::Errno> {
    // SAFETY: FBIOGET_VSCREENINFO writes one `struct fb_var_screeninfo` (see `query`).
    let mut var = unsafe { ioctl(fd, Getter::<FBIOGET_VSCREENINFO, VarScreenInfo>::new()) }?;
    var.activate = FB_ACTIVATE_NOW | FB_ACTIVATE_FORCE;
    // SAFETY: FBIOPUT_VSCREENINFO reads one `struct fb_var_screeninfo` and writes back the one it
    // applied, into `var`, which has that layout.
    unsafe { ioctl(fd, Updater::<FBIOPUT_VSCREENINFO, VarScreenInfo>::new(&mut var)) }
}

/// The name sysfs gives the device now (`/sys/class/graphics/fb0/name`): a DRM driver that takes
/// over from efifb registers a new fb0 with another name.
fn current_name(path: &Path) -> Option<String> {
    let dev = path.file_name()?.to_str()?;
    let name = std::fs::read_to_string(Path::new("/sys/class/graphics").join(dev).join("name")).ok()?;
    Some(name.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_structs_have_the_kernels_sizes() {
        assert_eq!(std::mem::size_of::<VarScreenInfo>(), 160);
        assert_eq!(std::mem::size_of::<FixScreenInfo>(), 80);
        assert_eq!(std::mem::offset_of!(FixScreenInfo, line_length), 48);
    }

    fn raw(xres: u32, yres: u32, bpp: u32, stride: u32, mem: u32) -> (VarScreenInfo, FixScreenInfo) {
        let var = VarScreenInfo {
            xres,
            yres,
            xres_virtual: xres,
            yres_virtual: yres,
            bits_per_pixel: bpp,
            red: Bitfield {
                offset: 16,
                length: 8,
                msb_right: 0,
            },
            green: Bitfield {
                offset: 8,
                length: 8,
                msb_right: 0,
            },
            blue: Bitfield {
                offset: 0,
                length: 8,
                msb_right: 0,
            },
            ..VarScreenInfo::default()
        };
        let mut fix = FixScreenInfo {
            smem_len: mem,
            visual: FB_VISUAL_TRUECOLOR,
            line_length: stride,
            ..FixScreenInfo::default()
        };
        fix.id[..14].copy_from_slice(b"bochs-drmdrmfb");
        (var, fix)
    }

    #[test]
    fn a_bochs_framebuffer_is_read_as_the_kernel_reports_it() {
        let (var, fix) = raw(1024, 768, 32, 4096, 4096 * 768);
        let info = FbInfo::from_raw(Path::new("/dev/fb0"), &var, &fix).expect("valid");
        assert_eq!(info.id, "bochs-drmdrmfb");
        assert_eq!((info.width, info.height, info.stride), (1024, 768, 4096));
        assert_eq!(info.red, (16, 8));
        assert_eq!(info.frame_len(), 4096 * 768);
    }

    #[test]
    fn frames_that_do_not_fit_their_memory_or_are_not_true_colour_are_refused() {
        let (var, fix) = raw(1024, 768, 32, 4096, 4096 * 767);
        assert!(matches!(
            FbInfo::from_raw(Path::new("/dev/fb0"), &var, &fix),
            Err(FbError::Geometry { .. })
        ));
        let (var, fix) = raw(1024, 768, 32, 2048, 1 << 24);
        assert!(
            FbInfo::from_raw(Path::new("/dev/fb0"), &var, &fix).is_err(),
            "stride too short"
        );
        let (var, mut fix) = raw(640, 480, 8, 640, 640 * 480);
        fix.visual = 3; // pseudocolour
        assert!(matches!(
            FbInfo::from_raw(Path::new("/dev/fb0"), &var, &fix),
            Err(FbError::NotTrueColour { .. })
        ));
    }
}
