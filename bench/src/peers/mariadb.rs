//! MariaDB: a primary with lossless semi-synchronous replication to one replica on
//! loopback, started from the distribution's binaries in the benchmark's directory.
//!
//! Durability, as MariaDB users configure it for no loss on failover: the binary log is
//! synced on every commit (`sync_binlog = 1`), so is InnoDB's redo log
//! (`innodb_flush_log_at_trx_commit = 1`), and the primary waits for the replica's ack
//! *after* syncing the binlog and before the commit returns
//! (`rpl_semi_sync_master_wait_point = AFTER_SYNC`) with a timeout of 49 days, so it
//! never falls back to asynchronous replication silently during a run. Everything else
//! is the default configuration, apart from `max_connections` (room for 256 clients).
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
//! Setup order: semi-sync on a primary with no replica would block every statement, so
//! the primary starts with it off; the replica connects and catches up; then the
//! primary turns it on and the replica reconnects its I/O thread, now semi-synchronous.
//!
//! Checks: before and after every series the primary must report
//! `Rpl_semi_sync_master_status = ON` with a replica connected and the settings above;
//! commits the primary made without the replica's ack (`Rpl_semi_sync_master_no_tx`)
//! must not grow during a series, and acked ones (`_yes_tx`) must grow by at least the
//! commits the clients counted.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::Error;
use crate::peers::mysql_wire::MyConn;
use crate::peers::process::{self, ServerProcess};
use crate::pool::Conn;

pub const MARIADBD: &str = "/usr/sbin/mariadbd";
const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";

/// The benchmark's account (no password, loopback only) and database.
const USER: &str = "bench";
const DB: &str = "bench";

/// `rpl_semi_sync_master_timeout`: its largest value, in ms (49 days).
const SEMI_SYNC_TIMEOUT_MS: u64 = 4_294_967_295;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The replica's `sync_relay_log` unless set to 1: MariaDB's default.
const SYNC_RELAY_LOG_DEFAULT: &str = "10000";

const INSERT: &str = "INSERT INTO t (v) VALUES (?)";

pub struct MariaDb {
    replica: ServerProcess,
    primary: ServerProcess,
    primary_addr: String,
    replica_addr: String,
    pub version: String,
    /// `Rpl_semi_sync_master_yes_tx` and `_no_tx` at the last check.
    acked: (u64, u64),
}

impl MariaDb {
    /// Creates and starts the primary and the replica under `dir`.
    pub fn start(dir: &Path) -> Result<MariaDb, Error> {
        if !Path::new(MARIADBD).exists() {
            return Err(format!("no {MARIADBD}").into());
        }
        let account = process::server_account("mysql")?;
        process::own_dir(account.as_ref(), dir)?;
        let version = process::version_of(Command::new(MARIADBD).arg("--version"))?;
        let (pport, rport) = (process::free_port()?, process::free_port()?);
        // Created before the server starts, so the setup is not in the binary log and
        // each server makes its own account.
        let init = dir.join("init.sql");
        std::fs::write(
            &init,
            format!(
                "SET sql_log_bin = 0;\n\
                 CREATE USER IF NOT EXISTS {USER}@'127.0.0.1';\n\
                 GRANT ALL PRIVILEGES ON *.* TO {USER}@'127.0.0.1';\n\
                 CREATE DATABASE IF NOT EXISTS {DB};\n\
                 CREATE TABLE IF NOT EXISTS {DB}.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
                 v LONGBLOB NOT NULL) ENGINE=InnoDB;\n"
            ),
        )
        .map_err(|e| format!("write {}: {e}", init.display()))?;
        let start = |name: &str, port: u16, id: u32, extra: &[String]| {
            let data = dir.join(name);
            let mut install = Command::new(INSTALL_DB);
            install
                .args([
                    "--no-defaults",
                    "--skip-test-db",
                    "--auth-root-authentication-method=normal",
                ])
                .arg(format!("--datadir={}", data.display()));
            process::run_as(
                &format!("MariaDB install-db ({name})"),
                install,
                account.as_ref(),
                &dir.join(format!("{name}-install.log")),
            )?;
            let mut cmd = Command::new(MARIADBD);
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!(
                    "--socket={}",
                    dir.join(format!("{name}.sock")).display()
                ))
                .arg(format!(
                    "--pid-file={}",
                    dir.join(format!("{name}.pid")).display()
                ))
                .arg(format!("--init-file={}", init.display()))
                .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
                .arg(format!("--port={port}"))
                .arg(format!("--server-id={id}"))
                .args([
                    "--max-connections=600",
                    "--innodb-flush-log-at-trx-commit=1",
                ])
                .args(extra);
            ServerProcess::spawn(
                &format!("MariaDB {name}"),
                cmd,
                account.as_ref(),
                &dir.join(format!("{name}.log")),
                "TERM",
            )
        };
        let mut primary = start(
            "primary",
            pport,
            1,
            &[
                format!("--log-bin={}", dir.join("primary/binlog").display()),
                "--sync-binlog=1".into(),
                "--rpl-semi-sync-master-wait-point=AFTER_SYNC".into(),
                format!("--rpl-semi-sync-master-timeout={SEMI_SYNC_TIMEOUT_MS}"),
            ],
        )?;
        let primary_addr = format!("127.0.0.1:{pport}");
        primary.wait_until("accepting connections", START_TIMEOUT, || {
            Ok(MyConn::connect(&primary_addr, USER, DB).is_ok())
        })?;
        let mut replica = start(
            "replica",
            rport,
            2,
            &[
                format!("--relay-log={}", dir.join("replica/relay").display()),
                "--rpl-semi-sync-slave-enabled=ON".into(),
            ],
        )?;
        let replica_addr = format!("127.0.0.1:{rport}");
        replica.wait_until("accepting connections", START_TIMEOUT, || {
            Ok(MyConn::connect(&replica_addr, USER, DB).is_ok())
        })?;
        let mut r = MyConn::connect(&replica_addr, USER, DB)?;
        r.query(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={pport}, \
             MASTER_USER='{USER}', MASTER_USE_GTID=slave_pos"
        ))?;
        r.query("START SLAVE")?;
        let mut p = MyConn::connect(&primary_addr, USER, DB)?;
        p.query("SET GLOBAL rpl_semi_sync_master_enabled = ON")?;
        // The replica asks for semi-sync when its I/O thread connects.
        r.query("STOP SLAVE IO_THREAD")?;
        r.query("START SLAVE IO_THREAD")?;
        let mut db = MariaDb {
            replica,
            primary,
            primary_addr,
            replica_addr,
            version,
            acked: (0, 0),
        };
        let addr = db.primary_addr.clone();
        let db_replica = db.replica_addr.clone();
        db.primary
            .wait_until("semi-synchronous with the replica", START_TIMEOUT, || {
                Ok(check(&addr, &db_replica, None).is_ok())
            })?;
        db.replica.check_alive()?;
        let (_, acked) = check(&db.primary_addr, &db.replica_addr, None)?;
        db.acked = acked;
        Ok(db)
    }

    /// `n` client connections, each with the INSERT prepared.
    pub fn connect(&self, n: usize) -> Result<Vec<MyCommit>, Error> {
        (0..n)
            .map(|_| {
                let mut c = MyConn::connect(&self.primary_addr, USER, DB)?;
                let id = c.prepare(INSERT)?;
                Ok(MyCommit(c, id))
            })
            .collect()
    }

    /// Sets the replica's `sync_relay_log`: 1 (fsync before the ack) or the default.
    pub fn set_replica_sync(&mut self, on: bool) -> Result<(), Error> {
        let value = if on { "1" } else { SYNC_RELAY_LOG_DEFAULT };
        MyConn::connect(&self.replica_addr, USER, DB)?
            .query(&format!("SET GLOBAL sync_relay_log = {value}"))?;
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
        let (description, (yes, no)) = check(&self.primary_addr, &self.replica_addr, Some(want))?;
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
        self.0.execute(self.1, payload)
    }
}

/// The primary's semi-sync state and settings and the replica's: a description and
/// the primary's (yes_tx, no_tx) counters, or why durability is not in force.
fn check(
    primary: &str,
    replica: &str,
    sync_relay_log: Option<&str>,
) -> Result<(String, (u64, u64)), Error> {
    let mut p = MyConn::connect(primary, USER, DB)?;
    let mut status = p.show("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%'")?;
    status.extend(p.show("SHOW GLOBAL VARIABLES")?);
    let mut r = MyConn::connect(replica, USER, DB)?;
    let replica_vars = r.show("SHOW GLOBAL VARIABLES LIKE 'sync_relay_log'")?;
    let replica_status = r.show("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_slave_status'")?;
    let get = |set: &[(String, String)], k: &str| {
        set.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let want = [
        ("Rpl_semi_sync_master_status", "ON"),
        ("rpl_semi_sync_master_enabled", "ON"),
        ("rpl_semi_sync_master_wait_point", "AFTER_SYNC"),
        ("sync_binlog", "1"),
        ("innodb_flush_log_at_trx_commit", "1"),
        ("log_bin", "ON"),
    ];
    for (k, v) in want {
        let got = get(&status, k);
        if got != v {
            return Err(format!("MariaDB primary: {k} = {got:?}, not {v}").into());
        }
    }
    let clients: u64 = get(&status, "Rpl_semi_sync_master_clients")
        .parse()
        .unwrap_or(0);
    if clients < 1 {
        return Err("MariaDB primary: no semi-synchronous replica connected".into());
    }
    let relay = get(&replica_vars, "sync_relay_log");
    if sync_relay_log.is_some_and(|v| v != relay) {
        return Err(format!(
            "MariaDB replica: sync_relay_log = {relay:?}, not {}",
            sync_relay_log.unwrap_or_default()
        )
        .into());
    }
    let acking = get(&replica_status, "Rpl_semi_sync_slave_status");
    if acking != "ON" {
        return Err(format!("MariaDB replica: Rpl_semi_sync_slave_status = {acking:?}").into());
    }
    let count = |k: &str| get(&status, k).parse::<u64>().unwrap_or(0);
    Ok((
        format!(
            "Rpl_semi_sync_master_status = ON with {clients} replica, wait point AFTER_SYNC, \
             timeout {} ms; sync_binlog = 1; innodb_flush_log_at_trx_commit = 1; replica \
             sync_relay_log = {relay}",
            get(&status, "rpl_semi_sync_master_timeout")
        ),
        (
            count("Rpl_semi_sync_master_yes_tx"),
            count("Rpl_semi_sync_master_no_tx"),
        ),
    ))
}
