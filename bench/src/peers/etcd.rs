//! etcd: a 3-member cluster on loopback, started from the distribution's binary in the
//! benchmark's directory.
//!
//! Durability is etcd's default: a put is committed when a majority of the members
//! (here the leader and one follower) have appended it to their write-ahead log and
//! fsynced it (no `--unsafe-no-fsync`). Everything else is the default configuration,
//! apart from a larger backend quota and automatic compaction, so a long run of 64 KiB
//! values does not fill the 2 GiB default quota and stop the cluster.
//!
//! A commit is one put of the payload through the v3 JSON gateway (`/v3/kv/put`,
//! key and value in base64), each client on its own keep-alive connection to the
//! leader, so no put pays a follower's forwarding hop.
//!
//! Checks: before and after every series all three members must answer a status
//! request and agree on one leader.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::Error;
use crate::peers::http::{Http, base64};
use crate::peers::process::{self, ServerProcess};
use crate::pool::Conn;

pub const ETCD: &str = "/usr/bin/etcd";

const MEMBERS: usize = 3;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Backend quota: etcd's largest recommended (the default is 2 GiB).
const QUOTA_BYTES: u64 = 8 << 30;

pub struct Etcd {
    members: Vec<ServerProcess>,
    client_addrs: Vec<String>,
    leader: usize,
    pub version: String,
}

impl Etcd {
    /// Creates and starts the three members under `dir`.
    pub fn start(dir: &Path) -> Result<Etcd, Error> {
        if !Path::new(ETCD).exists() {
            return Err(format!("no {ETCD}").into());
        }
        // etcd does not refuse root, but runs as its own account like the others.
        let account = process::server_account("etcd").unwrap_or(None);
        process::own_dir(account.as_ref(), dir)?;
        let version = process::version_of(Command::new(ETCD).arg("--version"))?;
        let ports: Vec<(u16, u16)> = lockstep::kit::free_ports(2 * MEMBERS)?
            .chunks_exact(2)
            .map(|p| (p[0], p[1]))
            .collect();
        let cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut members = Vec::with_capacity(MEMBERS);
        for (i, (client, peer)) in ports.iter().enumerate() {
            let mut cmd = Command::new(ETCD);
            cmd.arg(format!("--name=m{i}"))
                .arg(format!(
                    "--data-dir={}",
                    dir.join(format!("m{i}")).display()
                ))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!("--initial-cluster={}", cluster.join(",")))
                .args([
                    "--initial-cluster-state=new",
                    "--initial-cluster-token=lockstep-bench",
                ])
                .arg(format!("--quota-backend-bytes={QUOTA_BYTES}"))
                .args([
                    "--auto-compaction-mode=revision",
                    "--auto-compaction-retention=10000",
                ])
                .args(["--logger=zap", "--log-level=warn"]);
            members.push(ServerProcess::spawn(
                &format!("etcd member m{i}"),
                cmd,
                account.as_ref(),
                &dir.join(format!("m{i}.log")),
                "TERM",
            )?);
        }
        let client_addrs: Vec<String> = ports
            .iter()
            .map(|(c, _)| format!("127.0.0.1:{c}"))
            .collect();
        let mut etcd = Etcd {
            members,
            client_addrs,
            leader: 0,
            version,
        };
        let addrs = etcd.client_addrs.clone();
        etcd.members[0].wait_until("in a cluster with a leader", START_TIMEOUT, || {
            Ok(leader(&addrs).is_ok())
        })?;
        etcd.leader = leader(&etcd.client_addrs)?;
        Ok(etcd)
    }

    /// `n` client connections to the leader.
    pub fn connect(&self, n: usize) -> Result<Vec<EtcdCommit>, Error> {
        (0..n)
            .map(|i| {
                let mut key = Vec::new();
                base64(format!("lockstep-bench/{i}").as_bytes(), &mut key);
                Ok(EtcdCommit {
                    http: Http::connect(&self.client_addrs[self.leader])?,
                    key: String::from_utf8(key).expect("base64 is ASCII"),
                    body: Vec::new(),
                })
            })
            .collect()
    }

    /// Whether all members run and agree on the leader the clients use.
    pub fn verify(&mut self) -> Result<String, Error> {
        for m in &mut self.members {
            m.check_alive()?;
        }
        let now = leader(&self.client_addrs)?;
        if now != self.leader {
            return Err(format!(
                "etcd: the leader moved from m{} to m{now} (an election during the run)",
                self.leader
            )
            .into());
        }
        Ok(format!(
            "{MEMBERS} members up, leader m{now}; fsync per commit (default), quorum 2 of 3"
        ))
    }
}

/// One client connection; a commit is one put.
pub struct EtcdCommit {
    http: Http,
    key: String,
    body: Vec<u8>,
}

impl Conn for EtcdCommit {
    fn commit(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.body.clear();
        self.body.extend_from_slice(b"{\"key\":\"");
        self.body.extend_from_slice(self.key.as_bytes());
        self.body.extend_from_slice(b"\",\"value\":\"");
        base64(payload, &mut self.body);
        self.body.extend_from_slice(b"\"}");
        let (status, reply) = self.http.post("/v3/kv/put", &self.body)?;
        if status != 200 {
            return Err(format!(
                "etcd put: HTTP {status}: {}",
                String::from_utf8_lossy(&reply)
            )
            .into());
        }
        Ok(())
    }
}

/// The index of the leader, if every member answers a status request and all name the
/// same leader.
fn leader(addrs: &[String]) -> Result<usize, Error> {
    let mut ids = Vec::with_capacity(addrs.len());
    let mut leaders = Vec::with_capacity(addrs.len());
    for a in addrs {
        let (status, body) = Http::connect(a)?.post("/v3/maintenance/status", b"{}")?;
        if status != 200 {
            return Err(format!("etcd {a}: status: HTTP {status}").into());
        }
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| format!("etcd {a}: status reply: {e}"))?;
        let field = |v: &Value| v.as_str().unwrap_or_default().to_string();
        ids.push(field(&v["header"]["member_id"]));
        leaders.push(field(&v["leader"]));
    }
    let first = &leaders[0];
    if first.is_empty() || first == "0" || leaders.iter().any(|l| l != first) {
        return Err(format!("etcd: members name different leaders: {leaders:?}").into());
    }
    ids.iter()
        .position(|id| id == first)
        .ok_or_else(|| format!("etcd: the leader {first} is not a member").into())
}
