//! The pod sandbox process: kelp's binary invoked as `pause`. It holds the
//! pod's namespaces open, reaps zombies (it is PID 1 of the pod when the pod
//! shares a PID namespace), and exits 0 on SIGTERM or SIGINT, so kelp builds its
//! own pause image and needs no registry.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

/// Runs until SIGTERM/SIGINT; returns the exit code.
pub fn run() -> i32 {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        signals.add(signal);
    }
    // Block them so they are only ever taken by sigwait below.
    if let Err(e) = signals.thread_block() {
        eprintln!("pause: blocking signals: {e}");
        return 1;
    }
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => reap(),
            Ok(Signal::SIGTERM | Signal::SIGINT) => return 0,
            Ok(_) => {}
            Err(e) => {
                eprintln!("pause: waiting for signals: {e}");
                return 1;
            }
        }
    }
}

/// Collects every exited child without blocking.
fn reap() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}
