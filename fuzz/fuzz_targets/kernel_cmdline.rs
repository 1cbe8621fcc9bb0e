//! The kernel command line, as PID 1 reads it (`init/src/cmdline.rs`, compiled in here from its
//! source: `init` is a binary) and as `clumpd` reads its `clump.*` options (with the guest
//! policy and balancer settings applied as at boot). Anything the boot loader or a user typing
//! at it passes: no panic, values within their documented ranges, bad values only warned about.
#![no_main]

#[path = "../../init/src/cmdline.rs"]
#[allow(dead_code)]
mod cmdline;
// cmdline.rs takes its default restart cap from here.
#[path = "../../init/src/supervisor.rs"]
#[allow(dead_code)]
mod supervisor;

use clump_clumpd::config::Options;
use clump_clumpd::control::Control;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    let (cfg, _warnings) = cmdline::parse(&text);
    assert!(cfg.carrier_wait <= Duration::from_secs(600));
    assert!(cfg.addr_wait <= Duration::from_secs(600));
    if let Some(mac) = &cfg.boot_mac {
        assert_eq!(mac.len(), 17, "{mac:?}");
        assert!(mac
            .bytes()
            .all(|b| b == b':' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
    assert!(cfg.options.keys().all(|k| k.starts_with("clump.")));
    assert!(cfg
        .modules
        .iter()
        .chain(&cfg.blacklist)
        .all(|m| !m.is_empty() && !m.contains(',')));
    assert!(cfg.iface.as_ref().is_none_or(|i| !i.is_empty()));
    assert!(cfg.serial_consoles.iter().all(|c| !c.contains(',')));

    let (options, _problems) = Options::from_cmdline(&text);
    assert!(options.port > 0);
    assert!(options.probe_cap <= 1 << 20);
    assert!((1..=100_000).contains(&options.probe_rate));
    assert!(options.speed.is_none_or(|s| (1..=1_000_000).contains(&s)));
    let mut control = Control::default();
    for change in &options.control {
        let _ = control.apply(change);
    }
    for minute in [0, 7 * 60, 20 * 60 + 30, 24 * 60 - 1] {
        let _ = control.report(minute, 1);
        let _ = control.accepts_guests(minute);
        let _ = control.sends_guests_away(minute);
    }
});
