//! A database server process for the demo, the benchmarks and the tests: started in its
//! own process group, as an unprivileged account when this process runs as root, and
//! stopped when dropped.
//!
//! Clean-up: dropping a [`ServerProcess`] sends the server its own shutdown signal,
//! waits a bounded time for it to exit, then kills its whole process group with
//! SIGKILL. Every way out of a run that unwinds (a returned error, a panic) therefore
//! stops the servers it started. Signals are sent with `kill(1)`, so no `unsafe` is
//! needed.
//!
//! PostgreSQL's children leave the postmaster's process group (each calls `setsid`),
//! but they exit by themselves once the postmaster is gone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Errors of server processes: the message names the server and the operation.
pub type Error = String;

/// How long a server may take to shut down on its own signal before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// An account the servers run as.
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl Account {
    /// The account `name` from /etc/passwd.
    pub fn lookup(name: &str) -> Result<Account, Error> {
        let text =
            std::fs::read_to_string("/etc/passwd").map_err(|e| format!("read /etc/passwd: {e}"))?;
        text.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && f[0] == name)
            .and_then(|f| {
                Some(Account {
                    name: name.to_string(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                })
            })
            .ok_or_else(|| format!("no account {name:?} in /etc/passwd"))
    }

    /// Makes `dir` (created if missing) this account's.
    pub fn own(&self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        std::os::unix::fs::chown(dir, Some(self.uid), Some(self.gid))
            .map_err(|e| format!("chown {} to {}: {e}", dir.display(), self.name))
    }
}

/// Whether this process runs as root (from /proc, without libc).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The account a peer's server runs as: `name` when this process is root (database
/// servers refuse to run as root), else this process's own.
pub fn server_account(name: &str) -> Result<Option<Account>, Error> {
    if is_root() {
        Account::lookup(name).map(Some)
    } else {
        Ok(None)
    }
}

/// Creates `dir` for a server that runs as `account` (or as this process).
pub fn own_dir(account: Option<&Account>, dir: &Path) -> Result<(), Error> {
    match account {
        Some(a) => a.own(dir),
        None => std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display())),
    }
}

/// The first line of a command's output (a server's version).
pub fn version_of(cmd: &mut Command) -> Result<String, Error> {
    let out = cmd
        .output()
        .map_err(|e| format!("run {:?}: {e}", cmd.get_program()))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// Runs `cmd` to completion as `account`, its output kept in `log`; an error quotes
/// the end of the log.
pub fn run_as(
    what: &str,
    mut cmd: Command,
    account: Option<&Account>,
    log: &Path,
) -> Result<(), Error> {
    prepare(&mut cmd, account, log, false)?;
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: start {:?}: {e}", cmd.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what}: {status}; {}", log_tail(log)))
    }
}

fn prepare(
    cmd: &mut Command,
    account: Option<&Account>,
    log: &Path,
    append: bool,
) -> Result<(), Error> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(log)
        .map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("open {}: {e}", log.display()))?;
    if let Some(a) = account {
        // std drops the supplementary groups before it changes the user.
        cmd.uid(a.uid).gid(a.gid);
        cmd.env("HOME", "/nonexistent").env("USER", &a.name);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    Ok(())
}

/// The last lines of a server's log, for an error message.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(6).collect();
    if lines.is_empty() {
        format!("{} is empty", log.display())
    } else {
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!("the end of {}:\n    {}", log.display(), tail.join("\n    "))
    }
}

/// A running server, stopped when dropped.
pub struct ServerProcess {
    name: String,
    child: Child,
    stop_signal: &'static str,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `cmd` as `account` in a process group of its own; its output goes to
    /// `log`. `stop_signal` (as `kill -s` names it) asks it to shut down.
    pub fn spawn(
        name: &str,
        cmd: Command,
        account: Option<&Account>,
        log: &Path,
        stop_signal: &'static str,
    ) -> Result<ServerProcess, Error> {
        ServerProcess::start(name, cmd, account, log, stop_signal, false)
    }

    /// As [`spawn`](Self::spawn), with the output appended to `log`: for a server
    /// started again, whose earlier logs stay readable.
    pub fn spawn_appending(
        name: &str,
        cmd: Command,
        account: Option<&Account>,
        log: &Path,
        stop_signal: &'static str,
    ) -> Result<ServerProcess, Error> {
        ServerProcess::start(name, cmd, account, log, stop_signal, true)
    }

    fn start(
        name: &str,
        mut cmd: Command,
        account: Option<&Account>,
        log: &Path,
        stop_signal: &'static str,
        append: bool,
    ) -> Result<ServerProcess, Error> {
        use std::os::unix::process::CommandExt;
        prepare(&mut cmd, account, log, append)?;
        // Its own group: the benchmark's terminal signals do not reach it, and the
        // whole group can be killed at the end.
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(ServerProcess {
            name: name.to_string(),
            child,
            stop_signal,
            log: log.to_path_buf(),
        })
    }

    /// An error if the server has exited, with the end of its log.
    pub fn check_alive(&mut self) -> Result<(), Error> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); {}",
                self.name,
                log_tail(&self.log)
            )),
            Err(e) => Err(format!("{}: wait: {e}", self.name)),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (as `kill -s` names it: STOP, CONT, ...) to the server.
    pub fn signal(&self, signal: &str) -> Result<(), Error> {
        match kill(signal, &self.child.id().to_string()) {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("kill -s {signal} {}: {s}", self.name)),
            Err(e) => Err(format!("kill -s {signal} {}: {e}", self.name)),
        }
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it to be gone.
    pub fn kill_now(&mut self) -> Result<(), Error> {
        let pid = self.child.id();
        let _ = kill("KILL", &format!("-{pid}"));
        self.child
            .wait()
            .map(drop)
            .map_err(|e| format!("{}: wait: {e}", self.name))
    }

    /// The end of the server's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Waits until `ready` says yes, the server dies, or `timeout` passes.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            self.check_alive()?;
            match ready() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = format!(" (last: {e})"),
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{}: not {what} within {timeout:?}{last}; {}",
                    self.name,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(self.stop_signal, &pid);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Whatever of the group is left (the server itself, if it did not stop).
        let _ = kill("KILL", &format!("-{pid}"));
        let _ = self.child.wait();
    }
}

/// `kill -s SIGNAL -- TARGET` (a pid, or a process group as `-pgid`).
fn kill(signal: &str, target: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .args(["-s", signal, "--", target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_server_and_its_group_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sh.log");
        let mut cmd = Command::new("sh");
        // The shell stops on the polite signal; its child in the same group does not
        // get it and must be gone too after the drop.
        cmd.args(["-c", "sleep 300 & echo $! ; wait"]);
        let mut p = ServerProcess::spawn("sh", cmd, None, &log, "TERM").unwrap();
        p.wait_until("started", Duration::from_secs(5), || {
            Ok(!std::fs::read_to_string(&log)
                .map_err(|e| e.to_string())?
                .trim()
                .is_empty())
        })
        .unwrap();
        let child: u32 = std::fs::read_to_string(&log)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let shell = p.child.id();
        drop(p);
        // The sleep's exit is seen by its new parent a moment later.
        std::thread::sleep(Duration::from_millis(200));
        for pid in [shell, child] {
            // A zombie of the sleep is reaped by init; a live process would show state.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            assert!(
                stat.is_empty() || stat.contains(") Z "),
                "process {pid} still runs: {stat}"
            );
        }
    }
}
