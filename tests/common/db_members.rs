//! Database members for the database failover tests: one MariaDB server beside each
//! lockstep node (`Role::Member`: read-only at every start, truncating its
//! unacknowledged tail), the stream keys that make the nodes fail the database over
//! among them, clients that write to whichever member takes writes and record every
//! acknowledged row, and the end check.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lockstep::demo::mariadb::{self, MariaDb, Role};
use lockstep::front::connection::{Login, MyConn};
use lockstep::front::db_role;

const REPL_USER: &str = "repl";
const REPL_PASSWORD: &str = "repl-password";

/// A file only its owner reads.
pub fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    p
}

pub struct Members {
    pub dbs: Vec<MariaDb>,
    /// Node n's binlog server port at index n - 1.
    pub binlog_ports: Vec<u16>,
    front_pw: PathBuf,
    repl_pw: PathBuf,
}

impl Members {
    /// Starts `nodes` members under `dir` (member n for node n, the first the initial
    /// primary) and picks the nodes' binlog server ports.
    pub fn start(dir: &Path, nodes: usize) -> Members {
        let ports = lockstep::kit::free_ports(2 * nodes).expect("free ports");
        let dbs = (1..=nodes)
            .map(|n| {
                MariaDb::create(
                    dir,
                    &format!("db{n}"),
                    ports[n - 1],
                    n as u32,
                    Role::Member,
                    &[],
                )
                .expect("start a database member")
            })
            .collect();
        Members {
            dbs,
            binlog_ports: ports[nodes..].to_vec(),
            front_pw: secret_file(
                dir,
                "front.password",
                &format!("{}\n", mariadb::FRONT_PASSWORD),
            ),
            repl_pw: secret_file(dir, "repl.password", REPL_PASSWORD),
        }
    }

    /// Node `n`'s keys of the stream: the front with every member, and its binlog
    /// server.
    pub fn stream_toml(&self, n: usize) -> String {
        let members: Vec<String> = self
            .dbs
            .iter()
            .enumerate()
            .map(|(i, d)| format!("\"{}\" = \"{}\"", i + 1, d.addr()))
            .collect();
        format!(
            "front = {{ kind = \"mariadb\", primary = \"{}\", user = \"{}\", password_file = \
             \"{}\", heartbeat_ms = 200, db_failover_timeout_ms = 400, members = {{ {} }} }}\n\
             binlog_server = {{ listen = \"127.0.0.1:{}\", user = \"{REPL_USER}\", \
             password_file = \"{}\" }}\n",
            self.dbs[0].addr(),
            mariadb::FRONT_USER,
            self.front_pw.display(),
            members.join(", "),
            self.binlog_ports[n - 1],
            self.repl_pw.display()
        )
    }

    pub fn login(&self, i: usize) -> Login {
        let mut l = mariadb::login(&self.dbs[i].addr(), mariadb::FRONT_USER);
        l.connect_timeout = Duration::from_millis(300);
        l.io_timeout = Some(Duration::from_secs(5));
        l
    }

    pub fn addrs(&self) -> Vec<String> {
        self.dbs.iter().map(MariaDb::addr).collect()
    }

    /// The members that take writes (index into `dbs`).
    pub fn writable(&self) -> Vec<usize> {
        (0..self.dbs.len())
            .filter(|&i| {
                self.dbs[i].is_running()
                    && db_role::observe(&self.login(i)).is_ok_and(|o| !o.read_only)
            })
            .collect()
    }

    /// The member that takes writes; panics if two do.
    pub fn primary(&self) -> Option<usize> {
        let w = self.writable();
        assert!(w.len() <= 1, "two database members take writes: {w:?}");
        w.first().copied()
    }

    pub fn wait_primary(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(p) = self.primary() {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "no database primary within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether member `n` replicates from node `n`'s binlog server, or is the primary.
    pub fn settled(&self, n: usize) -> bool {
        db_role::observe(&self.login(n - 1)).is_ok_and(|o| {
            !o.read_only || o.replicating == Some(("127.0.0.1".into(), self.binlog_ports[n - 1]))
        })
    }

    /// Every acknowledged row is on the primary exactly once, and every member holds
    /// the same table (`CHECKSUM TABLE`) once it applied the primary's position.
    pub fn check_end(&self, acked: &[u64]) {
        let p = self.wait_primary(Duration::from_secs(30));
        let mut primary = self.dbs[p].connect().unwrap();
        let target = super::front::global_var(&mut primary, "gtid_binlog_pos");
        let counts = super::front::table_counts(&mut primary);
        let twice: Vec<_> = counts.iter().filter(|(_, k)| **k > 1).collect();
        assert!(twice.is_empty(), "rows held twice: {twice:?}");
        let missing: Vec<_> = acked.iter().filter(|n| !counts.contains_key(n)).collect();
        assert!(missing.is_empty(), "acknowledged rows lost: {missing:?}");
        let sum = |conn: &mut MyConn| {
            conn.query("CHECKSUM TABLE rows_")
                .unwrap()
                .first(1)
                .unwrap()
        };
        let want = sum(&mut primary);
        for i in (0..self.dbs.len()).filter(|&i| i != p) {
            let mut conn = self.dbs[i].connect().unwrap();
            let waited = conn
                .query(&format!(
                    "SELECT MASTER_GTID_WAIT({}, 60)",
                    lockstep::front::connection::quote(&target)
                ))
                .unwrap()
                .first(0);
            assert_eq!(
                waited.as_deref(),
                Some("0"),
                "member {} did not catch up",
                i + 1
            );
            if sum(&mut conn) != want {
                let theirs = super::front::table_counts(&mut conn);
                let only_primary: Vec<_> =
                    counts.keys().filter(|n| !theirs.contains_key(n)).collect();
                let only_member: Vec<_> =
                    theirs.keys().filter(|n| !counts.contains_key(n)).collect();
                panic!(
                    "member {} differs from the primary (member {}): rows only on the primary \
                     {only_primary:?}, only on the member {only_member:?}",
                    i + 1,
                    p + 1,
                );
            }
        }
        println!(
            "{} acknowledged rows, all on the primary (member {}), every member identical",
            acked.len(),
            p + 1
        );
    }
}

/// Clients that insert numbered rows into whichever member takes writes (the one that
/// is not read-only: how a client finds the primary without lockstep's tools), and
/// record every number whose COMMIT returned OK with its time. A failed INSERT is
/// never retried: its fate is unknown.
pub struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<u64, Instant>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    pub fn start(addrs: Vec<String>, clients: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(1));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let threads = (0..clients)
            .map(|k| {
                let (stop, next, acked, addrs) =
                    (stop.clone(), next.clone(), acked.clone(), addrs.clone());
                std::thread::spawn(move || write_rows(k, &addrs, &stop, &next, &acked))
            })
            .collect();
        Writers {
            stop,
            acked,
            threads,
        }
    }

    pub fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    pub fn wait_for_more(&self, more: usize, within: Duration) -> bool {
        let want = self.acked() + more;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.acked() >= want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// The longest time without an acknowledgement from the last one at or before
    /// `t` on.
    pub fn gap_after(&self, t: Instant) -> Duration {
        let acked = self.acked.lock().unwrap();
        let mut times: Vec<Instant> = acked.values().copied().collect();
        times.sort();
        let from = times.iter().rposition(|a| *a <= t).unwrap_or(0);
        times[from..]
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .max()
            .unwrap_or_default()
    }

    pub fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("a writer panicked");
        }
        self.acked.lock().unwrap().keys().copied().collect()
    }
}

fn write_rows(
    k: usize,
    addrs: &[String],
    stop: &AtomicBool,
    next: &AtomicU64,
    acked: &Mutex<BTreeMap<u64, Instant>>,
) {
    let mut conn: Option<MyConn> = None;
    let mut at = k;
    while !stop.load(Ordering::SeqCst) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                at = (at + 1) % addrs.len();
                let mut l = mariadb::login(&addrs[at], mariadb::APP_USER).database(mariadb::APP_DB);
                l.connect_timeout = Duration::from_millis(200);
                l.io_timeout = Some(Duration::from_secs(30));
                let writable = MyConn::connect(&l).ok().and_then(|mut c| {
                    let ro = c.query("SELECT @@global.read_only").ok()?.first(0);
                    (ro.as_deref() == Some("0")).then_some(c)
                });
                match writable {
                    Some(c) => conn.insert(c),
                    None => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                }
            }
        };
        let n = next.fetch_add(1, Ordering::SeqCst);
        match c.run(&format!(
            "INSERT INTO rows_ (n, marker) VALUES ({n}, '{}')",
            super::front::marker(n)
        )) {
            Ok(()) => {
                acked.lock().unwrap().insert(n, Instant::now());
            }
            Err(_) => conn = None,
        }
    }
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Prints p50 and max of `gaps`.
pub fn report(what: &str, gaps: &[Duration]) {
    if gaps.is_empty() {
        return;
    }
    let mut ms: Vec<f64> = gaps.iter().map(|g| g.as_secs_f64() * 1e3).collect();
    let p50 = percentile(&mut ms, 0.5);
    let max = percentile(&mut ms, 1.0);
    println!(
        "{what}: {} rounds, write gap p50 {p50:.1} ms, max {max:.1} ms",
        ms.len()
    );
}
