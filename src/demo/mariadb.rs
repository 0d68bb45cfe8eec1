//! MariaDB servers for the demo, the benchmarks and the tests: created with the
//! distribution's binaries in a directory of their own, on loopback, as the `mysql`
//! account when this process runs as root.
//!
//! A [`Role::Primary`] has the settings the front demands (see `front::settings`):
//! binlog in ROW format synced at every commit, InnoDB flushed at every commit, strict
//! GTIDs, CRC32 checksums, and lossless semi-sync (AFTER_SYNC, waiting without a
//! replica, a timeout of 49 days). A [`Role::Replica`] keeps a binlog and strict GTIDs
//! too, read-only, so that it can be promoted. A [`Role::Alone`] has the primary's
//! durability without semi-sync: the database as it runs without lockstep.
//!
//! Accounts (made at every start by an init file that is not binlogged): `app`, for
//! clients, with every privilege and no password; `lockstep`, for the front, with the
//! replication privileges and the password [`FRONT_PASSWORD`]. Database: `app`.
//!
//! Clean-up: a [`MariaDb`] stops its server when dropped (see `demo::process`); its
//! directory is the caller's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{self, Account, Error, ServerProcess};
use crate::front::connection::{Login, MyConn};

pub const MARIADBD: &str = "/usr/sbin/mariadbd";
const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";

/// The clients' account and database.
pub const APP_USER: &str = "app";
pub const APP_DB: &str = "app";
/// The front's account and its password.
pub const FRONT_USER: &str = "lockstep";
pub const FRONT_PASSWORD: &str = "lockstep-front";

/// `rpl_semi_sync_master_timeout`: its largest value, in ms (49 days).
pub const SEMI_SYNC_TIMEOUT_MS: u64 = crate::front::settings::SEMI_SYNC_TIMEOUT_MAX_MS;

const START_TIMEOUT: Duration = Duration::from_secs(120);

/// What a server is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Lossless semi-sync primary, as the front demands.
    Primary,
    /// A read-only replica with a binlog of its own.
    Replica,
    /// Durable, without replication: the database alone.
    Alone,
    /// A database member of a cluster that fails the database over: every start
    /// read-only with its unacknowledged binlog tail truncated (`--init-rpl-role=SLAVE`);
    /// lockstep promotes one and makes the others replicas of their nodes' binlog
    /// servers. The application's account writes to its database only, so that
    /// `read_only` holds it off (a global privilege such as READ_ONLY ADMIN would not).
    Member,
}

/// Whether this machine has MariaDB's server (a reason when not).
pub fn available() -> Result<(), String> {
    for bin in [MARIADBD, INSTALL_DB] {
        if !Path::new(bin).exists() {
            return Err(format!("no {bin} (the Debian package mariadb-server)"));
        }
    }
    Ok(())
}

/// One server.
pub struct MariaDb {
    pub name: String,
    pub port: u16,
    pub server_id: u32,
    pub role: Role,
    pub version: String,
    dir: PathBuf,
    args: Vec<String>,
    account: Option<Account>,
    process: Option<ServerProcess>,
}

impl MariaDb {
    /// Creates the server `name` under `dir` (its data in `dir/name`) and starts it.
    /// `extra` are more `mariadbd` options.
    pub fn create(
        dir: &Path,
        name: &str,
        port: u16,
        server_id: u32,
        role: Role,
        extra: &[String],
    ) -> Result<MariaDb, Error> {
        available()?;
        let account = process::server_account("mysql")?;
        process::own_dir(account.as_ref(), dir)?;
        let version = process::version_of(Command::new(MARIADBD).arg("--version"))?;
        let init = dir.join(format!("{name}-init.sql"));
        let (app_grant, front_grant) = if role == Role::Member {
            // The front promotes, fences and rejoins members: it administers them.
            (format!("ALL PRIVILEGES ON {APP_DB}.*"), "ALL PRIVILEGES")
        } else {
            (
                "ALL PRIVILEGES ON *.*".to_string(),
                "REPLICATION SLAVE, BINLOG MONITOR, SLAVE MONITOR",
            )
        };
        std::fs::write(
            &init,
            format!(
                "SET sql_log_bin = 0;\n\
                 CREATE USER IF NOT EXISTS {APP_USER}@'127.0.0.1';\n\
                 GRANT {app_grant} TO {APP_USER}@'127.0.0.1';\n\
                 CREATE USER IF NOT EXISTS {FRONT_USER}@'127.0.0.1' IDENTIFIED BY '{FRONT_PASSWORD}';\n\
                 GRANT {front_grant} ON *.* TO {FRONT_USER}@'127.0.0.1';\n\
                 CREATE DATABASE IF NOT EXISTS {APP_DB};\n"
            ),
        )
        .map_err(|e| format!("write {}: {e}", init.display()))?;
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
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", data.display()),
            format!("--socket={}", dir.join(format!("{name}.sock")).display()),
            format!("--pid-file={}", dir.join(format!("{name}.pid")).display()),
            format!("--init-file={}", init.display()),
            "--bind-address=127.0.0.1".into(),
            "--skip-name-resolve".into(),
            format!("--port={port}"),
            format!("--server-id={server_id}"),
            "--max-connections=600".into(),
            "--innodb-flush-log-at-trx-commit=1".into(),
            "--gtid-strict-mode=1".into(),
            "--binlog-checksum=CRC32".into(),
        ];
        // Every role keeps a durable binlog: a replica may be promoted.
        args.push(format!("--log-bin={}", data.join("binlog").display()));
        args.push("--binlog-format=ROW".into());
        args.push("--sync-binlog=1".into());
        match role {
            Role::Primary => args.extend([
                "--rpl-semi-sync-master-enabled=ON".to_string(),
                "--rpl-semi-sync-master-wait-point=AFTER_SYNC".into(),
                format!("--rpl-semi-sync-master-timeout={SEMI_SYNC_TIMEOUT_MS}"),
                "--rpl-semi-sync-master-wait-no-slave=ON".into(),
            ]),
            Role::Replica => args.extend([
                format!("--relay-log={}", data.join("relay").display()),
                "--log-slave-updates=ON".to_string(),
                "--read-only=ON".into(),
                "--rpl-semi-sync-slave-enabled=ON".into(),
            ]),
            Role::Member => args.extend([
                format!("--relay-log={}", data.join("relay").display()),
                "--log-slave-updates=ON".to_string(),
                "--read-only=ON".into(),
                "--init-rpl-role=SLAVE".into(),
                // Replicas keep up with a primary that commits in groups.
                "--slave-parallel-threads=4".into(),
                "--slave-parallel-mode=optimistic".into(),
                "--rpl-semi-sync-master-wait-point=AFTER_SYNC".into(),
                format!("--rpl-semi-sync-master-timeout={SEMI_SYNC_TIMEOUT_MS}"),
                "--rpl-semi-sync-master-wait-no-slave=ON".into(),
            ]),
            Role::Alone => {}
        }
        args.extend(extra.iter().cloned());
        let mut db = MariaDb {
            name: name.to_owned(),
            port,
            server_id,
            role,
            version,
            dir: dir.to_path_buf(),
            args,
            account,
            process: None,
        };
        db.start()?;
        Ok(db)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// The server's error log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// Starts the server (again) with its options and waits until it takes clients.
    pub fn start(&mut self) -> Result<(), Error> {
        self.start_with(&[])
    }

    /// Starts the server with `more` options for this start only.
    pub fn start_with(&mut self, more: &[String]) -> Result<(), Error> {
        if self.process.is_some() {
            return Err(format!("MariaDB {} runs already", self.name));
        }
        let mut cmd = Command::new(MARIADBD);
        cmd.args(&self.args).args(more);
        // Appended to across restarts: the log of every start stays readable.
        let log = self.log_path();
        let mut p = ServerProcess::spawn_appending(
            &format!("MariaDB {}", self.name),
            cmd,
            self.account.as_ref(),
            &log,
            "TERM",
        )?;
        let addr = self.addr();
        p.wait_until("accepting connections", START_TIMEOUT, || {
            Ok(MyConn::connect(&login(&addr, APP_USER)).is_ok())
        })?;
        self.process = Some(p);
        Ok(())
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) -> Result<(), Error> {
        match self.process.take() {
            Some(mut p) => p.kill_now(),
            None => Ok(()),
        }
    }

    /// Stops the server cleanly.
    pub fn stop(&mut self) {
        self.process = None;
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Sends `signal` (STOP, CONT, ...) to the server.
    pub fn signal(&self, signal: &str) -> Result<(), Error> {
        self.process
            .as_ref()
            .ok_or_else(|| format!("MariaDB {} is not running", self.name))?
            .signal(signal)
    }

    /// An error if the server exited by itself.
    pub fn check_alive(&mut self) -> Result<(), Error> {
        match self.process.as_mut() {
            Some(p) => p.check_alive(),
            None => Err(format!("MariaDB {} is not running", self.name)),
        }
    }

    /// A client connection as `app` to the database `app`.
    pub fn connect(&self) -> Result<MyConn, Error> {
        MyConn::connect(&login(&self.addr(), APP_USER).database(APP_DB)).map_err(|e| e.to_string())
    }
}

/// A login to `addr` as `user` (the accounts of this module).
pub fn login(addr: &str, user: &str) -> Login {
    let mut l = Login::new(addr, user);
    if user == FRONT_USER {
        l.password = Some(FRONT_PASSWORD.as_bytes().to_vec());
    }
    l
}
