//! `lockstep-bench failover --mariadb`: how long a MariaDB application cannot commit
//! when the lockstep node that holds its database's front is killed, or hands its role
//! over.
//!
//! Set-up, on loopback: a MariaDB primary with lossless semi-sync (AFTER_SYNC, no
//! timeout to asynchronous replication; started by [`lockstep::demo::mariadb`]) whose
//! only semi-sync replica is the front of stream [`STREAM`] in three `lockstepd`
//! processes under their controller (the nodes of [`crate::nodes`], the same as the
//! plain failover benchmark's). Client threads (`--clients`, 4 by default) commit
//! single-row INSERTs continuously, each row numbered once and never retried, and
//! record when each COMMIT returned OK. The front ACKs a transaction only once lockstep
//! committed it, so while the stream has no primary, or the new primary's front has
//! not yet taken over the binlog, every COMMIT waits.
//!
//! Each trial kills the stream's lockstep primary with SIGKILL and measures, from the
//! kill:
//! - when a surviving node reports itself primary in a new epoch;
//! - when that node first committed a record of its new epoch: the front's first
//!   record after it resumed (the record at the node's commit LSN carries the epoch).
//!   Both are read from the nodes every [`POLL`], so they are when the poll saw them:
//!   up to a poll and a request late;
//! - the database write stall: the longest time without any client's COMMIT returning,
//!   from the last one before the kill until the first one after that first commit. The
//!   longest gap, rather than the first return after the kill, because a COMMIT whose
//!   ACK was already on its way may return just after the kill.
//!
//! Then it restarts the killed node and measures the time until the cluster is back to
//! full strength (as the plain benchmark does). Switchovers (`lockstep switchover` to
//! the next node, through its admin endpoint) are measured the same way from the
//! request.
//!
//! What it checks at the end (a failure exits non-zero): every row whose COMMIT
//! returned OK is in the database exactly once, and no row is there twice; the
//! database's GTID position (`gtid_binlog_pos`) equals the position of the stream's
//! record at the primary's commit LSN ([`FrontRecord::decode`], its `position`); the
//! primary made no commit without an ACK (`Rpl_semi_sync_master_no_tx` unchanged) and
//! is still semi-synchronous; every node's log is sound and holds every acknowledged
//! row once, in GTID-contiguous transactions.
//!
//! Without MariaDB it installs it (as root, with apt-get, unless `--no-install`), or
//! skips with one line and exits 0. Ctrl-C stops the run between steps and stops the
//! servers it started.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lockstep::client::Client;
use lockstep::demo::install::{self, Package};
use lockstep::demo::mariadb::{self, MariaDb, Role};
use lockstep::front::connection::MyConn;
use lockstep::front::gtid::GtidState;
use lockstep::front::reader::{Assembler, Item};
use lockstep::front::record::FrontRecord;

use crate::failover::{FailoverArgs, met, ms_at, ms_max, print_table};
use crate::mariadb_bench::{wait_semi_sync, write_private};
use crate::nodes::{
    FAILOVER_WITHIN, NODES, Nodes, READY_WITHIN, STREAM, ask_switchover, bin_path, client_options,
    wait_until,
};
use crate::peers::mariadb::PrimaryState;
use crate::peers_bench::{open_to_servers, short_version};
use crate::stats::{latency_histogram, record};
use crate::workdir::Workdir;
use crate::{Error, interrupt};

/// How often the nodes' status is read while a failover or switchover is under way:
/// the resolution of the lockstep-side times. Not shorter: the polls are requests to
/// the very nodes being measured, on a machine whose cores they share.
const POLL: Duration = Duration::from_millis(5);
/// How long the front may take to become the primary's semi-sync replica at the start.
const ATTACH_WITHIN: Duration = Duration::from_secs(60);
/// How long the stream may take to reach the database's position after the clients
/// stopped.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(30);
/// A client's connection is given up after this long without an answer (a COMMIT that
/// waits for the front through a failover must fit well within it).
const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `lockstep-bench failover --mariadb`.
pub fn run(args: &FailoverArgs) -> Result<(), Error> {
    let (trials, switchovers) = if args.quick {
        (2, 1)
    } else {
        (args.trials, args.switchovers.unwrap_or(args.trials))
    };
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    // Before any thread starts, so that every thread inherits the blocked signals and
    // an interrupted run still stops the MariaDB server.
    interrupt::take_signals()?;
    if let Err(why) = mariadb_here(!args.no_install) {
        println!("skipped: lockstep-bench failover --mariadb: {why}");
        return Ok(());
    }
    let bin = bin_path(args.lockstepd.as_deref())?;
    let work = Workdir::new(args.dir.as_deref())?;
    let dir = std::path::absolute(work.path()).map_err(|e| format!("{e}"))?;
    // MariaDB runs as its own account when this runs as root; it must reach its
    // directory inside this one.
    open_to_servers(&dir)?;
    let port = lockstep::kit::free_ports(1)?[0];
    let mut db = MariaDb::create(&dir.join("mariadb"), "primary", port, 1, Role::Primary, &[])?;
    let password = dir.join("front.password");
    write_private(&password, mariadb::FRONT_PASSWORD)?;
    let front = format!(
        "front = {{ kind = \"mariadb\", primary = \"{}\", user = \"{}\", password_file = \"{}\" }}\n",
        db.addr(),
        mariadb::FRONT_USER,
        password.display()
    );
    let mut nodes = Nodes::start(bin, &dir, args.failover_timeout_ms, &front)?;
    wait_semi_sync(&db, ATTACH_WITHIN)?;
    db.connect()?
        .run(
            "CREATE TABLE rows_ (id BIGINT AUTO_INCREMENT PRIMARY KEY, n BIGINT NOT NULL, \
             marker VARCHAR(40) NOT NULL) ENGINE=InnoDB",
        )
        .map_err(|e| format!("create the table of the clients' rows: {e}"))?;
    let semi_sync_before = PrimaryState::read(&mut db.connect()?)?;
    let writers = RowWriters::start(&db.addr(), args.clients);
    let mut watch = Watch::new(&nodes);

    // Full strength at the start: every member durable up to a commit of the front.
    let started = Instant::now();
    wait_until(READY_WITHIN, "the first acknowledged row", || {
        writers.last_ack().is_some_and(|t| t > started)
    })?;
    wait_full_strength(&nodes, &mut watch, &writers, started, "at the start")?;

    println!(
        "# lockstep-bench failover --mariadb: MariaDB {} primary (lossless semi-sync), its \
         front in {NODES} lockstepd processes, {} clients committing single-row INSERTs; \
         kills of the lockstep primary: {trials}; switchovers: {switchovers}\n",
        short_version(&db.version),
        args.clients
    );
    let mut promoted = latency_histogram();
    let mut first_commit = latency_histogram();
    let mut stall = latency_histogram();
    let mut rejoin = latency_histogram();
    for trial in 1..=trials {
        interrupt::check()?;
        nodes.check_alive()?;
        db.check_alive()?;
        // Kill while the clients are committing through the primary's front.
        let primary = committing_primary(&nodes, &writers)?;
        let epoch = watch
            .epoch(primary)
            .ok_or_else(|| format!("trial {trial}: node {primary} does not answer"))?;
        let killed_at = Instant::now();
        nodes.kill9(primary)?;
        let took = follow(&mut watch, &writers, primary, epoch, killed_at)
            .map_err(|e| format!("trial {trial}: {e}"))?;
        record(&mut promoted, took.promoted);
        record(&mut first_commit, took.first_commit);
        record(&mut stall, took.stall);
        let restarted_at = Instant::now();
        nodes.spawn(primary)?;
        let back = wait_full_strength(
            &nodes,
            &mut watch,
            &writers,
            restarted_at,
            "after the restart",
        )
        .map_err(|e| format!("trial {trial}: {e}"))?;
        record(&mut rejoin, back);
        println!(
            "trial {trial}: killed node {primary}; node {} primary after {:.1} ms, first \
             commit on node {} after {:.1} ms (epoch {}, lsn {}); database write stall \
             {:.1} ms; full strength {:.1} ms after the restart",
            took.node,
            ms(took.promoted),
            took.node,
            ms(took.first_commit),
            took.epoch,
            took.lsn,
            ms(took.stall),
            ms(back)
        );
    }
    let mut switch_commit = latency_histogram();
    let mut switch_stall = latency_histogram();
    for trial in 1..=switchovers {
        interrupt::check()?;
        nodes.check_alive()?;
        let primary = committing_primary(&nodes, &writers)?;
        let target = primary % NODES + 1;
        let epoch = watch
            .epoch(primary)
            .ok_or_else(|| format!("switchover {trial}: node {primary} does not answer"))?;
        let asked_at = Instant::now();
        ask_switchover(&nodes.admins[target - 1], target)?;
        let took = follow(&mut watch, &writers, primary, epoch, asked_at)
            .map_err(|e| format!("switchover {trial}: {e}"))?;
        record(&mut switch_commit, took.first_commit);
        record(&mut switch_stall, took.stall);
        println!(
            "switchover {trial}: node {primary} → node {}: first commit on node {} after \
             {:.1} ms (epoch {}, lsn {}); database write stall {:.1} ms",
            took.node,
            took.node,
            ms(took.first_commit),
            took.epoch,
            took.lsn,
            ms(took.stall)
        );
        wait_full_strength(
            &nodes,
            &mut watch,
            &writers,
            Instant::now(),
            "after the switchover",
        )
        .map_err(|e| format!("switchover {trial}: {e}"))?;
    }

    // The checks, once the clients stopped and their last COMMITs returned.
    let (acked, tried) = writers.stop();
    let mut conn = db.connect()?;
    let mut positions = (String::new(), String::new(), 0);
    let caught_up = wait_until(
        CATCH_UP_WITHIN,
        "the stream at the database's position",
        || {
            let Ok(db_pos) = gtid_binlog_pos(&mut conn) else {
                return false;
            };
            match stream_position(&nodes, &mut watch) {
                Some((lsn, pos)) => {
                    positions = (db_pos.clone(), pos.to_string(), lsn);
                    GtidState::parse(&db_pos).is_ok_and(|d| d == pos)
                }
                None => false,
            }
        },
    )
    .is_ok();
    let semi_sync_after = PrimaryState::read(&mut conn)?;
    let in_db = table_counts(&mut conn)?;
    drop(conn);
    nodes.stop_all();
    let in_streams = (1..=NODES)
        .map(|n| stream_rows(&nodes.stream_dir(n)).map_err(|e| format!("node {n}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    drop(db);

    let missing = acked.keys().filter(|n| !in_db.contains_key(n)).count();
    let twice = in_db.values().filter(|&&c| c > 1).count();
    let stream_bad: usize = in_streams
        .iter()
        .map(|rows| acked.keys().filter(|n| rows.get(n) != Some(&1)).count())
        .sum();
    let no_tx = semi_sync_after.no_tx.saturating_sub(semi_sync_before.no_tx);
    println!();
    print_table(&[
        (
            "kill -9 of the lockstep primary → new primary promoted",
            &promoted,
        ),
        (
            "kill -9 of the lockstep primary → first commit on the new primary (the front's)",
            &first_commit,
        ),
        (
            "kill -9 of the lockstep primary: database write stall",
            &stall,
        ),
        ("restart → back to full strength", &rejoin),
        ("switchover → first commit on the target", &switch_commit),
        ("switchover: database write stall", &switch_stall),
    ]);
    println!();
    println!(
        "acknowledged rows: {} of {tried} tried; in the database once: {}; missing: \
         {missing}; rows more than once: {twice}",
        acked.len(),
        acked.len() - missing - acked.keys().filter(|n| in_db.get(n) > Some(&1)).count()
    );
    println!(
        "acknowledged rows in the stream on {NODES} nodes, once each: {}; missing or \
         repeated: {stream_bad}",
        acked.len()
    );
    println!(
        "database GTID position {} {} the stream's position {} (record at commit lsn {})",
        positions.0,
        if caught_up { "=" } else { "≠" },
        positions.1,
        positions.2
    );
    println!(
        "commits without the front's ACK (Rpl_semi_sync_master_no_tx): {no_tx}; semi-sync \
         on at the end: {}",
        if semi_sync_after.semi_sync_on {
            "yes"
        } else {
            "no"
        }
    );
    println!(
        "goal (loopback): database write stall on a lockstep failover p50 < 1000 ms: {}; \
         max < 2000 ms: {}",
        met(ms_at(&stall, 0.5) < 1000.0),
        met(ms_max(&stall) < 2000.0)
    );
    println!(
        "goal (loopback): database write stall on a switchover max < 200 ms: {}",
        met(ms_max(&switch_stall) < 200.0)
    );
    if work.kept() {
        println!("data kept in {}", dir.display());
    }
    let mut failures = Vec::new();
    if missing > 0 || twice > 0 {
        failures.push(format!(
            "{missing} acknowledged rows missing from the database, {twice} rows there more \
             than once"
        ));
    }
    if stream_bad > 0 {
        failures.push(format!(
            "{stream_bad} acknowledged rows missing from a node's stream or there more than once"
        ));
    }
    if !caught_up {
        failures.push(format!(
            "the stream's position {} is not the database's {} within {CATCH_UP_WITHIN:?}",
            positions.1, positions.0
        ));
    }
    if no_tx > 0 || !semi_sync_after.semi_sync_on {
        failures.push(format!(
            "the database committed without the front: no_tx grew by {no_tx}, semi-sync on: {}",
            semi_sync_after.semi_sync_on
        ));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; ").into())
    }
}

/// MariaDB's server is here, installed now if it may be; else why not.
fn mariadb_here(may_install: bool) -> Result<(), String> {
    if mariadb::available().is_ok() {
        return Ok(());
    }
    let package = Package {
        name: "mariadb-server",
        installed_if: || mariadb::available().is_ok(),
    };
    match install::ensure(&[package], may_install).first() {
        None => mariadb::available(),
        Some((_, why)) => Err(format!("MariaDB (mariadb-server) is {why}")),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The primary (1-based), once a client's COMMIT returned since now: the front runs
/// there.
fn committing_primary(nodes: &Nodes, writers: &RowWriters) -> Result<usize, Error> {
    nodes.committing_primary(|_, since| writers.last_ack().is_some_and(|t| t > since))
}

/// Waits until a client's COMMIT returned after `since`, then until every member of the
/// primary's sync set is connected and durable up to the primary's commit LSN of that
/// moment; returns the time from `since`.
fn wait_full_strength(
    nodes: &Nodes,
    watch: &mut Watch,
    writers: &RowWriters,
    since: Instant,
    what: &str,
) -> Result<Duration, Error> {
    let mut target: Option<u64> = None;
    wait_until(READY_WITHIN, &format!("full strength {what}"), || {
        if target.is_none() && writers.last_ack().is_some_and(|t| t > since) {
            target = nodes
                .primary()
                .and_then(|p| watch.status(p))
                .and_then(|st| st["commit_lsn"].as_u64());
        }
        target.is_some_and(|lsn| nodes.full_strength(lsn))
    })?;
    Ok(since.elapsed())
}

/// What one failover or switchover took, from the kill or the request.
struct Took {
    /// The new primary, its epoch, and the LSN of its first commit seen.
    node: usize,
    epoch: u64,
    lsn: u64,
    promoted: Duration,
    first_commit: Duration,
    stall: Duration,
}

/// Follows the stream from `at` (the kill of, or the switchover request to, the primary
/// `old` in `epoch`) until a client's COMMIT returns after the new primary's first
/// commit.
fn follow(
    watch: &mut Watch,
    writers: &RowWriters,
    old: usize,
    epoch: u64,
    at: Instant,
) -> Result<Took, Error> {
    let mut promoted = None;
    let (node, new_epoch, lsn, committed_at) = loop {
        if at.elapsed() > FAILOVER_WITHIN {
            return Err(format!(
                "no node other than {old} committed in an epoch above {epoch} within \
                 {FAILOVER_WITHIN:?}"
            )
            .into());
        }
        if let Some(seen) = watch.new_primary(old, epoch) {
            let now = Instant::now();
            promoted.get_or_insert(now);
            if let Some(lsn) = watch.commit_in_epoch(seen.node, seen.epoch) {
                break (seen.node, seen.epoch, lsn, now);
            }
        }
        std::thread::sleep(POLL);
    };
    let promoted_at = promoted.unwrap_or(committed_at);
    // The clients' first COMMIT after the new primary's first commit ends the stall.
    wait_until(
        FAILOVER_WITHIN,
        "a database COMMIT after the new primary's first commit",
        || writers.last_ack().is_some_and(|t| t > committed_at),
    )?;
    let stall = writers
        .longest_gap(at, committed_at)
        .ok_or("no database COMMIT returned around the failover")?;
    Ok(Took {
        node,
        epoch: new_epoch,
        lsn,
        promoted: promoted_at - at,
        first_commit: committed_at - at,
        stall,
    })
}

/// A node that says it is the stream's primary.
struct Seen {
    node: usize,
    epoch: u64,
}

/// Reads the nodes' status and records through one kept connection per node, so that
/// polling every few milliseconds does not cost a connection each time.
struct Watch {
    addrs: Vec<String>,
    clients: Vec<Option<Client>>,
}

impl Watch {
    fn new(nodes: &Nodes) -> Watch {
        Watch {
            addrs: nodes.addrs.clone(),
            clients: (0..NODES).map(|_| None).collect(),
        }
    }

    /// Node `n`'s client, connected now if it was not.
    fn client(&mut self, n: usize) -> Option<&mut Client> {
        let slot = &mut self.clients[n - 1];
        if slot.is_none() {
            *slot = Client::connect(&[&self.addrs[n - 1]], STREAM, client_options()).ok();
        }
        slot.as_mut()
    }

    /// The stream's status on node `n`; a failed request drops the connection.
    fn status(&mut self, n: usize) -> Option<serde_json::Value> {
        let st = self.client(n)?.status();
        if st.is_err() {
            self.clients[n - 1] = None;
        }
        st.ok()
    }

    fn epoch(&mut self, n: usize) -> Option<u64> {
        self.status(n)?["epoch"].as_u64()
    }

    /// A node other than `old` that is primary in an epoch above `epoch`.
    fn new_primary(&mut self, old: usize, epoch: u64) -> Option<Seen> {
        (1..=NODES).filter(|&n| n != old).find_map(|n| {
            let st = self.status(n)?;
            let e = st["epoch"].as_u64()?;
            (st["role"] == "primary" && e > epoch).then_some(Seen { node: n, epoch: e })
        })
    }

    /// Node `n`'s commit LSN, if the record there was first written in `epoch`: the
    /// node has committed in that epoch.
    fn commit_in_epoch(&mut self, n: usize, epoch: u64) -> Option<u64> {
        let lsn = self.status(n)?["commit_lsn"].as_u64()?;
        let c = self.client(n)?;
        match c.read(lsn, 1) {
            Ok((_, records)) => records
                .first()
                .is_some_and(|r| r.lsn == lsn && r.epoch == epoch)
                .then_some(lsn),
            Err(_) => {
                self.clients[n - 1] = None;
                None
            }
        }
    }
}

/// The primary's commit LSN and the stream's position in the front record there.
fn stream_position(nodes: &Nodes, watch: &mut Watch) -> Option<(u64, GtidState)> {
    let p = nodes.primary()?;
    let lsn = watch.status(p)?["commit_lsn"].as_u64()?;
    let (_, records) = watch.client(p)?.read(lsn, 1).ok()?;
    let r = records.first().filter(|r| r.lsn == lsn)?;
    Some((lsn, FrontRecord::decode(&r.payload).ok()?.position))
}

fn gtid_binlog_pos(c: &mut MyConn) -> Result<String, Error> {
    Ok(c.query("SELECT @@global.gtid_binlog_pos")
        .map_err(|e| format!("read the database's gtid_binlog_pos: {e}"))?
        .first(0)
        .unwrap_or_default())
}

/// Each row number in the table, with how often it is there.
fn table_counts(c: &mut MyConn) -> Result<BTreeMap<u64, usize>, Error> {
    let result = c
        .query("SELECT n FROM rows_")
        .map_err(|e| format!("read the clients' rows: {e}"))?;
    let mut counts = BTreeMap::new();
    for row in result.rows {
        let text = row
            .first()
            .and_then(|v| v.as_deref())
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let n: u64 = text
            .parse()
            .map_err(|_| format!("rows_.n is not a number: {text:?}"))?;
        *counts.entry(n).or_insert(0) += 1;
    }
    Ok(counts)
}

/// The marker of row `n`: its text column, which the binlog's row events (and so the
/// stream's records) hold byte for byte, so that a stream can be searched for a row
/// without decoding the events.
fn marker(n: u64) -> String {
    format!("row:{n};")
}

/// How often each row's marker is in the transactions of a stopped node's log, after
/// checking the log (sound, every checksum) and the transactions (GTIDs contiguous,
/// which the assembler checks: none missing, none twice).
fn stream_rows(log: &Path) -> Result<BTreeMap<u64, usize>, Error> {
    let report = lockstep::inspect::verify(log).map_err(|e| format!("verify the log: {e}"))?;
    if !report.sound {
        return Err(format!("the log is not sound: {:?}", report.problems).into());
    }
    let mut asm = Assembler::new();
    let mut counts = BTreeMap::new();
    let mut bad: Option<String> = None;
    lockstep::inspect::dump(log, None, u64::MAX, |r| {
        match asm.push(r.lsn, r.payload) {
            Ok(Some(Item::Transaction(t))) => count_markers(&t.events, &mut counts),
            Ok(_) => {}
            Err(e) => {
                bad.get_or_insert(e.to_string());
            }
        }
        Ok(())
    })
    .map_err(|e| format!("read the log: {e}"))?;
    match bad {
        Some(e) => Err(format!("the stream breaks the front's rules: {e}").into()),
        None => Ok(counts),
    }
}

/// Adds the row markers in `events` to `counts`.
fn count_markers(events: &[u8], counts: &mut BTreeMap<u64, usize>) {
    const PREFIX: &[u8] = b"row:";
    let mut at = 0;
    while let Some(i) = find(&events[at..], PREFIX) {
        let start = at + i + PREFIX.len();
        let Some(len) = find(&events[start..], b";") else {
            break;
        };
        if let Some(n) = std::str::from_utf8(&events[start..start + len])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            *counts.entry(n).or_insert(0) += 1;
        }
        at = start + len;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The clients: each inserts rows numbered from one shared counter (a number is never
/// used twice, and a row whose COMMIT failed is never retried), reconnecting after a
/// failure, and records when each COMMIT returned OK.
struct RowWriters {
    stop: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    acked: Arc<Mutex<BTreeMap<u64, Instant>>>,
    /// The newest acknowledgement, kept apart so that polling it is cheap.
    last: Arc<Mutex<Option<Instant>>>,
    threads: Vec<JoinHandle<()>>,
}

impl RowWriters {
    fn start(addr: &str, clients: usize) -> RowWriters {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(1));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let last = Arc::new(Mutex::new(None));
        let threads = (0..clients)
            .map(|i| {
                let w = Writer {
                    addr: addr.to_owned(),
                    stop: Arc::clone(&stop),
                    next: Arc::clone(&next),
                    acked: Arc::clone(&acked),
                    last: Arc::clone(&last),
                };
                std::thread::Builder::new()
                    .name(format!("failover-db-client-{i}"))
                    .spawn(move || w.run())
                    .expect("start a database client thread")
            })
            .collect();
        RowWriters {
            stop,
            next,
            acked,
            last,
            threads,
        }
    }

    fn last_ack(&self) -> Option<Instant> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The longest time without a COMMIT returning, from the last return before `from`
    /// (or `from`) to the first after `until`; `None` before there is one after `until`.
    fn longest_gap(&self, from: Instant, until: Instant) -> Option<Duration> {
        let mut times: Vec<Instant> = self
            .acked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .copied()
            .collect();
        times.sort_unstable();
        longest_gap(&times, from, until)
    }

    /// Stops the clients once their current COMMIT returned; returns the acknowledged
    /// rows with their times, and how many rows were tried.
    fn stop(mut self) -> (BTreeMap<u64, Instant>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let acked = std::mem::take(&mut *self.acked.lock().unwrap_or_else(|p| p.into_inner()));
        (acked, self.next.load(Ordering::SeqCst) - 1)
    }
}

impl Drop for RowWriters {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The longest time between consecutive `times` (sorted), from the last one before
/// `from` (or `from` itself) to the first one after `until`; `None` without one after
/// `until`.
fn longest_gap(times: &[Instant], from: Instant, until: Instant) -> Option<Duration> {
    let end = *times.iter().find(|&&t| t > until)?;
    let mut prev = times
        .iter()
        .rev()
        .find(|&&t| t < from)
        .copied()
        .unwrap_or(from);
    let mut longest = Duration::ZERO;
    for &t in times.iter().filter(|&&t| t <= end) {
        if t > prev {
            longest = longest.max(t - prev);
            prev = t;
        }
    }
    Some(longest)
}

/// One client thread of [`RowWriters`].
struct Writer {
    addr: String,
    stop: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    acked: Arc<Mutex<BTreeMap<u64, Instant>>>,
    last: Arc<Mutex<Option<Instant>>>,
}

impl Writer {
    fn run(self) {
        let mut conn: Option<MyConn> = None;
        while !self.stop.load(Ordering::SeqCst) {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => {
                    let mut login =
                        mariadb::login(&self.addr, mariadb::APP_USER).database(mariadb::APP_DB);
                    login.connect_timeout = Duration::from_millis(500);
                    login.io_timeout = Some(CLIENT_IO_TIMEOUT);
                    match MyConn::connect(&login) {
                        Ok(c) => conn.insert(c),
                        Err(_) => {
                            // The server is up for the whole run: a short pause bounds
                            // the retries of a client that cannot connect for a moment.
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    }
                }
            };
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            match c.run(&format!(
                "INSERT INTO rows_ (n, marker) VALUES ({n}, '{}')",
                marker(n)
            )) {
                Ok(()) => {
                    let at = Instant::now();
                    self.acked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(n, at);
                    let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                    *last = Some(last.map_or(at, |l| l.max(at)));
                }
                // The COMMIT's fate is unknown: the row is not counted as acknowledged,
                // and its number is never used again.
                Err(_) => conn = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_counted_wherever_they_are_in_the_events() {
        let mut counts = BTreeMap::new();
        let mut events = b"\x00\x01row:17;\xffrow:3;row:17;".to_vec();
        events.extend_from_slice(b"row:x;row:9");
        count_markers(&events, &mut counts);
        assert_eq!(counts, BTreeMap::from([(3, 1), (17, 2)]));
    }

    #[test]
    fn the_stall_is_the_longest_gap_around_the_failover() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // COMMITs every 10 ms, one straggler 1 ms after the kill at 105, none from 106
        // until 400, the new primary's first commit at 390.
        let mut times: Vec<Instant> = (0..=10).map(|i| at(10 * i)).collect();
        times.extend([at(106), at(400), at(405), at(410)]);
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis());
        assert_eq!(ms(longest_gap(&times, at(105), at(390))), Some(294));
        // A stall that begins before the request counts from the last COMMIT before it.
        assert_eq!(ms(longest_gap(&times, at(200), at(390))), Some(294));
        // Nothing after the new primary's first commit yet: no answer.
        assert_eq!(longest_gap(&times, at(105), at(420)), None);
        // No COMMIT before `from`: the gap counts from `from`.
        assert_eq!(ms(longest_gap(&times[12..], at(105), at(390))), Some(295));
    }
}
