//! PostgreSQL: a primary and one synchronous standby on loopback, started from the
//! distribution's binaries in the benchmark's directory.
//!
//! Durability, as PostgreSQL users configure it for no loss on failover: the standby is
//! named in `synchronous_standby_names`, so a commit returns only after the primary has
//! flushed its WAL (fsync = on) and the standby has flushed it too
//! (`synchronous_commit = on`), or also applied it (`remote_apply`, the second series).
//! Everything else is the default configuration, apart from `max_connections` (room for
//! 256 clients).
//!
//! A commit is one `pg_logical_emit_message(true, prefix, payload)` in its own
//! transaction: a transactional WAL record carrying the payload and the commit record
//! that waits for the standby, a pure WAL append with nothing of tables or indexes.
//!
//! Checks: before and after every series the primary must report the standby as
//! `streaming` with `sync_state = 'sync'`, fsync on and the standby named; every
//! client connection reads back its `synchronous_commit`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Error;
use crate::peers::pg_wire::PgConn;
use crate::peers::process::{self, ServerProcess};
use crate::pool::Conn;

/// The standby's name, as the primary waits for it.
const STANDBY: &str = "standby1";

/// The statement of every commit.
const EMIT: &str = "SELECT pg_logical_emit_message(true, 'lockstep-bench', $1)";

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The PostgreSQL release the benchmark prefers (the and Debian 12's).
const PREFERRED_MAJOR: u32 = 15;

/// The directory of the server binaries, the preferred release if installed.
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found
        .iter()
        .find(|(m, _)| *m == PREFERRED_MAJOR)
        .or(found.last())
        .map(|(_, b)| b.clone())
}

pub struct Postgres {
    // Dropped in this order: the standby first, so the primary does not log its loss.
    standby: ServerProcess,
    primary: ServerProcess,
    primary_addr: String,
    pub version: String,
}

impl Postgres {
    /// Creates and starts the primary and the standby under `dir`.
    pub fn start(dir: &Path) -> Result<Postgres, Error> {
        let bin = bin_dir().ok_or("no PostgreSQL server under /usr/lib/postgresql")?;
        let account = process::server_account("postgres")?;
        process::own_dir(account.as_ref(), dir)?;
        let version = process::version_of(Command::new(bin.join("postgres")).arg("--version"))?;
        let [pport, sport] = lockstep::kit::free_ports(2)?[..] else {
            unreachable!("free_ports returns as many ports as asked for")
        };
        let pdir = dir.join("primary");
        let sdir = dir.join("standby");

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
                "-D",
            ])
            .arg(&pdir);
        process::run_as(
            "PostgreSQL initdb",
            initdb,
            account.as_ref(),
            &dir.join("initdb.log"),
        )?;
        append_conf(
            &pdir,
            &format!(
                "listen_addresses = '127.0.0.1'\nport = {pport}\n\
                 unix_socket_directories = '{}'\nmax_connections = 600\n\
                 synchronous_standby_names = '{STANDBY}'\n",
                dir.display()
            ),
        )?;
        let mut primary = ServerProcess::spawn(
            "PostgreSQL primary",
            server_command(&bin, &pdir),
            account.as_ref(),
            &dir.join("primary.log"),
            "INT",
        )?;
        let primary_addr = format!("127.0.0.1:{pport}");
        primary.wait_until("accepting connections", START_TIMEOUT, || {
            Ok(PgConn::connect(&primary_addr, "postgres").is_ok())
        })?;

        let mut backup = Command::new(bin.join("pg_basebackup"));
        backup
            .args(["-c", "fast", "-R", "-d"])
            .arg(format!(
                "host=127.0.0.1 port={pport} user=postgres application_name={STANDBY}"
            ))
            .arg("-D")
            .arg(&sdir);
        process::run_as(
            "PostgreSQL pg_basebackup",
            backup,
            account.as_ref(),
            &dir.join("basebackup.log"),
        )?;
        append_conf(&sdir, &format!("port = {sport}\n"))?;
        let standby = ServerProcess::spawn(
            "PostgreSQL standby",
            server_command(&bin, &sdir),
            account.as_ref(),
            &dir.join("standby.log"),
            "INT",
        )?;
        let mut pg = Postgres {
            standby,
            primary,
            primary_addr,
            version,
        };
        let addr = pg.primary_addr.clone();
        pg.primary
            .wait_until("streaming to a synchronous standby", START_TIMEOUT, || {
                Ok(check_replication(&addr).is_ok())
            })?;
        pg.standby.check_alive()?;
        Ok(pg)
    }

    /// `n` client connections whose commits run with `synchronous_commit = mode`.
    pub fn connect(&self, n: usize, mode: &str) -> Result<Vec<PgCommit>, Error> {
        (0..n)
            .map(|_| {
                let mut c = PgConn::connect(&self.primary_addr, "postgres")?;
                c.query(&format!("SET synchronous_commit = {mode}"))?;
                let now = c.query_one("SHOW synchronous_commit")?;
                if now != mode {
                    return Err(
                        format!("PostgreSQL: synchronous_commit is {now}, not {mode}").into(),
                    );
                }
                c.prepare("commit", EMIT)?;
                Ok(PgCommit(c))
            })
            .collect()
    }

    /// Whether the primary waits for a flushing standby now: the description, or why
    /// not.
    pub fn verify(&mut self) -> Result<String, Error> {
        self.primary.check_alive()?;
        self.standby.check_alive()?;
        check_replication(&self.primary_addr)
    }
}

/// One client connection; a commit is one transaction of [`EMIT`].
pub struct PgCommit(PgConn);

impl Conn for PgCommit {
    fn commit(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.0.execute("commit", payload)
    }
}

/// The primary's replication state, as a description if the standby is synchronous,
/// streaming, and the primary flushes.
fn check_replication(addr: &str) -> Result<String, Error> {
    let mut c = PgConn::connect(addr, "postgres")?;
    let rows = c.query(&format!(
        "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = '{STANDBY}'"
    ))?;
    let state: Vec<(String, String)> = rows
        .into_iter()
        .map(|r| {
            let mut r = r.into_iter().map(Option::unwrap_or_default);
            (r.next().unwrap_or_default(), r.next().unwrap_or_default())
        })
        .collect();
    if state != [("streaming".to_string(), "sync".to_string())] {
        return Err(format!(
            "PostgreSQL: standby {STANDBY} is not a streaming synchronous standby: {state:?}"
        )
        .into());
    }
    let fsync = c.query_one("SHOW fsync")?;
    let names = c.query_one("SHOW synchronous_standby_names")?;
    if fsync != "on" || names != STANDBY {
        return Err(
            format!("PostgreSQL: fsync = {fsync}, synchronous_standby_names = {names:?}").into(),
        );
    }
    Ok(format!(
        "standby {STANDBY} streaming, sync_state = sync; fsync = on; \
         synchronous_standby_names = '{STANDBY}'"
    ))
}

fn server_command(bin: &Path, data: &Path) -> Command {
    let mut c = Command::new(bin.join("postgres"));
    c.arg("-D").arg(data);
    c
}

fn append_conf(data: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    let path = data.join("postgresql.conf");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("\n# lockstep-bench\n{text}").as_bytes()))
        .map_err(|e| format!("write {}: {e}", path.display()).into())
}
