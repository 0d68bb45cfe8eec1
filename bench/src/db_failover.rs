//! `lockstep-bench failover --mariadb --db`: how long MariaDB clients cannot write when
//! the database primary itself is lost, or handed over, among database members that
//! lockstep's front fails over.
//!
//! Set-up, on loopback: three `lockstepd` processes under their controller (the nodes
//! of [`crate::nodes`]) and one MariaDB server beside each ([`Role::Member`]: read-only
//! at every start). The stream's front names every member; the front promotes the
//! committed primary and lets it take writes, and every other member becomes a replica
//! of its own node's binlog server by itself. Client threads (`--clients`, 8 by
//! default) insert numbered rows into whichever member takes writes (the one with
//! `@@global.read_only = 0`) and record when each INSERT returned OK.
//!
//! Each trial kills the database primary with SIGKILL at a random moment (0 to 200 ms
//! after the clients were seen writing) and measures the write gap: the longest time
//! without an acknowledged INSERT, from the last one before the kill until the first
//! one once another member takes writes (the longest gap rather than the first return
//! after the kill, as in [`crate::failover_mariadb`]). Then it restarts the killed
//! server, which rejoins as a replica of its node's binlog server by itself, and
//! measures the time until it replicates. Switchovers (`POST /v1/switchover?db=1` to
//! the next member, on a node's admin endpoint) are measured the same way from the
//! request.
//!
//! What it checks at the end (a failure exits non-zero): every acknowledged row is on
//! the primary exactly once, no row is there twice, and every member, once it applied
//! the primary's GTID position, has the same `CHECKSUM TABLE rows_`.
//!
//! Without MariaDB it installs it (as root, with apt-get, unless `--no-install`), or
//! skips with one line and exits 0. Ctrl-C stops the run between steps and stops the
//! servers it started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockstep::demo::mariadb::{self, MariaDb, Role};
use lockstep::front::connection::{Login, MyConn, quote};
use lockstep::front::db_role;

use crate::failover::{FailoverArgs, met, ms_at, ms_max, print_table};
use crate::failover_mariadb::{
    RowWriters, Setup, create_rows_table, gtid_binlog_pos, ms, table_counts,
};
use crate::mariadb_bench::write_private;
use crate::nodes::{
    FAILOVER_WITHIN, NODES, Nodes, READY_WITHIN, Switch, ask_switchover, wait_until,
};
use crate::peers_bench::short_version;
use crate::stats::{latency_histogram, record};
use crate::{Error, interrupt};

/// The account the members' replication uses on the nodes' binlog servers.
const REPL_USER: &str = "repl";
const REPL_PASSWORD: &str = "repl-password";
/// How long a member may take to apply the primary's position at the end.
const CATCH_UP_WITHIN_S: u32 = 60;
/// The front's `db_failover_timeout_ms`: how long the database primary may be
/// unreachable before the front fails it over. No failover can beat it, so the write
/// gap is also reported as a ratio to it.
const DB_FAILOVER_TIMEOUT_MS: u64 = 400;
/// The latest moment of a kill after the clients were seen writing.
const KILL_JITTER_MS: u64 = 200;

/// Runs `lockstep-bench failover --mariadb --db`.
pub fn run(args: &FailoverArgs) -> Result<(), Error> {
    let Some(Setup {
        trials,
        switchovers,
        clients,
        bin,
        work,
        dir,
    }) = Setup::new(args, "lockstep-bench failover --mariadb --db", 8)?
    else {
        return Ok(());
    };
    let mut members = Members::start(&dir)?;
    let mut nodes = Nodes::start(bin, &dir, args.failover_timeout_ms, |n| {
        members.stream_toml(n)
    })?;
    // The front makes the configured primary take writes; the others become replicas.
    let first = members.wait_primary(READY_WITHIN)?;
    create_rows_table(&members.dbs[first])?;
    for m in 0..NODES {
        wait_until(READY_WITHIN, &format!("member {} settled", m + 1), || {
            members.settled(m)
        })?;
    }
    let writers = RowWriters::start(&members.addrs(), clients);
    // Every event is printed with its time since the clients started, so that an
    // acknowledged row found missing at the end can be placed among them.
    let t0 = Instant::now();
    let mut rng = Rng::from_clock();

    println!(
        "# lockstep-bench failover --mariadb --db: {NODES} MariaDB {} members beside {NODES} \
         lockstepd processes, {clients} clients inserting rows into the member that takes \
         writes; kills of the database primary: {trials}; switchovers: {switchovers}\n",
        short_version(&members.dbs[0].version),
    );
    let mut gaps = latency_histogram();
    let mut rejoins = latency_histogram();
    for trial in 1..=trials {
        interrupt::check()?;
        nodes.check_alive()?;
        let old = writing_primary(&members, &writers)?;
        std::thread::sleep(Duration::from_millis(rng.below(KILL_JITTER_MS)));
        let killed_at = Instant::now();
        members.dbs[old].kill()?;
        let (new, gap) = follow(&members, &writers, old, killed_at)
            .map_err(|e| format!("trial {trial}: {e}"))?;
        record(&mut gaps, gap);
        let restarted_at = Instant::now();
        members.dbs[old].start()?;
        wait_until(READY_WITHIN, "the killed member replicating again", || {
            members.settled(old)
        })
        .map_err(|e| format!("trial {trial}: {e}"))?;
        let rejoin = restarted_at.elapsed();
        record(&mut rejoins, rejoin);
        println!(
            "trial {trial}: killed member {} at {:.3} s; member {} takes writes; write gap \
             {:.1} ms; replicating {:.1} ms after the restart",
            old + 1,
            (killed_at - t0).as_secs_f64(),
            new + 1,
            ms(gap),
            ms(rejoin)
        );
    }
    let mut switch_gaps = latency_histogram();
    for trial in 1..=switchovers {
        interrupt::check()?;
        nodes.check_alive()?;
        let old = writing_primary(&members, &writers)?;
        let to = (old + 1) % NODES;
        // Any node takes the request: the one beside the target here.
        let asked_at = Instant::now();
        ask_switchover(&nodes.admins[to], to + 1, Switch::Database)?;
        let (new, gap) = follow(&members, &writers, old, asked_at)
            .map_err(|e| format!("switchover {trial}: {e}"))?;
        if new != to {
            return Err(format!(
                "switchover {trial}: member {} takes writes, not {}",
                new + 1,
                to + 1
            )
            .into());
        }
        record(&mut switch_gaps, gap);
        wait_until(READY_WITHIN, "the former primary replicating", || {
            members.settled(old)
        })
        .map_err(|e| format!("switchover {trial}: {e}"))?;
        println!(
            "switchover {trial}: member {} → member {} asked at {:.3} s: write gap {:.1} ms",
            old + 1,
            new + 1,
            (asked_at - t0).as_secs_f64(),
            ms(gap)
        );
    }

    let (acked, tried) = writers.stop();
    let end = members.check_end(&acked);
    nodes.stop_all();
    println!();
    print_table(&[
        ("kill -9 of the database primary: write gap", &gaps),
        ("restart → the killed member replicating", &rejoins),
        ("database switchover: write gap", &switch_gaps),
    ]);
    println!(
        "write gap on a database failover over db_failover_timeout_ms ({DB_FAILOVER_TIMEOUT_MS} \
         ms, the detection floor): p50 {:.2}x, p90 {:.2}x, max {:.2}x",
        ms_at(&gaps, 0.5) / DB_FAILOVER_TIMEOUT_MS as f64,
        ms_at(&gaps, 0.9) / DB_FAILOVER_TIMEOUT_MS as f64,
        ms_max(&gaps) / DB_FAILOVER_TIMEOUT_MS as f64
    );
    println!();
    let end = end?;
    println!(
        "acknowledged rows: {} of {tried} tried; on the primary (member {}) once: {}; \
         missing: {}; rows more than once: {}",
        acked.len(),
        end.primary + 1,
        acked.len() - end.missing,
        end.missing,
        end.twice
    );
    println!(
        "CHECKSUM TABLE rows_ at GTID {}: {}",
        end.position,
        end.checksums.join(", ")
    );
    println!(
        "goal (loopback): write gap on a database failover p50 < 1000 ms: {}; max < 2000 ms: \
         {}",
        met(ms_at(&gaps, 0.5) < 1000.0),
        met(ms_max(&gaps) < 2000.0)
    );
    println!(
        "goal (loopback): write gap on a database switchover max < 200 ms: {}",
        met(ms_max(&switch_gaps) < 200.0)
    );
    if work.kept() {
        println!("data kept in {}", dir.display());
    }
    let mut failures = Vec::new();
    if end.missing > 0 || end.twice > 0 {
        let first: Vec<String> = acked
            .iter()
            .filter(|(n, _)| !end.rows.contains_key(n))
            .take(10)
            .map(|(n, at)| format!("{n} (acknowledged at {:.3} s)", (*at - t0).as_secs_f64()))
            .collect();
        failures.push(format!(
            "{} acknowledged rows missing from the primary ({}), {} rows there more than once",
            end.missing,
            first.join(", "),
            end.twice
        ));
    }
    if end.checksums.iter().any(|c| c != &end.checksums[0]) {
        failures.push(format!(
            "the members' tables differ: {}",
            end.checksums.join(", ")
        ));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; ").into())
    }
}

/// The member taking writes (index into the members), once a client's INSERT returned
/// since now.
fn writing_primary(members: &Members, writers: &RowWriters) -> Result<usize, Error> {
    let p = members.wait_primary(READY_WITHIN)?;
    let since = Instant::now();
    wait_until(READY_WITHIN, "acknowledged rows", || {
        writers.last_ack().is_some_and(|t| t > since)
    })?;
    Ok(p)
}

/// Waits from `at` (the kill of, or the switchover request from, the primary `old`)
/// until another member takes writes and a client's INSERT returned after that; returns
/// that member and the write gap.
fn follow(
    members: &Members,
    writers: &RowWriters,
    old: usize,
    at: Instant,
) -> Result<(usize, Duration), Error> {
    let mut found = Ok(None);
    wait_until(FAILOVER_WITHIN, "another member taking writes", || {
        found = members.primary().map(|p| p.filter(|&p| p != old));
        !matches!(found, Ok(None))
    })?;
    let new = found?.expect("waited for it");
    let seen_at = Instant::now();
    wait_until(FAILOVER_WITHIN, "an INSERT on the new primary", || {
        writers.last_ack().is_some_and(|t| t > seen_at)
    })?;
    let gap = writers
        .longest_gap(at, seen_at)
        .ok_or("no INSERT returned around the failover")?;
    Ok((new, gap))
}

/// The database members, member n beside node n, and the keys of the stream that make
/// the nodes fail the database over among them.
struct Members {
    dbs: Vec<MariaDb>,
    /// Node n's binlog server port at index n - 1.
    binlog_ports: Vec<u16>,
    front_password: PathBuf,
    repl_password: PathBuf,
}

/// What the end check found.
struct End {
    primary: usize,
    position: String,
    missing: usize,
    twice: usize,
    /// Each row number on the primary, with how often it is there.
    rows: BTreeMap<u64, usize>,
    /// Each member's `CHECKSUM TABLE rows_`, member 1 first.
    checksums: Vec<String>,
}

impl Members {
    fn start(dir: &Path) -> Result<Members, Error> {
        let ports = lockstep::kit::free_ports(2 * NODES)?;
        let dbs = (1..=NODES)
            .map(|n| {
                MariaDb::create(
                    dir,
                    &format!("db{n}"),
                    ports[n - 1],
                    n as u32,
                    Role::Member,
                    &[],
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let front_password = dir.join("front.password");
        write_private(&front_password, mariadb::FRONT_PASSWORD)?;
        let repl_password = dir.join("repl.password");
        write_private(&repl_password, REPL_PASSWORD)?;
        Ok(Members {
            dbs,
            binlog_ports: ports[NODES..].to_vec(),
            front_password,
            repl_password,
        })
    }

    /// Node `n`'s keys of the stream: the front with every member, and its binlog
    /// server.
    fn stream_toml(&self, n: usize) -> String {
        let members: Vec<String> = self
            .dbs
            .iter()
            .enumerate()
            .map(|(i, d)| format!("\"{}\" = \"{}\"", i + 1, d.addr()))
            .collect();
        format!(
            "front = {{ kind = \"mariadb\", primary = \"{}\", user = \"{}\", password_file = \
             \"{}\", db_failover_timeout_ms = {DB_FAILOVER_TIMEOUT_MS}, members = {{ {} }} }}\n\
             binlog_server = {{ listen = \"127.0.0.1:{}\", user = \"{REPL_USER}\", \
             password_file = \"{}\" }}\n",
            self.dbs[0].addr(),
            mariadb::FRONT_USER,
            self.front_password.display(),
            members.join(", "),
            self.binlog_ports[n - 1],
            self.repl_password.display()
        )
    }

    fn addrs(&self) -> Vec<String> {
        self.dbs.iter().map(MariaDb::addr).collect()
    }

    fn login(&self, m: usize) -> Login {
        let mut l = mariadb::login(&self.dbs[m].addr(), mariadb::FRONT_USER);
        l.connect_timeout = Duration::from_millis(300);
        l.io_timeout = Some(Duration::from_secs(5));
        l
    }

    /// The member that takes writes, if one does; an error if two do.
    fn primary(&self) -> Result<Option<usize>, Error> {
        let writable: Vec<usize> = (0..self.dbs.len())
            .filter(|&m| {
                self.dbs[m].is_running()
                    && db_role::observe(&self.login(m)).is_ok_and(|o| !o.read_only)
            })
            .collect();
        if writable.len() > 1 {
            let names: Vec<String> = writable.iter().map(|m| (m + 1).to_string()).collect();
            return Err(format!("members {} all take writes", names.join(" and ")).into());
        }
        Ok(writable.first().copied())
    }

    fn wait_primary(&self, within: Duration) -> Result<usize, Error> {
        let mut found = Ok(None);
        wait_until(within, "a member taking writes", || {
            found = self.primary();
            !matches!(found, Ok(None))
        })?;
        Ok(found?.expect("waited for it"))
    }

    /// Whether member `m` replicates from its node's binlog server, or is the primary.
    fn settled(&self, m: usize) -> bool {
        db_role::observe(&self.login(m)).is_ok_and(|o| {
            !o.read_only || o.replicating == Some(("127.0.0.1".into(), self.binlog_ports[m]))
        })
    }

    /// Counts the acknowledged rows missing from the primary and the rows there twice,
    /// and reads every member's checksum once it applied the primary's position.
    fn check_end(&self, acked: &BTreeMap<u64, Instant>) -> Result<End, Error> {
        let primary = self.wait_primary(READY_WITHIN)?;
        let mut conn = self.dbs[primary].connect()?;
        let position = gtid_binlog_pos(&mut conn)?;
        let counts = table_counts(&mut conn)?;
        let missing = acked.keys().filter(|n| !counts.contains_key(n)).count();
        let twice = counts.values().filter(|&&c| c > 1).count();
        let mut checksums = Vec::new();
        for m in 0..self.dbs.len() {
            let mut c = self.dbs[m].connect()?;
            if m != primary {
                let waited = c
                    .query(&format!(
                        "SELECT MASTER_GTID_WAIT({}, {CATCH_UP_WITHIN_S})",
                        quote(&position)
                    ))
                    .map_err(|e| format!("member {}: wait for {position}: {e}", m + 1))?
                    .first(0);
                if waited.as_deref() != Some("0") {
                    return Err(format!(
                        "member {} did not apply {position} within {CATCH_UP_WITHIN_S} s",
                        m + 1
                    )
                    .into());
                }
            }
            checksums.push(checksum(&mut c).map_err(|e| format!("member {}: {e}", m + 1))?);
        }
        Ok(End {
            rows: counts,
            primary,
            position,
            missing,
            twice,
            checksums,
        })
    }
}

fn checksum(c: &mut MyConn) -> Result<String, Error> {
    c.query("CHECKSUM TABLE rows_")
        .map_err(|e| format!("CHECKSUM TABLE rows_: {e}"))?
        .first(1)
        .ok_or_else(|| "CHECKSUM TABLE rows_: no checksum".into())
}

/// A small generator for the moments of the kills (xorshift64*), seeded from the clock:
/// the moment only spreads the kills over the clients' transactions.
struct Rng(u64);

impl Rng {
    fn from_clock() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng(nanos | 1)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}
