//! `lockstep demo --mariadb`: an unmodified MariaDB primary made strongly synchronous
//! by a 3-node lockstep cluster, measured beside the same MariaDB without lockstep, and
//! checked.
//!
//! What one run does, in order:
//! 1. installs MariaDB's server package if it is missing (as root, with apt-get);
//! 2. starts MariaDB alone (binlog synced at every commit, no replica) as its own
//!    unprivileged account in a temporary directory on loopback, runs the workload
//!    (one client, then [`CLIENTS`] clients, each committing one INSERT at a time), and
//!    stops it;
//! 3. starts a MariaDB primary with lossless semi-sync and a 3-node lockstep cluster in
//!    this process whose stream has the front, so every COMMIT returns only once the
//!    primary's and both secondaries' logs hold the transaction durably, and runs the
//!    same workload;
//! 4. checks the primary never committed without the front's ACK
//!    (`Rpl_semi_sync_master_no_tx`), lets the stream catch up, stops the nodes, compares
//!    the stream's committed prefix on all three nodes record by record, and reads it
//!    back: every transaction the database committed is there, in GTID order, once.
//!
//! Resources: two MariaDB servers (one at a time), the nodes' threads, one thread per
//! client; data under `./target/demo-tmp` (or the system's temporary directory),
//! removed at the end unless kept.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::cluster::{LocalCluster, StreamSpec};
use super::install::{self, Package};
use super::mariadb::{self, MariaDb, Role};
use super::{
    DemoError, DemoOptions, Latency, Window, latency_histogram, markdown_table, record_latency,
};
use crate::front::connection::MyConn;
use crate::front::reader::{Assembler, Item};
use crate::replication::Mode;

/// Clients of the loaded series: each commits one INSERT at a time, as a database's
/// sessions do.
pub const CLIENTS: usize = 16;

/// The stream the front feeds.
const STREAM: &str = "db";

/// Measured seconds of each series by default, and with `quick`.
const SECONDS_DEFAULT: f64 = 5.0;
const SECONDS_QUICK: f64 = 0.5;

/// Bound on the front connecting, and on the stream catching up at the end.
const FRONT_WAIT: Duration = Duration::from_secs(30);

/// The workload's statement: a row of sysbench's `oltp_insert` shape.
const INSERT: &str = "INSERT INTO sbtest (k, c, pad) VALUES (?, ?, ?)";

/// One series of the report.
#[derive(Clone, Debug, Serialize)]
pub struct DbSeries {
    pub system: &'static str,
    pub clients: usize,
    #[serde(flatten)]
    pub latency: Latency,
    pub commits_per_s: f64,
}

/// The report of a run.
#[derive(Clone, Debug, Serialize)]
pub struct DbReport {
    pub mariadb: String,
    pub measure_s: f64,
    pub series: Vec<DbSeries>,
    /// Transactions the stream holds (the database's, all of them).
    pub transactions: u64,
    /// The GTID position of the database and of the stream's last record.
    pub position: String,
    pub identical_on_nodes: usize,
    pub commits_without_ack: u64,
    pub data_dir: PathBuf,
}

/// Runs the MariaDB demo; see the module docs.
pub fn run(opts: &DemoOptions, work: &Path, out: &mut dyn Write) -> Result<DbReport, DemoError> {
    let seconds = opts.seconds.unwrap_or(if opts.quick {
        SECONDS_QUICK
    } else {
        SECONDS_DEFAULT
    });
    let window = Window::new(Duration::from_secs_f64(seconds));
    let missing = install::ensure(
        &[Package {
            name: "mariadb-server",
            installed_if: || mariadb::available().is_ok(),
        }],
        true,
    );
    if let Some((_, why)) = missing.first() {
        return Err(DemoError::Unsupported(format!(
            "lockstep demo --mariadb needs MariaDB's server (Debian package mariadb-server): {why}"
        )));
    }
    // MariaDB runs as its own account: its directories are its own, beside the nodes'.
    let db_dir = work.join("mariadb");
    let unsupported = |e: String| DemoError::Database(format!("MariaDB: {e}"));
    let ports = crate::kit::free_ports(2).map_err(|source| DemoError::Io {
        op: "find free ports on",
        path: PathBuf::from("127.0.0.1"),
        source,
    })?;

    // The database alone.
    let mut alone =
        MariaDb::create(&db_dir, "alone", ports[0], 1, Role::Alone, &[]).map_err(unsupported)?;
    let version = alone.version.clone();
    write_line(
        out,
        &format!(
            "lockstep demo --mariadb: {version}\ndata in {}\neach series: {} s warm-up, then \
             {} s measured; a commit is one INSERT of sysbench's oltp_insert shape\n",
            work.display(),
            window.warm_up.as_secs_f64(),
            window.measure.as_secs_f64()
        ),
    )?;
    prepare_table(&alone).map_err(unsupported)?;
    let mut series = Vec::new();
    warm_up(&alone.addr(), window)?;
    for clients in [1, CLIENTS] {
        write_line(
            out,
            &format!("MariaDB alone, {} ...", clients_label(clients)),
        )?;
        series.push(measure("MariaDB alone", &alone.addr(), clients, window)?);
    }
    alone.stop();

    // The database with lockstep.
    let primary = MariaDb::create(&db_dir, "primary", ports[1], 1, Role::Primary, &[])
        .map_err(unsupported)?;
    let password = work.join("front.password");
    std::fs::write(&password, mariadb::FRONT_PASSWORD).map_err(|source| DemoError::Io {
        op: "write",
        path: password.clone(),
        source,
    })?;
    std::fs::set_permissions(
        &password,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .map_err(|source| DemoError::Io {
        op: "chmod",
        path: password.clone(),
        source,
    })?;
    let spec = StreamSpec::new(STREAM, Mode::Strong).with_toml(&format!(
        "front = {{ kind = \"mariadb\", primary = \"{}\", user = \"{}\", password_file = \"{}\" }}\n",
        primary.addr(),
        mariadb::FRONT_USER,
        password.display()
    ));
    let nodes_dir = work.join("lockstep");
    std::fs::create_dir_all(&nodes_dir).map_err(|source| DemoError::Io {
        op: "create",
        path: nodes_dir.clone(),
        source,
    })?;
    let cluster = LocalCluster::start(&nodes_dir, 3, &[spec], Some(16 << 20))?;
    cluster.wait_connected(FRONT_WAIT)?;
    wait_semi_sync(&primary).map_err(unsupported)?;
    prepare_table(&primary).map_err(unsupported)?;
    let no_tx_before = semi_sync_no_tx(&primary).map_err(unsupported)?;
    warm_up(&primary.addr(), window)?;
    for clients in [1, CLIENTS] {
        write_line(
            out,
            &format!("MariaDB + lockstep strong, {} ...", clients_label(clients)),
        )?;
        series.push(measure(
            "MariaDB + lockstep strong (2 secondaries)",
            &primary.addr(),
            clients,
            window,
        )?);
    }
    let no_tx = semi_sync_no_tx(&primary).map_err(unsupported)? - no_tx_before;

    // Everything the database committed is in the stream, on every node.
    let position = primary
        .connect()
        .and_then(|mut c| {
            c.query("SELECT @@global.gtid_binlog_pos")
                .map_err(|e| e.to_string())
        })
        .map_err(unsupported)?
        .first(0)
        .unwrap_or_default();
    let commit_lsn = wait_for_position(&cluster, &position)?;
    let stopped = cluster.shutdown();
    stopped
        .check_identical_prefix(STREAM, commit_lsn)
        .map_err(|source| DemoError::Diverged {
            source,
            kept: work.to_path_buf(),
        })?;
    let mut asm = Assembler::new();
    let mut transactions = 0;
    let mut last = String::new();
    stopped.for_each_record(STREAM, 1, commit_lsn, |lsn, payload| {
        match asm.push(lsn, payload) {
            Ok(Some(Item::Transaction(t))) => {
                transactions += 1;
                last = t.position.to_string();
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })?;
    if last != position {
        return Err(DemoError::Database(format!(
            "the stream ends at GTID {last}, the database at {position}"
        )));
    }
    drop(primary);
    let report = DbReport {
        mariadb: version,
        measure_s: window.measure.as_secs_f64(),
        series,
        transactions,
        position,
        identical_on_nodes: 3,
        commits_without_ack: no_tx,
        data_dir: work.to_path_buf(),
    };
    write_line(out, &report.text())?;
    Ok(report)
}

impl DbReport {
    pub fn text(&self) -> String {
        let mut rows = vec![vec![
            "series".to_owned(),
            "p50 µs".to_owned(),
            "p99 µs".to_owned(),
            "p99.9 µs".to_owned(),
            "commits/s".to_owned(),
            "commits/s ÷ alone".to_owned(),
        ]];
        for s in &self.series {
            let alone = self
                .series
                .iter()
                .find(|a| a.system == "MariaDB alone" && a.clients == s.clients)
                .map_or(0.0, |a| a.commits_per_s);
            rows.push(vec![
                format!("{}, {}", s.system, clients_label(s.clients)),
                format!("{:.0}", s.latency.p50_us),
                format!("{:.0}", s.latency.p99_us),
                format!("{:.0}", s.latency.p999_us),
                format!("{:.0}", s.commits_per_s),
                if alone > 0.0 {
                    format!("{:.2}", s.commits_per_s / alone)
                } else {
                    "—".to_owned()
                },
            ]);
        }
        let mut text = String::from("\n");
        text += &markdown_table(&rows);
        let _ = writeln!(
            text,
            "\nevery committed transaction is in the stream on {} nodes: {} transactions up to \
             GTID {}, committed prefixes identical; commits without lockstep's ACK: {}",
            self.identical_on_nodes, self.transactions, self.position, self.commits_without_ack
        );
        text
    }
}

fn clients_label(clients: usize) -> String {
    if clients == 1 {
        "1 client".to_owned()
    } else {
        format!("{clients} clients")
    }
}

/// A first, unrecorded load: a freshly started server settles (its table's first
/// pages, its background threads) before anything is measured.
fn warm_up(addr: &str, window: Window) -> Result<(), DemoError> {
    measure("warm-up", addr, CLIENTS, Window::new(window.measure / 2)).map(drop)
}

fn write_line(out: &mut dyn Write, text: &str) -> Result<(), DemoError> {
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|source| DemoError::Io {
            op: "write to",
            path: PathBuf::from("stdout"),
            source,
        })
}

fn prepare_table(db: &MariaDb) -> Result<(), String> {
    let mut c = db.connect()?;
    c.run(
        "CREATE TABLE IF NOT EXISTS sbtest (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         k INT NOT NULL DEFAULT 0, c CHAR(120) NOT NULL DEFAULT '', \
         pad CHAR(60) NOT NULL DEFAULT '', KEY k_1 (k)) ENGINE=InnoDB",
    )
    .map_err(|e| e.to_string())
}

fn semi_sync_no_tx(db: &MariaDb) -> Result<u64, String> {
    let rows = db
        .connect()?
        .show("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_no_tx'")
        .map_err(|e| e.to_string())?;
    rows.first()
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| "no Rpl_semi_sync_master_no_tx".to_owned())
}

/// Waits until the front is MariaDB's semi-sync replica.
fn wait_semi_sync(db: &MariaDb) -> Result<(), String> {
    let deadline = Instant::now() + FRONT_WAIT;
    loop {
        let clients = db
            .connect()?
            .show("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'")
            .map_err(|e| e.to_string())?;
        if clients.first().is_some_and(|(_, v)| v == "1") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the front did not connect within {FRONT_WAIT:?} (see the lines above)"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the stream's last committed record is at `position`; returns the
/// stream's commit LSN.
fn wait_for_position(cluster: &LocalCluster, position: &str) -> Result<u64, DemoError> {
    let deadline = Instant::now() + FRONT_WAIT;
    let mut client = crate::client::Client::connect(
        &cluster.addrs()[..1],
        STREAM,
        crate::client::ClientOptions::default(),
    )
    .map_err(|source| DemoError::Append {
        stream: STREAM.to_owned(),
        outstanding: 0,
        source: Box::new(source),
        nodes: cluster.describe(STREAM),
    })?;
    loop {
        let commit = client
            .status()
            .ok()
            .and_then(|s| s["commit_lsn"].as_u64())
            .unwrap_or(0);
        let at = client
            .read(commit, 1)
            .ok()
            .and_then(|(_, r)| r.into_iter().next())
            .and_then(|r| crate::front::record::FrontRecord::decode(&r.payload).ok())
            .map(|r| r.position.to_string());
        if at.as_deref() == Some(position) {
            cluster.wait_replicated(STREAM, commit, FRONT_WAIT)?;
            return Ok(commit);
        }
        if Instant::now() >= deadline {
            return Err(DemoError::Database(format!(
                "the stream did not reach the database's GTID {position} within {FRONT_WAIT:?}; \
                 it is at {}",
                at.unwrap_or_else(|| "nothing".to_owned())
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `clients` sessions committing INSERTs for the window; commits answered inside the
/// measured part count.
fn measure(
    system: &'static str,
    addr: &str,
    clients: usize,
    window: Window,
) -> Result<DbSeries, DemoError> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (stop, start) = (stop.clone(), start.clone());
            let addr = addr.to_owned();
            std::thread::spawn(move || client(&addr, i, &start, &stop, window))
        })
        .collect();
    start.wait();
    std::thread::sleep(window.total());
    stop.store(true, Ordering::SeqCst);
    let mut all = latency_histogram();
    for t in threads {
        let h = t
            .join()
            .expect("a demo client does not panic")
            .map_err(|e| DemoError::Database(format!("{system}: {e}")))?;
        all.add(&h).expect("same histogram bounds");
    }
    Ok(DbSeries {
        system,
        clients,
        latency: Latency::of(&all),
        commits_per_s: all.len() as f64 / window.measure.as_secs_f64(),
    })
}

fn client(
    addr: &str,
    index: usize,
    start: &Barrier,
    stop: &AtomicBool,
    window: Window,
) -> Result<Histogram<u64>, String> {
    let prepared =
        MyConn::connect(&mariadb::login(addr, mariadb::APP_USER).database(mariadb::APP_DB))
            .map_err(|e| e.to_string())
            .and_then(|mut c| {
                let (stmt, _) = c.prepare(INSERT).map_err(|e| e.to_string())?;
                Ok((c, stmt))
            });
    start.wait();
    let (mut conn, stmt) = prepared?;
    let began = Instant::now();
    let measured = began + window.warm_up..began + window.total();
    let mut h = latency_histogram();
    let c = "x".repeat(119);
    let pad = "y".repeat(59);
    let mut k = index as i64;
    while !stop.load(Ordering::SeqCst) {
        let t0 = Instant::now();
        conn.execute(
            stmt,
            &[
                mysql_common::value::Value::Int(k),
                mysql_common::value::Value::from(c.as_str()),
                mysql_common::value::Value::from(pad.as_str()),
            ],
        )
        .map_err(|e| e.to_string())?;
        let done = Instant::now();
        if measured.contains(&done) {
            record_latency(&mut h, done - t0);
        }
        k += CLIENTS as i64;
    }
    Ok(h)
}
