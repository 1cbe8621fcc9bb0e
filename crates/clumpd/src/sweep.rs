//! The ARP sweep's I/O edge: a [`clump_net::arp::Sweep`] over an ARP packet socket on the
//! lease's interface. [`SweepDriver`] fits the daemon's single-threaded poll loop (an fd to wait on,
//! a deadline, two event handlers); [`run`] is the same thing blocking, for tools and tests.

use clump_net::arp::{Host, Sweep};
use clump_net::packet::{PacketSocket, BROADCAST_MAC};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketType};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

/// Big enough for any ARP packet; larger ones are cut short and then fail to parse.
const RECV_BUF: usize = 2048;

/// A sweep in progress on one interface.
#[derive(Debug)]
pub struct SweepDriver {
    sock: PacketSocket,
    sweep: Sweep,
    buf: Vec<u8>,
    /// Frames the kernel refused for want of buffer space: as good as lost on the wire.
    lost: usize,
    /// The error that ended the sweep early (the interface went away or down).
    error: Option<io::Error>,
}

impl SweepDriver {
    /// A sweep of `addr/prefix_len` from `mac` on the interface named `iface` (at most `cap`
    /// targets, `rate` frames a second), first frame due at `now`. Nothing is sent until
    /// [`SweepDriver::on_time`].
    pub fn new(
        iface: &str,
        mac: [u8; 6],
        addr: Ipv4Addr,
        prefix_len: u8,
        cap: usize,
        rate: u32,
        now: Duration,
    ) -> io::Result<Self> {
        let ifindex = ifindex(iface)?;
        Self::open(ifindex, Sweep::new(mac, addr, prefix_len, cap, rate, now))
    }

    /// Runs `sweep` on the interface `ifindex`.
    pub fn open(ifindex: u32, sweep: Sweep) -> io::Result<Self> {
        Ok(SweepDriver {
            sock: PacketSocket::arp(ifindex)?,
            sweep,
            buf: vec![0; RECV_BUF],
            lost: 0,
            error: None,
        })
    }

    /// Wait for this to be readable, then call [`SweepDriver::on_readable`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Reads every queued ARP packet; returns the hosts heard for the first time.
    pub fn on_readable(&mut self) -> Vec<Host> {
        let mut new = Vec::new();
        loop {
            match self.sock.recv(&mut self.buf) {
                Ok(Some(packet)) => {
                    if let Some(host) = self.sweep.on_packet(packet) {
                        tracing::debug!(addr = %host.addr, mac = %mac_text(host.mac), "ARP sweep: host answered");
                        new.push(host);
                    }
                }
                Ok(None) => break,
                Err(e) if is_transient(&e) => break,
                Err(e) => {
                    self.fail(e);
                    break;
                }
            }
        }
        new
    }

    /// Reads what has come in (as [`SweepDriver::on_readable`], so a caller may use this one
    /// alone), then sends the frames due at `now`; returns the hosts heard for the first time.
    /// A frame the kernel has no room for counts as lost: a sweep tolerates loss, the hello
    /// broadcast covers it. Any other send error ends the sweep ([`SweepDriver::error`]).
    pub fn on_time(&mut self, now: Duration) -> Vec<Host> {
        let new = self.on_readable();
        while self.error.is_none() {
            let Some((target, frame)) = self.sweep.poll_send(now) else {
                break;
            };
            match self.sock.send_to(&frame, BROADCAST_MAC) {
                Ok(()) => {}
                Err(e) if is_transient(&e) => {
                    self.lost += 1;
                    tracing::debug!(%target, error = %e, "ARP sweep: frame dropped");
                }
                Err(e) => self.fail(e),
            }
        }
        new
    }

    fn fail(&mut self, e: io::Error) {
        tracing::warn!(error = %e, sent = self.sweep.sent(), "ARP sweep stopped");
        self.error = Some(e);
    }

    /// When the next frame is due; `None` when all are sent or the sweep failed.
    pub fn next_due(&self) -> Option<Duration> {
        self.error.is_none().then(|| self.sweep.next_due()).flatten()
    }

    /// When [`SweepDriver::on_time`] wants calling next: the next frame, or once all are out,
    /// the end of `linger`; `None` when there is nothing left to wait for.
    pub fn deadline(&self, linger: Duration) -> Option<Duration> {
        self.error
            .is_none()
            .then(|| deadline(&self.sweep, linger))
            .flatten()
    }

    /// All frames sent and `linger` over, or the sweep failed.
    pub fn is_done(&self, now: Duration, linger: Duration) -> bool {
        self.error.is_some() || self.sweep.is_done(now, linger)
    }

    /// The error that stopped the sweep early, if any.
    pub fn error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    pub fn found(&self) -> &[Host] {
        self.sweep.found()
    }

    pub fn sent(&self) -> usize {
        self.sweep.sent()
    }

    pub fn total(&self) -> usize {
        self.sweep.total()
    }

    pub fn lost(&self) -> usize {
        self.lost
    }

    pub fn sweep(&self) -> &Sweep {
        &self.sweep
    }

    /// The hosts found, or the error that stopped the sweep.
    pub fn finish(self) -> io::Result<Vec<Host>> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.sweep.found().to_vec()),
        }
    }
}

/// The index of the interface named `iface` in this thread's network namespace (sysfs would
/// show the namespace it was mounted in).
pub fn ifindex(iface: &str) -> io::Result<u32> {
    let sock = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None)?;
    rustix::net::netdevice::name_to_index(&sock, iface)
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("interface {iface}: {e}")))
}

fn deadline(sweep: &Sweep, linger: Duration) -> Option<Duration> {
    match (sweep.next_due(), sweep.last_sent()) {
        (Some(due), _) => Some(due),
        (None, Some(last)) => Some(last + linger),
        (None, None) => None,
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw_os_error),
        Some(Errno::NOBUFS | Errno::AGAIN | Errno::INTR)
    )
}

/// Sweeps `addr/prefix_len` on `ifindex` from `mac` (at most `cap` targets, `rate` frames per
/// second), waits `linger` after the last frame for late replies, and returns who answered.
pub fn run(
    ifindex: u32,
    mac: [u8; 6],
    addr: Ipv4Addr,
    prefix_len: u8,
    cap: usize,
    rate: u32,
    linger: Duration,
) -> io::Result<Vec<Host>> {
    let sweep = Sweep::new(mac, addr, prefix_len, cap, rate, crate::daemon::mono());
    let mut driver = SweepDriver::open(ifindex, sweep)?;
    tracing::debug!(%addr, prefix_len, targets = driver.total(), rate, "ARP sweep");
    loop {
        let t = crate::daemon::mono();
        driver.on_time(t);
        if driver.is_done(t, linger) {
            break;
        }
        let timeout = driver.deadline(linger).map(|d| d.saturating_sub(t));
        if wait_readable(driver.fd(), timeout)? {
            driver.on_readable();
        }
    }
    tracing::debug!(
        found = driver.found().len(),
        sent = driver.sent(),
        lost = driver.lost(),
        "ARP sweep done"
    );
    driver.finish()
}

/// Waits until `fd` is readable or `timeout` passes; true when readable.
fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let ts = timeout.map(|t| Timespec {
        tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    match rustix::event::poll(&mut fds, ts.as_ref()) {
        Ok(_) => Ok(fds[0].revents().intersects(PollFlags::IN | PollFlags::ERR)),
        Err(Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors() {
        assert!(is_transient(&io::Error::from(Errno::NOBUFS)));
        assert!(is_transient(&io::Error::from(Errno::AGAIN)));
        assert!(!is_transient(&io::Error::from(Errno::NETDOWN)));
        assert!(!is_transient(&io::Error::other("x")));
    }

    #[test]
    fn macs_print_like_ip_link() {
        assert_eq!(mac_text([0x02, 0, 0xab, 1, 2, 0xff]), "02:00:ab:01:02:ff");
    }

    #[test]
    fn deadline_is_the_next_frame_then_the_end_of_linger() {
        let linger = Duration::from_millis(300);
        let t0 = Duration::from_secs(10);
        let mut sweep = Sweep::new([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 1), 30, 1024, 10, t0);
        assert_eq!(sweep.total(), 1);
        assert_eq!(deadline(&sweep, linger), Some(t0));
        assert!(sweep.poll_send(t0).is_some());
        assert_eq!(deadline(&sweep, linger), Some(t0 + linger));
        let empty = Sweep::new([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 1), 24, 0, 10, t0);
        assert_eq!(
            deadline(&empty, linger),
            None,
            "an empty sweep has nothing to wait for"
        );
    }
}
