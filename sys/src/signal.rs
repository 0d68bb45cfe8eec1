//! Termination signals, received synchronously: the main thread blocks SIGINT and
//! SIGTERM before it starts any other thread (threads inherit the mask), then waits for
//! one with `sigwait`. No signal handler runs, so nothing async-signal-unsafe can happen.

use std::io;

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    set
}

/// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts later.
pub fn block_termination() -> io::Result<()> {
    let set = termination_set();
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Waits for SIGINT or SIGTERM (blocked before with [`block_termination`]) and returns
/// its number.
pub fn wait_termination() -> io::Result<i32> {
    let set = termination_set();
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised and `sig` is a valid place for the result.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc == 0 {
        Ok(sig)
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// SIGINT, SIGTERM and SIGHUP: the signals a daemon waits for.
fn daemon_set() -> libc::sigset_t {
    let mut set = termination_set();
    // SAFETY: `set` is an initialised sigset_t; SIGHUP is a valid signal number.
    unsafe {
        libc::sigaddset(&mut set, libc::SIGHUP);
    }
    set
}

/// A signal a daemon acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DaemonSignal {
    /// SIGINT or SIGTERM (its number): stop.
    Terminate(i32),
    /// SIGHUP: read the configuration again.
    Reload,
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and every thread it starts
/// later (call it before starting any thread).
pub fn block_daemon_signals() -> io::Result<()> {
    let set = daemon_set();
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Waits for one of the signals blocked by [`block_daemon_signals`].
pub fn wait_daemon_signal() -> io::Result<DaemonSignal> {
    let set = daemon_set();
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised and `sig` is a valid place for the result.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(if sig == libc::SIGHUP {
        DaemonSignal::Reload
    } else {
        DaemonSignal::Terminate(sig)
    })
}

/// As [`wait_daemon_signal`], for at most `timeout`: `None` when none came (or a
/// signal of another set interrupted the wait), so the caller can look at other work
/// between waits.
pub fn wait_daemon_signal_for(timeout: std::time::Duration) -> io::Result<Option<DaemonSignal>> {
    let set = daemon_set();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are initialised; a null siginfo pointer is allowed.
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    if sig < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(if sig == libc::SIGHUP {
        DaemonSignal::Reload
    } else {
        DaemonSignal::Terminate(sig)
    }))
}
