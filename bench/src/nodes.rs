//! Three `lockstepd` processes under their controller on loopback, as the failover
//! benchmarks run them (see [`crate::failover`] and [`crate::failover_mariadb`]).
//!
//! The nodes are real processes so that SIGKILL is a crash: no clean shutdown, sockets
//! closed by the kernel. Every node has the controller (`[control]`) and an admin
//! endpoint, where a switchover is asked for. The cluster has one stream, [`STREAM`],
//! strong, node 1 its first primary; a benchmark may add keys to the stream's table
//! (a MariaDB front, say), node by node (each node's own binlog server).
//!
//! Clean-up: dropping [`Nodes`] kills and reaps every node still running;
//! [`Nodes::stop_all`] stops them with SIGTERM first. Their directory is the caller's.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockstep::client::{Client, ClientOptions};

use crate::Error;

pub const NODES: usize = 3;
pub const STREAM: &str = "s";
/// A trial fails when no other node commits within this long of the kill.
pub const FAILOVER_WITHIN: Duration = Duration::from_secs(30);
/// How long a node may take to answer after a (re)start, and the cluster to return to
/// full strength.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// Short timeouts, so that a dead node costs a client little time.
pub fn client_options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(1),
        reply_grace: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(200),
        outstanding_max: 4,
        redirects_max: 4,
    }
}

/// The nodes, as child processes.
pub struct Nodes {
    bin: PathBuf,
    dir: PathBuf,
    /// Client (and node-to-node) addresses, node n at index n - 1.
    pub addrs: Vec<String>,
    /// Admin endpoints, where a switchover is asked for.
    pub admins: Vec<String>,
    children: Vec<Option<Child>>,
}

impl Nodes {
    /// Writes every node's configuration into `dir` and starts the nodes.
    /// `stream_toml(n)` holds more keys of the stream's table on node `n` (each line
    /// ending in a newline), or is empty.
    pub fn start(
        bin: PathBuf,
        dir: &Path,
        failover_timeout_ms: Option<u64>,
        stream_toml: impl Fn(usize) -> String,
    ) -> Result<Nodes, Error> {
        std::fs::write(
            dir.join("profile.toml"),
            "description = \"failover benchmark: small segments\"\n[log]\nsegment_bytes = 8388608\n",
        )
        .map_err(|e| format!("write profile in {}: {e}", dir.display()))?;
        // Switchovers are mutating admin requests: they carry this token.
        {
            use std::os::unix::fs::PermissionsExt;
            let token = dir.join("admin.token");
            std::fs::write(&token, format!("{ADMIN_TOKEN}\n"))
                .and_then(|()| {
                    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))
                })
                .map_err(|e| format!("write {}: {e}", token.display()))?;
        }
        let ports = lockstep::kit::free_ports(2 * NODES)?;
        let addrs: Vec<String> = ports[..NODES]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let admins: Vec<String> = ports[NODES..]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        for n in 1..=NODES {
            let mut t = String::new();
            let _ = writeln!(t, "node_id = {n}\ndata_dir = \"node{n}\"");
            let _ = writeln!(t, "listen = \"{}\"\nshards = 1", addrs[n - 1]);
            let _ = writeln!(t, "admin = \"{}\"", admins[n - 1]);
            let _ = writeln!(t, "profile = \"profile.toml\"");
            let _ = writeln!(t, "admin_token_file = \"admin.token\"");
            for (i, a) in addrs.iter().enumerate() {
                let _ = writeln!(t, "[[nodes]]\nid = {}\naddr = \"{a}\"", i + 1);
            }
            let _ = writeln!(
                t,
                "[[streams]]\nname = \"{STREAM}\"\nprimary = 1\nmode = \"strong\""
            );
            t.push_str(&stream_toml(n));
            let _ = writeln!(t, "[control]");
            if let Some(ms) = failover_timeout_ms {
                let _ = writeln!(t, "failover_timeout_ms = {ms}");
            }
            let path = dir.join(format!("node{n}.toml"));
            std::fs::write(&path, t).map_err(|e| format!("write {}: {e}", path.display()))?;
        }
        let mut nodes = Nodes {
            bin,
            dir: dir.to_path_buf(),
            addrs,
            admins,
            children: (0..NODES).map(|_| None).collect(),
        };
        for n in 1..=NODES {
            nodes.spawn(n)?;
        }
        Ok(nodes)
    }

    /// Starts node `n` (1-based), its stderr appended to `node{n}.stderr`.
    pub fn spawn(&mut self, n: usize) -> Result<(), Error> {
        let err_path = self.dir.join(format!("node{n}.stderr"));
        let err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&err_path)
            .map_err(|e| format!("open {}: {e}", err_path.display()))?;
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(self.dir.join(format!("node{n}.toml")))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("start {} for node {n}: {e}", self.bin.display()))?;
        self.children[n - 1] = Some(child);
        Ok(())
    }

    /// Kills node `n` with SIGKILL, as a crash would, and reaps it.
    pub fn kill9(&mut self, n: usize) -> Result<(), Error> {
        let mut child = self.children[n - 1]
            .take()
            .ok_or_else(|| format!("node {n} is not running"))?;
        child.kill().map_err(|e| format!("SIGKILL node {n}: {e}"))?;
        child.wait().map_err(|e| format!("reap node {n}: {e}"))?;
        Ok(())
    }

    /// Sends `signal` (`STOP`, `CONT`) to node `n`.
    pub fn signal(&self, n: usize, signal: &str) -> Result<(), Error> {
        let child = self.children[n - 1]
            .as_ref()
            .ok_or_else(|| format!("node {n} is not running"))?;
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .map_err(|e| format!("kill -{signal} node {n}: {e}"))?;
        if !status.success() {
            return Err(format!("kill -{signal} node {n}: {status}").into());
        }
        Ok(())
    }

    /// Fails if a node exited by itself.
    pub fn check_alive(&mut self) -> Result<(), Error> {
        for (i, c) in self.children.iter_mut().enumerate() {
            if let Some(c) = c
                && let Some(status) = c.try_wait().map_err(|e| format!("wait: {e}"))?
            {
                return Err(format!(
                    "node {} exited by itself with {status}; see {}/node{}.stderr",
                    i + 1,
                    self.dir.display(),
                    i + 1
                )
                .into());
            }
        }
        Ok(())
    }

    /// The stream's status on node `n`, if it runs and answers.
    pub fn status(&self, n: usize) -> Option<serde_json::Value> {
        self.children[n - 1].as_ref()?;
        let mut c = Client::connect(&[&self.addrs[n - 1]], STREAM, client_options()).ok()?;
        c.status().ok()
    }

    /// The node serving as primary now, if one says so.
    pub fn primary(&self) -> Option<usize> {
        (1..=NODES).find(|&n| self.status(n).is_some_and(|s| s["role"] == "primary"))
    }

    /// Whether the primary has every other node in its sync set, connected, and durable
    /// up to at least `lsn`.
    pub fn full_strength(&self, lsn: u64) -> bool {
        let Some(p) = self.primary() else {
            return false;
        };
        self.status(p).is_some_and(|st| {
            st["members"].as_array().is_some_and(|ms| {
                ms.len() == NODES - 1
                    && ms.iter().all(|m| {
                        m["in_sync"] == true
                            && m["connected"] == true
                            && m["durable_lsn"].as_u64() >= Some(lsn)
                    })
            })
        })
    }

    /// The primary (1-based), once `committed_at(primary, since)` says that the
    /// benchmark's clients have committed there since now.
    pub fn committing_primary(
        &self,
        mut committed_at: impl FnMut(usize, Instant) -> bool,
    ) -> Result<usize, Error> {
        let primary = wait_until(READY_WITHIN, "a primary", || self.primary().is_some())
            .and_then(|_| self.primary().ok_or_else(|| "the primary went away".into()))?;
        let since = Instant::now();
        wait_until(READY_WITHIN, "commits at the primary", || {
            committed_at(primary, since)
        })?;
        Ok(primary)
    }

    /// Stops every node with SIGTERM; one that does not stop within a bound is killed.
    pub fn stop_all(&mut self) {
        for c in self.children.iter().flatten() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
        for c in &mut self.children {
            let Some(mut child) = c.take() else { continue };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The stream's log directory of node `n`.
    pub fn stream_dir(&self, n: usize) -> PathBuf {
        self.dir
            .join(format!("node{n}"))
            .join("streams")
            .join(STREAM)
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Some(mut child) = c.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The `lockstepd` binary: `arg`, or the one next to this program.
pub fn bin_path(arg: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(p) = arg {
        return Ok(p.to_path_buf());
    }
    let me = std::env::current_exe().map_err(|e| format!("locate this program: {e}"))?;
    let beside = me.with_file_name("lockstepd");
    if beside.is_file() {
        return Ok(beside);
    }
    Err(format!(
        "no lockstepd next to {}: build it (cargo build --release -p lockstep --bin lockstepd) \
         or give --lockstepd FILE",
        me.display()
    )
    .into())
}

/// Polls `ok` every 20 ms until it holds; returns how long that took, or an error
/// naming `what` after `within`.
pub fn wait_until(
    within: Duration,
    what: &str,
    mut ok: impl FnMut() -> bool,
) -> Result<Duration, Error> {
    let start = Instant::now();
    while start.elapsed() < within {
        if ok() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{what}: not within {within:?}").into())
}

/// The admin token of the benchmark's nodes.
const ADMIN_TOKEN: &str = "failover-bench-admin-token-0123456789";

/// What a switchover moves to node or member `to`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// The stream's lockstep primary role.
    Stream,
    /// The primary role of the stream's database members (the front's `members`).
    Database,
}

/// Asks for node `to` (1-based) to take the stream's primary role, or for database
/// member `to` to take writes, through an admin endpoint.
pub fn ask_switchover(admin: &str, to: usize, what: Switch) -> Result<(), Error> {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(admin)
        .map_err(|e| format!("connect to the admin endpoint {admin}: {e}"))?;
    // The endpoint answers once the switchover is done (200) or refused.
    let _ = sock.set_read_timeout(Some(Duration::from_secs(15)));
    let db = if what == Switch::Database {
        "&db=1"
    } else {
        ""
    };
    write!(
        sock,
        "POST /v1/switchover?stream={STREAM}{db}&to={to} HTTP/1.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("ask {admin} for a switchover: {e}"))?;
    let mut answer = String::new();
    sock.read_to_string(&mut answer)
        .map_err(|e| format!("read {admin}'s answer: {e}"))?;
    if answer.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("{admin} refused the switchover: {answer}").into())
    }
}
