//! Database failover with real MariaDB 10.11 servers and real `lockstepd` processes:
//! one database member beside each of three lockstep nodes, the front on the stream's
//! lockstep primary, every other member a replica of its own node's binlog server.
//!
//! - Failover rounds: the database primary is killed (SIGKILL) at a random moment
//!   under clients that record every acknowledged row; a replica becomes the primary by
//!   itself, the clients find it (the one member that takes writes), the killed server
//!   restarts read-only with its unacknowledged tail truncated and rejoins as a
//!   replica by itself.
//! - Combined rounds: the database primary and the lockstep primary killed together;
//!   a lockstep sync member stopped (SIGSTOP) during a database failover.
//! - Switchover rounds through the admin endpoint.
//!
//! At the end every acknowledged row is on the primary, none twice, and every member's
//! table has the same checksum. Rounds: `LOCKSTEP_DB_ROUNDS` (failover, default 3),
//! `LOCKSTEP_DB_COMBINED_ROUNDS` (default 2), `LOCKSTEP_DB_SWITCHOVERS` (default 3);
//! the write gaps measured are printed.
//!
//! Skips with a one-line reason when MariaDB is missing.

#[path = "common/procs.rs"]
mod procs;

#[path = "common/front.rs"]
mod front;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lockstep::demo::mariadb::{self, MariaDb, Role};
use lockstep::front::connection::{Login, MyConn};
use lockstep::front::db_role;
use procs::{Procs, Rng, serial};

const REPL_USER: &str = "repl";
const REPL_PASSWORD: &str = "repl-password";
const TOKEN: &str = "db-failover-test-admin-token-0123456789";
const NODES: usize = 3;

fn rounds(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn secret_file(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    p
}

struct Cluster {
    _dir: tempfile::TempDir,
    procs: Procs,
    dbs: Vec<MariaDb>,
    binlog_ports: Vec<u16>,
    admins: Vec<String>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let ports = procs::free_ports(3 * NODES);
        let dbs: Vec<MariaDb> = (1..=NODES)
            .map(|n| {
                MariaDb::create(
                    dir.path(),
                    &format!("db{n}"),
                    ports[n - 1],
                    n as u32,
                    Role::Member,
                    &[],
                )
                .expect("start a database member")
            })
            .collect();
        let binlog_ports: Vec<u16> = ports[NODES..2 * NODES].to_vec();
        let admins: Vec<String> = ports[2 * NODES..]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let front_pw = secret_file(
            dir.path(),
            "front.password",
            &format!("{}\n", mariadb::FRONT_PASSWORD),
        );
        let repl_pw = secret_file(dir.path(), "repl.password", REPL_PASSWORD);
        let token = secret_file(dir.path(), "admin.token", TOKEN);
        let members: Vec<String> = dbs
            .iter()
            .enumerate()
            .map(|(i, d)| format!("\"{}\" = \"{}\"", i + 1, d.addr()))
            .collect();
        let front = format!(
            "front = {{ kind = \"mariadb\", primary = \"{}\", user = \"{}\", password_file = \
             \"{}\", heartbeat_ms = 200, db_failover_timeout_ms = 400, members = {{ {} }} }}\n",
            dbs[0].addr(),
            mariadb::FRONT_USER,
            front_pw.display(),
            members.join(", ")
        );
        let admins_keys = admins.clone();
        let procs = Procs::start_with(
            &|n| {
                format!(
                    "admin = \"{}\"\nadmin_token_file = \"{}\"\n",
                    admins_keys[n - 1],
                    token.display()
                )
            },
            &|n| {
                format!(
                    "mode = \"strong\"\n{front}binlog_server = {{ listen = \"127.0.0.1:{}\", \
                     user = \"{REPL_USER}\", password_file = \"{}\" }}\n[control]\n\
                     failover_timeout_ms = 150\n",
                    binlog_ports[n - 1],
                    repl_pw.display()
                )
            },
        );
        let c = Cluster {
            _dir: dir,
            procs,
            dbs,
            binlog_ports,
            admins,
        };
        // The front makes the configured primary take writes (every member starts
        // read-only); the other members become replicas of their nodes.
        c.wait_primary(Duration::from_secs(60));
        front::create_rows_table(&c.dbs[c.db_primary().unwrap()]);
        for n in 1..=NODES {
            c.wait_replica_or_primary(n, Duration::from_secs(60));
        }
        c
    }

    fn login(&self, i: usize) -> Login {
        let mut l = mariadb::login(&self.dbs[i].addr(), mariadb::FRONT_USER);
        l.connect_timeout = Duration::from_millis(300);
        l.io_timeout = Some(Duration::from_secs(5));
        l
    }

    /// The members that take writes (index into `dbs`).
    fn writable(&self) -> Vec<usize> {
        (0..NODES)
            .filter(|&i| {
                self.dbs[i].is_running()
                    && db_role::observe(&self.login(i)).is_ok_and(|o| !o.read_only)
            })
            .collect()
    }

    fn db_primary(&self) -> Option<usize> {
        let w = self.writable();
        assert!(w.len() <= 1, "two database members take writes: {w:?}");
        w.first().copied()
    }

    fn wait_primary(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(p) = self.db_primary() {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "no database primary within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until member `n` replicates from node `n`'s binlog server, or is the
    /// primary.
    fn wait_replica_or_primary(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if db_role::observe(&self.login(n - 1)).is_ok_and(|o| {
                !o.read_only
                    || o.replicating == Some(("127.0.0.1".into(), self.binlog_ports[n - 1]))
            }) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "database member {n} did not rejoin within {within:?}; node {n}'s log:\n{}",
                self.procs.stderr(n)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node serving the stream as its lockstep primary.
    fn lockstep_primary(&self) -> Option<usize> {
        (1..=NODES).find(|&n| {
            self.procs.is_running(n)
                && procs::connect(
                    self.procs.addr(n),
                    &procs::client_options(Duration::from_millis(500)),
                    Duration::from_millis(500),
                )
                .ok()
                .and_then(|mut c| c.status().ok())
                .is_some_and(|s| s["role"] == "primary")
        })
    }

    /// `POST /v1/switchover?stream=s&db=1&to=N` on node `at`'s admin endpoint.
    fn switchover(&self, at: usize, to: usize) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(&self.admins[at - 1]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "POST /v1/switchover?stream=s&db=1&to={to} HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, out)
    }
}

/// Clients that insert numbered rows into whichever member takes writes, and record
/// every number whose COMMIT returned OK with its time.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<u64, Instant>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    fn start(addrs: Vec<String>, clients: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(1));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let threads = (0..clients)
            .map(|k| {
                let (stop, next, acked, addrs) =
                    (stop.clone(), next.clone(), acked.clone(), addrs.clone());
                std::thread::spawn(move || {
                    let mut conn: Option<MyConn> = None;
                    let mut at = k;
                    while !stop.load(Ordering::SeqCst) {
                        let c = match conn.as_mut() {
                            Some(c) => c,
                            None => {
                                // The clients' means of finding the primary: the one
                                // member that is not read-only.
                                at = (at + 1) % addrs.len();
                                let mut l = mariadb::login(&addrs[at], mariadb::APP_USER)
                                    .database(mariadb::APP_DB);
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
                            front::marker(n)
                        )) {
                            Ok(()) => {
                                acked.lock().unwrap().insert(n, Instant::now());
                            }
                            Err(_) => conn = None,
                        }
                    }
                })
            })
            .collect();
        Writers {
            stop,
            acked,
            threads,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn wait_for_more(&self, more: usize, within: Duration) -> bool {
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

    /// The longest time without an acknowledgement from `t` until `more` rows after
    /// `t` are acknowledged (from the last acknowledgement before `t`).
    fn gap_after(&self, t: Instant) -> Duration {
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

    fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("a writer panicked");
        }
        self.acked.lock().unwrap().keys().copied().collect()
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Kills the database primary, waits for writes to resume on another member, restarts
/// the killed server and waits until it rejoins. With `also`, the same moment also
/// does something to the lockstep cluster (returns what to undo afterwards). Returns
/// the write gap.
fn failover_round(
    c: &mut Cluster,
    w: &Writers,
    rng: &mut Rng,
    also: &dyn Fn(&mut Cluster) -> Option<(usize, &'static str)>,
) -> Duration {
    let old = c.wait_primary(Duration::from_secs(30));
    assert!(
        w.wait_for_more(30, Duration::from_secs(60)),
        "no writes before the round"
    );
    std::thread::sleep(rng.millis(0, 200));
    let undo = also(c);
    let killed = Instant::now();
    c.dbs[old].kill().expect("kill the database primary");
    assert!(
        w.wait_for_more(20, Duration::from_secs(30)),
        "writes did not resume after the database primary died; nodes' logs:\n{}\n{}\n{}",
        c.procs.stderr(1),
        c.procs.stderr(2),
        c.procs.stderr(3)
    );
    let gap = w.gap_after(killed);
    let new = c.wait_primary(Duration::from_secs(10));
    assert_ne!(new, old, "the killed server cannot be the primary");
    match undo {
        Some((n, "CONT")) => c.procs.signal(n, "CONT"),
        Some((n, "restart")) => c.procs.restart(n),
        _ => {}
    }
    c.dbs[old].start().expect("restart the former primary");
    if std::env::var("LOCKSTEP_DB_DEBUG").is_ok() {
        let mut conn = c.dbs[old].connect().unwrap();
        let q =
            |conn: &mut MyConn, sql: &str| conn.query(sql).unwrap().first(0).unwrap_or_default();
        println!(
            "restarted member {}: binlog {} slave {} current {} max(n) {} count {}",
            old + 1,
            q(&mut conn, "SELECT @@gtid_binlog_pos"),
            q(&mut conn, "SELECT @@gtid_slave_pos"),
            q(&mut conn, "SELECT @@gtid_current_pos"),
            q(&mut conn, "SELECT MAX(n) FROM rows_"),
            q(&mut conn, "SELECT COUNT(*) FROM rows_"),
        );
    }
    c.wait_replica_or_primary(old + 1, Duration::from_secs(60));
    gap
}

/// Every acknowledged row is on the primary exactly once, and every member holds the
/// same table.
fn check_end(c: &Cluster, acked: &[u64]) {
    let p = c.wait_primary(Duration::from_secs(30));
    let mut primary = c.dbs[p].connect().unwrap();
    let target = front::global_var(&mut primary, "gtid_binlog_pos");
    let counts = front::table_counts(&mut primary);
    let twice: Vec<_> = counts.iter().filter(|(_, k)| **k > 1).collect();
    assert!(twice.is_empty(), "rows held twice: {twice:?}");
    let missing: Vec<_> = acked.iter().filter(|n| !counts.contains_key(n)).collect();
    assert!(missing.is_empty(), "acknowledged rows lost: {missing:?}");
    let sum = |i: usize| {
        let mut conn = c.dbs[i].connect().unwrap();
        conn.query("CHECKSUM TABLE rows_")
            .unwrap()
            .first(1)
            .unwrap()
    };
    let want = sum(p);
    for i in (0..NODES).filter(|&i| i != p) {
        let mut conn = c.dbs[i].connect().unwrap();
        let waited = conn
            .query(&format!(
                "SELECT MASTER_GTID_WAIT({}, 30)",
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
        if sum(i) != want {
            let theirs = front::table_counts(&mut conn);
            let only_primary: Vec<_> = counts.keys().filter(|n| !theirs.contains_key(n)).collect();
            let only_member: Vec<_> = theirs.keys().filter(|n| !counts.contains_key(n)).collect();
            panic!(
                "member {} differs from the primary (member {}): rows only on the primary \
                 {only_primary:?}, only on the member {only_member:?}; binlog positions {} and {}",
                i + 1,
                p + 1,
                target,
                front::global_var(&mut conn, "gtid_binlog_pos")
            );
        }
    }
    println!(
        "{} acknowledged rows, all on the primary (member {}), every member identical",
        acked.len(),
        p + 1
    );
}

fn report(what: &str, gaps: &mut [Duration]) {
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

#[test]
fn the_database_fails_over_and_switches_over_with_every_acknowledged_row() {
    if !front::mariadb_or_skip("the_database_fails_over") {
        return;
    }
    let _serial = serial();
    let (mut rng, seed) = Rng::from_env("LOCKSTEP_DB_SEED");
    println!("seed {seed} (LOCKSTEP_DB_SEED)");
    let mut c = Cluster::start();
    let addrs: Vec<String> = c.dbs.iter().map(MariaDb::addr).collect();
    let w = Writers::start(addrs, 8);

    let mut gaps = Vec::new();
    for _ in 0..rounds("LOCKSTEP_DB_ROUNDS", 3) {
        gaps.push(failover_round(&mut c, &w, &mut rng, &|_| None));
    }
    report("database failover (SIGKILL of the primary)", &mut gaps);

    let mut combined = Vec::new();
    for round in 0..rounds("LOCKSTEP_DB_COMBINED_ROUNDS", 2) {
        let gap = if round % 2 == 0 {
            // The lockstep primary dies with the database primary.
            failover_round(&mut c, &w, &mut rng, &|c| {
                let n = c.lockstep_primary().expect("a lockstep primary");
                c.procs.kill9(n);
                Some((n, "restart"))
            })
        } else {
            // A lockstep sync member stops during the database failover.
            failover_round(&mut c, &w, &mut rng, &|c| {
                let p = c.lockstep_primary().expect("a lockstep primary");
                let n = (1..=NODES).find(|&n| n != p).unwrap();
                c.procs.signal(n, "STOP");
                Some((n, "CONT"))
            })
        };
        combined.push(gap);
    }
    report("combined faults", &mut combined);

    let mut switchovers = Vec::new();
    for _ in 0..rounds("LOCKSTEP_DB_SWITCHOVERS", 3) {
        let old = c.wait_primary(Duration::from_secs(30));
        assert!(w.wait_for_more(30, Duration::from_secs(60)));
        let to = (old + 1) % NODES + 1;
        let asked = Instant::now();
        let (status, body) = c.switchover(1 + rng.below(NODES as u64) as usize, to);
        assert_eq!(status, 200, "switchover: {body}");
        assert!(w.wait_for_more(20, Duration::from_secs(30)));
        switchovers.push(w.gap_after(asked));
        assert_eq!(c.wait_primary(Duration::from_secs(5)), to - 1);
        c.wait_replica_or_primary(old + 1, Duration::from_secs(30));
    }
    report("database switchover", &mut switchovers);

    let acked = w.stop();
    check_end(&c, &acked);
}
