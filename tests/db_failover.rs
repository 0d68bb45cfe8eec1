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
//! - Switchover rounds with `lockstep switchover --db`; after every failover,
//!   `lockstep db-primary --wait` names the member that takes writes.
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

#[path = "common/db_members.rs"]
mod db_members;

use std::time::{Duration, Instant};

use db_members::{Members, Writers, report, secret_file};
use procs::{Procs, Rng, serial};

const TOKEN: &str = "db-failover-test-admin-token-0123456789";
const NODES: usize = 3;

fn rounds(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Cluster {
    procs: Procs,
    db: Members,
    admins: Vec<String>,
    token: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let db = Members::start(dir.path(), NODES);
        let admins: Vec<String> = procs::free_ports(NODES)
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let token = secret_file(dir.path(), "admin.token", TOKEN);
        let procs = Procs::start_with(
            &|n| {
                format!(
                    "admin = \"{}\"\nadmin_token_file = \"{}\"\n",
                    admins[n - 1],
                    token.display()
                )
            },
            &|n| {
                format!(
                    "mode = \"strong\"\n{}[control]\nfailover_timeout_ms = 150\n",
                    db.stream_toml(n)
                )
            },
        );
        let c = Cluster {
            procs,
            db,
            admins,
            token,
            _dir: dir,
        };
        // The front makes the configured primary take writes (every member starts
        // read-only); the other members become replicas of their nodes.
        let p = c.db.wait_primary(Duration::from_secs(60));
        front::create_rows_table(&c.db.dbs[p]);
        for n in 1..=NODES {
            c.wait_settled(n, Duration::from_secs(60));
        }
        c
    }

    fn wait_settled(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.db.settled(n) {
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

    /// Runs the `lockstep` CLI against node `at`'s admin endpoint; (success, stdout
    /// and stderr).
    fn cli(&self, at: usize, args: &[&str]) -> (bool, String) {
        // Node `at` first, then the others: `db-primary --wait` asks every node's
        // fronts whether the front on the lockstep primary serves the new primary.
        let mut nodes = vec![self.admins[at - 1].clone()];
        nodes.extend(
            (1..=NODES)
                .filter(|&n| n != at)
                .map(|n| self.admins[n - 1].clone()),
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args(["--nodes", &nodes.join(","), "--token-file"])
            .arg(&self.token)
            .args(args)
            .output()
            .expect("run lockstep");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `lockstep db-primary --stream s --wait` on node `at`: the address it prints.
    fn db_primary_cli(&self, at: usize) -> String {
        let (ok, out) = self.cli(at, &["db-primary", "--stream", "s", "--wait"]);
        assert!(ok, "lockstep db-primary: {out}");
        out.trim().to_owned()
    }
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
    let old = c.db.wait_primary(Duration::from_secs(30));
    assert!(
        w.wait_for_more(30, Duration::from_secs(60)),
        "no writes before the round"
    );
    std::thread::sleep(rng.millis(0, 200));
    let undo = also(c);
    let killed = Instant::now();
    c.db.dbs[old].kill().expect("kill the database primary");
    assert!(
        w.wait_for_more(20, Duration::from_secs(30)),
        "writes did not resume after the database primary died; nodes' logs:\n{}\n{}\n{}",
        c.procs.stderr(1),
        c.procs.stderr(2),
        c.procs.stderr(3)
    );
    let gap = w.gap_after(killed);
    let new = c.db.wait_primary(Duration::from_secs(10));
    assert_ne!(new, old, "the killed server cannot be the primary");
    match undo {
        Some((n, "CONT")) => c.procs.signal(n, "CONT"),
        Some((n, "restart")) => c.procs.restart(n),
        _ => {}
    }
    // What scripts use to find the primary names the one that takes writes.
    let at = (1..=NODES).find(|&n| c.procs.is_running(n)).unwrap();
    assert_eq!(c.db_primary_cli(at), c.db.dbs[new].addr());
    c.db.dbs[old].start().expect("restart the former primary");
    c.wait_settled(old + 1, Duration::from_secs(60));
    gap
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
    let w = Writers::start(c.db.addrs(), 8);

    let mut gaps = Vec::new();
    for _ in 0..rounds("LOCKSTEP_DB_ROUNDS", 3) {
        gaps.push(failover_round(&mut c, &w, &mut rng, &|_| None));
    }
    report("database failover (SIGKILL of the primary)", &gaps);

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
    report("combined faults", &combined);

    let mut switchovers = Vec::new();
    for _ in 0..rounds("LOCKSTEP_DB_SWITCHOVERS", 3) {
        let old = c.db.wait_primary(Duration::from_secs(30));
        assert!(w.wait_for_more(30, Duration::from_secs(60)));
        let to = (old + 1) % NODES + 1;
        let asked = Instant::now();
        let to_arg = to.to_string();
        let at = 1 + rng.below(NODES as u64) as usize;
        let (ok, out) = c.cli(
            at,
            &["switchover", "--db", "--stream", "s", "--to", &to_arg],
        );
        assert!(ok, "lockstep switchover --db: {out}");
        assert!(w.wait_for_more(20, Duration::from_secs(30)));
        switchovers.push(w.gap_after(asked));
        if std::env::var_os("LOCKSTEP_DB_DEBUG").is_some() {
            let mut lines: Vec<String> = (1..=NODES)
                .flat_map(|n| {
                    c.procs
                        .stderr(n)
                        .lines()
                        .filter(|l| l.contains("switchover") || l.contains("front"))
                        .map(|l| format!("node {n}: {l}"))
                        .collect::<Vec<_>>()
                })
                .collect();
            lines.sort_by(|a, b| a[8..].cmp(&b[8..]));
            for l in lines.iter().rev().take(12).rev() {
                println!("{l}");
            }
        }
        assert_eq!(c.db.wait_primary(Duration::from_secs(5)), to - 1);
        c.wait_settled(old + 1, Duration::from_secs(30));
    }
    report("database switchover", &switchovers);

    let acked = w.stop();
    c.db.check_end(&acked);
}
