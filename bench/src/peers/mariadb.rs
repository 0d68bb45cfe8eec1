//! MariaDB: a primary with lossless semi-synchronous replication to one replica on
//! loopback, started from the distribution's binaries in the benchmark's directory
//! through [`lockstep::demo::mariadb`] (which `lockstep-bench mariadb` and the tests
//! use too), and driven through the front's client connection,
//! [`lockstep::front::connection::MyConn`].
//!
//! Durability, as MariaDB users configure it for no loss on failover: the binary log is
//! synced on every commit (`sync_binlog = 1`), so is InnoDB's redo log
//! (`innodb_flush_log_at_trx_commit = 1`), and the primary waits for the replica's ack
//! *after* syncing the binlog and before the commit returns
//! (`rpl_semi_sync_master_wait_point = AFTER_SYNC`) with a timeout of 49 days, so it
//! never falls back to asynchronous replication silently during a run. Everything else
//! is the default configuration, apart from `max_connections` (room for 256 clients):
//! the demo's primary also sets ROW binlogs and strict GTIDs, and its replica keeps a
//! binlog of its own; this peer undoes those (MariaDB's default MIXED format, a replica
//! without a binlog), as the comparison was first measured.
//!
//! Two series: by default the replica acks an event once it is written to its relay
//! log, before any fsync (`sync_relay_log = 10000`), which is what lockstep's `semi`
//! mode does; with `sync_relay_log = 1` (set on the replica before the series) it
//! syncs the relay log before it acks, so an ack means the commit is on the replica's
//! disk, as a strong lockstep ack does. MariaDB syncs the relay log per event, and a
//! transaction is several events.
//!
//! A commit is one autocommitted INSERT of the payload into an InnoDB table with an
//! auto-increment key, through a prepared statement.
//!
//! Setup order: the demo's primary has semi-sync on from its start and waits for a
//! replica even when none is connected, so the replica is attached (CHANGE MASTER TO
//! … MASTER_USE_GTID = slave_pos; its I/O thread asks for semi-sync as it connects)
//! before anything is written; then the table is created on the primary and
//! replicated.
//!
//! Checks: before and after every series the primary must report
//! `Rpl_semi_sync_master_status = ON` with a replica connected and the settings above;
//! commits the primary made without the replica's ack (`Rpl_semi_sync_master_no_tx`)
//! must not grow during a series, and acked ones (`_yes_tx`) must grow by at least the
//! commits the clients counted.

use std::path::Path;
use std::time::{Duration, Instant};

use lockstep::demo::mariadb::{self as demo, MariaDb as Server, Role};
use lockstep::front::connection::{Login, MyConn};
use mysql_common::value::Value;

use crate::Error;
use crate::pool::Conn;

pub use lockstep::demo::mariadb::MARIADBD;

/// Bound on any one reply of the server to a benchmark client: a commit waits for the
/// replica's ack, which at 256 outstanding commits and the replica's fsync takes a
/// third of a second; a minute means the server is stuck.
const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the replica may take to connect as a semi-synchronous replica.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

/// The replica's `sync_relay_log` unless set to 1: MariaDB's default.
const SYNC_RELAY_LOG_DEFAULT: &str = "10000";

const TABLE: &str = "CREATE TABLE IF NOT EXISTS t (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
                     v LONGBLOB NOT NULL) ENGINE=InnoDB";
const INSERT: &str = "INSERT INTO t (v) VALUES (?)";

pub struct MariaDb {
    // The replica first: it stops before its primary when the run ends.
    replica: Server,
    primary: Server,
    pub version: String,
    /// `Rpl_semi_sync_master_yes_tx` and `_no_tx` at the last check.
    acked: (u64, u64),
}

impl MariaDb {
    /// Creates and starts the primary and the replica under `dir`.
    pub fn start(dir: &Path) -> Result<MariaDb, Error> {
        let [pport, rport] = lockstep::kit::free_ports(2)?[..] else {
            unreachable!("free_ports returns as many ports as asked for")
        };
        // MariaDB's default binlog format; the demo's ROW is what the front needs.
        let primary = Server::create(
            dir,
            "primary",
            pport,
            1,
            Role::Primary,
            &["--binlog-format=MIXED".into()],
        )?;
        // The first measurement's replica had no binlog of its own.
        let replica = Server::create(
            dir,
            "replica",
            rport,
            2,
            Role::Replica,
            &["--skip-log-slave-updates".into(), "--skip-log-bin".into()],
        )?;
        let version = replica.version.clone();
        attach_replica(&primary, &replica, ATTACH_TIMEOUT)?;
        let mut p = primary.connect()?;
        p.run(TABLE)?;
        let mut db = MariaDb {
            replica,
            primary,
            version,
            acked: (0, 0),
        };
        let (_, acked) = check(&db.primary, &db.replica, None)?;
        db.acked = acked;
        Ok(db)
    }

    /// `n` client connections, each with the INSERT prepared.
    pub fn connect(&self, n: usize) -> Result<Vec<MyCommit>, Error> {
        let mut login = app_login(&self.primary);
        login.io_timeout = Some(CLIENT_IO_TIMEOUT);
        (0..n)
            .map(|_| {
                let mut c = MyConn::connect(&login)?;
                let (id, params) = c.prepare(INSERT)?;
                if params != 1 {
                    return Err(format!("MariaDB prepare {INSERT:?}: {params} parameters").into());
                }
                Ok(MyCommit(c, id))
            })
            .collect()
    }

    /// Sets the replica's `sync_relay_log`: 1 (fsync before the ack) or the default.
    pub fn set_replica_sync(&mut self, on: bool) -> Result<(), Error> {
        let value = if on { "1" } else { SYNC_RELAY_LOG_DEFAULT };
        self.replica
            .connect()?
            .run(&format!("SET GLOBAL sync_relay_log = {value}"))?;
        Ok(())
    }

    /// Whether semi-sync is in force, with the replica's `sync_relay_log` at 1 if
    /// `replica_sync`; `commits` is what the clients counted since the last call (none
    /// for a check before a series).
    pub fn verify(&mut self, replica_sync: bool, commits: u64) -> Result<String, Error> {
        self.primary.check_alive()?;
        self.replica.check_alive()?;
        let want = if replica_sync {
            "1"
        } else {
            SYNC_RELAY_LOG_DEFAULT
        };
        let (description, (yes, no)) = check(&self.primary, &self.replica, Some(want))?;
        let (yes0, no0) = std::mem::replace(&mut self.acked, (yes, no));
        if no != no0 {
            return Err(format!(
                "MariaDB: {} commits returned without the replica's ack",
                no - no0
            )
            .into());
        }
        if yes - yes0 < commits {
            return Err(format!(
                "MariaDB: the replica acked {} commits, the clients counted {commits}",
                yes - yes0
            )
            .into());
        }
        Ok(format!(
            "{description}; {} commits acked, none without",
            yes - yes0
        ))
    }
}

/// One client connection; a commit is one autocommitted INSERT.
pub struct MyCommit(MyConn, u32);

impl Conn for MyCommit {
    fn commit(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.0.execute(self.1, &[Value::Bytes(payload.to_vec())])?;
        Ok(())
    }
}

/// Attaches `replica` to `primary` as a semi-synchronous replica from the primary's
/// first GTID, and waits until the primary counts it (`Rpl_semi_sync_master_clients`)
/// and the replica says it acks.
pub fn attach_replica(primary: &Server, replica: &Server, timeout: Duration) -> Result<(), Error> {
    let mut r = replica.connect()?;
    r.run(&format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='{}', \
         MASTER_PASSWORD='{}', MASTER_USE_GTID=slave_pos",
        primary.port,
        demo::FRONT_USER,
        demo::FRONT_PASSWORD
    ))?;
    r.run("START SLAVE")?;
    let deadline = Instant::now() + timeout;
    loop {
        let mut p = primary.connect()?;
        let state = PrimaryState::read(&mut p)?;
        let acking = r
            .show("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_slave_status'")?
            .first()
            .is_some_and(|(_, v)| v == "ON");
        if state.semi_sync_on && state.clients >= 1 && acking {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let slave = r.query("SHOW SLAVE STATUS")?;
            let error = slave
                .columns
                .iter()
                .position(|c| c == "Last_IO_Error")
                .and_then(|i| slave.first(i))
                .unwrap_or_default();
            return Err(format!(
                "MariaDB {} did not become a semi-synchronous replica of {} within \
                 {timeout:?} (replica acking: {acking}, the primary's semi-sync clients: {}; \
                 the replica's last I/O error: {error:?})",
                replica.name, primary.name, state.clients
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a MariaDB primary reports: its durability settings, whether semi-sync is in
/// force, and its semi-sync counters.
#[derive(Clone, Debug, Default)]
pub struct PrimaryState {
    /// `Rpl_semi_sync_master_status`.
    pub semi_sync_on: bool,
    /// Semi-synchronous replicas connected.
    pub clients: u64,
    /// Commits acknowledged by a replica, and commits made without one.
    pub yes_tx: u64,
    pub no_tx: u64,
    /// Waits of committing transactions for an ack, and their total time in µs.
    pub tx_waits: u64,
    pub tx_wait_time_us: u64,
    /// The settings read, by name.
    settings: Vec<(String, String)>,
}

/// A durable MariaDB: the binlog on and synced, and InnoDB flushed, at every commit.
const DURABLE: [(&str, &str); 3] = [
    ("sync_binlog", "1"),
    ("innodb_flush_log_at_trx_commit", "1"),
    ("log_bin", "ON"),
];

/// A lossless semi-sync primary, besides [`DURABLE`].
const LOSSLESS: [(&str, &str); 2] = [
    ("rpl_semi_sync_master_enabled", "ON"),
    ("rpl_semi_sync_master_wait_point", "AFTER_SYNC"),
];

impl PrimaryState {
    pub fn read(c: &mut MyConn) -> Result<PrimaryState, Error> {
        let status = c.show("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%'")?;
        let settings = c.show(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('rpl_semi_sync_master_enabled', \
             'rpl_semi_sync_master_wait_point', 'rpl_semi_sync_master_timeout', \
             'sync_binlog', 'innodb_flush_log_at_trx_commit', 'log_bin')",
        )?;
        let count = |k: &str| get(&status, k).parse::<u64>().unwrap_or(0);
        Ok(PrimaryState {
            semi_sync_on: get(&status, "Rpl_semi_sync_master_status") == "ON",
            clients: count("Rpl_semi_sync_master_clients"),
            yes_tx: count("Rpl_semi_sync_master_yes_tx"),
            no_tx: count("Rpl_semi_sync_master_no_tx"),
            tx_waits: count("Rpl_semi_sync_master_tx_waits"),
            tx_wait_time_us: count("Rpl_semi_sync_master_tx_wait_time"),
            settings,
        })
    }

    /// An error unless the server is durable (see [`DURABLE`]); else what is in force.
    pub fn require_durable(&self, name: &str) -> Result<String, Error> {
        for (k, v) in DURABLE {
            let got = get(&self.settings, k);
            if got != v {
                return Err(format!("MariaDB {name}: {k} = {got:?}, not {v}").into());
            }
        }
        Ok("sync_binlog = 1; innodb_flush_log_at_trx_commit = 1; log_bin = ON".into())
    }

    /// An error unless the primary is durable and semi-synchronous (AFTER_SYNC) with at
    /// least one replica connected; else a description of what is in force.
    pub fn require_lossless(&self, name: &str) -> Result<String, Error> {
        let durable = self.require_durable(name)?;
        for (k, v) in LOSSLESS {
            let got = get(&self.settings, k);
            if got != v {
                return Err(format!("MariaDB {name}: {k} = {got:?}, not {v}").into());
            }
        }
        if !self.semi_sync_on {
            return Err(format!("MariaDB {name}: Rpl_semi_sync_master_status is OFF").into());
        }
        if self.clients < 1 {
            return Err(format!("MariaDB {name}: no semi-synchronous replica connected").into());
        }
        Ok(format!(
            "Rpl_semi_sync_master_status = ON with {} replica, wait point AFTER_SYNC, \
             timeout {} ms; {durable}",
            self.clients,
            get(&self.settings, "rpl_semi_sync_master_timeout")
        ))
    }
}

/// The value of `name` among SHOW's (name, value) pairs; empty if absent.
fn get(pairs: &[(String, String)], name: &str) -> String {
    pairs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// The primary's semi-sync state and settings and the replica's: a description and
/// the primary's (yes_tx, no_tx) counters, or why durability is not in force.
fn check(
    primary: &Server,
    replica: &Server,
    sync_relay_log: Option<&str>,
) -> Result<(String, (u64, u64)), Error> {
    let state = PrimaryState::read(&mut primary.connect()?)?;
    let description = state.require_lossless("primary")?;
    let mut r = replica.connect()?;
    let relay = r
        .show("SHOW GLOBAL VARIABLES LIKE 'sync_relay_log'")?
        .into_iter()
        .next()
        .map(|(_, v)| v)
        .unwrap_or_default();
    if let Some(want) = sync_relay_log
        && want != relay
    {
        return Err(format!("MariaDB replica: sync_relay_log = {relay:?}, not {want}").into());
    }
    let acking = r
        .show("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_slave_status'")?
        .into_iter()
        .next()
        .map(|(_, v)| v)
        .unwrap_or_default();
    if acking != "ON" {
        return Err(format!("MariaDB replica: Rpl_semi_sync_slave_status = {acking:?}").into());
    }
    Ok((
        format!("{description}; replica sync_relay_log = {relay}"),
        (state.yes_tx, state.no_tx),
    ))
}

/// A login to `server` as the clients' account, for connections of a benchmark.
pub fn app_login(server: &Server) -> Login {
    demo::login(&server.addr(), demo::APP_USER).database(demo::APP_DB)
}
