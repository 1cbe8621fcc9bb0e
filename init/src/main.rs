//! PID 1 of a Clump node: mounts, drivers, NICs, services, reaping, shutdown. It never exits and
//! never panics the kernel: a failing stage is logged and the node carries on.

mod boot;
mod clock;
mod cmdline;
mod hardware;
mod hide_key;
mod log;
mod log_file;
mod mounts;
mod network;
mod process;
mod ready;
mod services;
mod shutdown;
mod signals;
mod supervisor;

fn main() {
    log::install();
    if rustix::process::getpid() != rustix::process::Pid::INIT {
        eprintln!("init: this is the PID 1 of a Clump node; it only runs as process 1 (boot the image)");
        std::process::exit(2);
    }
    // A panic in PID 1 would kill the kernel ("Attempted to kill init!"): log it, and let
    // `catch_unwind` below keep the node alive.
    std::panic::set_hook(Box::new(|info| {
        log::write_line(&format!("clump: error: PID 1 panicked: {info}"));
    }));
    let signals = match signals::Signals::block_all() {
        Ok(s) => s,
        Err(e) => {
            log::write_line(&format!(
                "clump: error: cannot set up signals: {e}; rebooting in 10 s"
            ));
            std::thread::sleep(std::time::Duration::from_secs(10));
            let _ = rustix::system::reboot(rustix::system::RebootCommand::Restart);
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    };
    let mut signals = Some(signals);
    loop {
        let Some(s) = signals.take() else { break };
        // boot::run never returns; it only unwinds out of a panic, after which the node reboots
        // in an orderly way rather than panicking the kernel.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| boot::run(s)));
        if result.is_err() {
            log::write_line("clump: error: PID 1 failed; rebooting in 10 s");
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(10));
    rustix::fs::sync();
    let _ = rustix::system::reboot(rustix::system::RebootCommand::Restart);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
