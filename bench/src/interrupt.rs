//! Ctrl-C and SIGTERM for the benchmarks that start database servers: the signal is
//! taken by a thread instead of ending the process at once, which would leave the
//! servers running; the run stops at its next check ([`check`]) and unwinds, and every
//! server it started is stopped by its guard.

use std::sync::atomic::{AtomicI32, Ordering};

use crate::Error;

/// The termination signal received, if any (0: none).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// Takes SIGINT and SIGTERM from here on. Call it before any other thread starts, so
/// that every thread inherits the blocked signals; the servers' processes start with
/// a clear mask (std resets it on spawn).
pub fn take_signals() -> Result<(), Error> {
    lockstep_sys::signal::block_termination()
        .map_err(|e| format!("block SIGINT and SIGTERM: {e}"))?;
    std::thread::Builder::new()
        .name("bench-signals".into())
        .spawn(|| {
            if let Ok(sig) = lockstep_sys::signal::wait_termination() {
                eprintln!("\nsignal {sig}: stopping after the current series");
                INTERRUPTED.store(sig, Ordering::Relaxed);
            }
        })
        .map_err(|e| format!("start the signal thread: {e}"))?;
    Ok(())
}

/// An error once SIGINT or SIGTERM arrived.
pub fn check() -> Result<(), Error> {
    match INTERRUPTED.load(Ordering::Relaxed) {
        0 => Ok(()),
        sig => Err(format!("interrupted by signal {sig}; the servers were stopped").into()),
    }
}
