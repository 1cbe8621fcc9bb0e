//! The virtual terminal the screen lives on (tty1): graphics mode so the text console does not
//! draw over our pixels, which terminal is in front, and switching to the shell's terminal.
//!
//! The kernel ignores console switches (Alt-Fn) while the terminal in front is in graphics mode,
//! so the screen itself switches: back to text mode, then to the shell's terminal. It draws only
//! while its own terminal is in front: every terminal shares the one framebuffer.

use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use rustix::ioctl::{ioctl, Getter, IntegerSetter, Opcode};
use std::path::Path;

const KDSETMODE: Opcode = 0x4B3A;
const KD_TEXT: usize = 0;
const KD_GRAPHICS: usize = 1;
const VT_GETSTATE: Opcode = 0x5603;
const VT_ACTIVATE: Opcode = 0x5606;

/// `struct vt_stat` of `<linux/vt.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct VtStat {
    v_active: u16,
    v_signal: u16,
    v_state: u16,
}

/// One virtual terminal, open for its ioctls and its keyboard.
#[derive(Debug)]
pub struct Vt {
    fd: OwnedFd,
    number: u16,
    graphics: bool,
}

impl Vt {
    /// Opens `/dev/ttyN` without making it our controlling terminal (a service has none).
    pub fn open(number: u16) -> rustix::io::Result<Vt> {
        let path = format!("/dev/tty{number}");
        let fd = rustix::fs::open(
            Path::new(&path),
            OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Vt {
            fd,
            number,
            graphics: false,
        })
    }

    /// Raw keyboard bytes as they come, no echo, no line editing; nothing waits for a newline.
    pub fn raw_keyboard(&self) -> rustix::io::Result<()> {
        let mut t = rustix::termios::tcgetattr(&self.fd)?;
        t.local_modes -= rustix::termios::LocalModes::ICANON
            | rustix::termios::LocalModes::ECHO
            | rustix::termios::LocalModes::ISIG;
        rustix::termios::tcsetattr(&self.fd, rustix::termios::OptionalActions::Now, &t)
    }

    /// The number of the terminal in front (1 for tty1).
    pub fn active(&self) -> rustix::io::Result<u16> {
        // SAFETY: VT_GETSTATE writes one `struct vt_stat`, mirrored by `VtStat`.
        let st = unsafe { ioctl(&self.fd, Getter::<VT_GETSTATE, VtStat>::new()) }?;
        Ok(st.v_active)
    }

    pub fn in_front(&self) -> bool {
        self.active().is_ok_and(|n| n == self.number)
    }

    pub fn is_graphics(&self) -> bool {
        self.graphics
    }

    /// Graphics mode on or off (text mode lets the console draw again).
    pub fn set_graphics(&mut self, on: bool) -> rustix::io::Result<()> {
        let mode = if on { KD_GRAPHICS } else { KD_TEXT };
        // SAFETY: KDSETMODE takes an integer argument, KD_TEXT or KD_GRAPHICS.
        unsafe { ioctl(&self.fd, IntegerSetter::<KDSETMODE>::new_usize(mode)) }?;
        self.graphics = on;
        Ok(())
    }

    /// Text mode, then the terminal `number` in front.
    pub fn switch_to(&mut self, number: u16) -> rustix::io::Result<()> {
        self.set_graphics(false)?;
        // SAFETY: VT_ACTIVATE takes the terminal number as an integer argument.
        unsafe {
            ioctl(
                &self.fd,
                IntegerSetter::<VT_ACTIVATE>::new_usize(usize::from(number)),
            )
        }
    }

    /// Writes text to the terminal (the fallback screen without a framebuffer).
    pub fn write_all(&self, mut bytes: &[u8]) -> rustix::io::Result<()> {
        while !bytes.is_empty() {
            match rustix::io::write(&self.fd, bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(rustix::io::Errno::AGAIN) => {
                    // A full terminal buffer: drop the rest of this frame rather than block;
                    // the next one redraws the whole screen.
                    return Ok(());
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for Vt {
    fn drop(&mut self) {
        if self.graphics {
            let _ = self.set_graphics(false);
        }
    }
}

/// Puts terminal `number` back in text mode, from anywhere (the panic hook): a fresh descriptor,
/// errors ignored.
pub fn restore_text_mode(number: u16) {
    if let Ok(mut vt) = Vt::open(number) {
        vt.graphics = true;
        let _ = vt.set_graphics(false);
        vt.graphics = false;
    }
}
