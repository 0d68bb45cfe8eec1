//! What makes a MariaDB server the database primary, or a replica fed by lockstep: the
//! statements run on it when the roles change.
//!
//! - [`promote`]: a replica becomes the primary. It first applies everything the
//!   stream committed (`MASTER_GTID_WAIT` on the stream's position), so its binlog
//!   ends exactly where the stream does and the front resumes from there; then its
//!   replication stops and is forgotten and it waits for semi-sync ACKs as the front
//!   demands; [`open_writes`] lets it take writes once its semi-sync state is ON.
//! - [`rejoin`]: a server (a former primary, a new or lagging replica) replicates from
//!   a lockstep binlog server. A server whose binlog holds transactions the stream
//!   never committed (a former primary's unacknowledged tail) is refused: it must first
//!   be restarted with `--init-rpl-role=SLAVE`, which makes MariaDB truncate that tail,
//!   or be rebuilt; replicating on top of it would make two histories.
//! - [`fence`]: a former primary stops taking writes, if it can still be reached.
//!
//! Every step is idempotent, so a procedure cut short is simply run again.

use std::time::Duration;

use super::connection::{Login, MyConn, MyError, quote};
use super::gtid::GtidState;
use super::settings::SEMI_SYNC_TIMEOUT_MAX_MS;

#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error(transparent)]
    Connection(#[from] MyError),
    #[error(
        "{addr} did not apply the stream's transactions up to {position} within {after:?} \
         (it holds {held})"
    )]
    Behind {
        addr: String,
        position: GtidState,
        held: GtidState,
        after: Duration,
    },
    #[error(
        "{addr}'s binlog holds transactions the stream never committed ({binlog}, the stream \
         stands at {stream}): a former primary's unacknowledged tail. Restart it with \
         --init-rpl-role=SLAVE so that MariaDB truncates the tail, or rebuild it from the \
         stream"
    )]
    Diverged {
        addr: String,
        binlog: GtidState,
        stream: GtidState,
    },
    #[error("{addr}: {what}")]
    Unexpected { addr: String, what: String },
}

/// Where a replica finds its lockstep binlog server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

fn position(c: &mut MyConn, variable: &str) -> Result<GtidState, RoleError> {
    let text = c
        .query(&format!("SELECT @@global.{variable}"))?
        .first(0)
        .unwrap_or_default();
    GtidState::parse(&text).map_err(|what| RoleError::Unexpected {
        addr: c.addr().to_owned(),
        what: format!("@@{variable}: {what}"),
    })
}

/// Whether `a` is at or before `b` in every domain of `a`.
fn within(a: &GtidState, b: &GtidState) -> bool {
    a.iter().all(|g| b.reaches(g))
}

/// Waits (at most `wait`) until the server at `login` holds the stream up to `stream`:
/// its binlog already reaches it (a former primary, or a replica that logs what it
/// applies), or its replication applies it (`MASTER_GTID_WAIT`).
pub fn caught_up(login: &Login, stream: &GtidState, wait: Duration) -> Result<(), RoleError> {
    let mut c = MyConn::connect(&waiting(login, wait))?;
    wait_for(&mut c, stream, wait)
}

/// `login` with room on its connection for a `MASTER_GTID_WAIT` of `wait`.
fn waiting(login: &Login, wait: Duration) -> Login {
    let mut l = login.clone();
    l.io_timeout = l.io_timeout.map(|t| t.max(wait + Duration::from_secs(5)));
    l
}

fn wait_for(c: &mut MyConn, stream: &GtidState, wait: Duration) -> Result<(), RoleError> {
    if stream.is_empty() || within(stream, &position(c, "gtid_binlog_pos")?) {
        return Ok(());
    }
    let held = |c: &mut MyConn| position(c, "gtid_slave_pos");
    if wait.is_zero() {
        return Err(RoleError::Behind {
            addr: c.addr().to_owned(),
            position: stream.clone(),
            held: held(c)?,
            after: wait,
        });
    }
    // MASTER_GTID_WAIT takes seconds with a fraction.
    let waited = c
        .query(&format!(
            "SELECT MASTER_GTID_WAIT({}, {:.3})",
            quote(&stream.to_string()),
            wait.as_secs_f64()
        ))?
        .first(0);
    if waited.as_deref() != Some("0") {
        return Err(RoleError::Behind {
            addr: c.addr().to_owned(),
            position: stream.clone(),
            held: held(c)?,
            after: wait,
        });
    }
    Ok(())
}

/// The lowest server id a database primary takes (see [`primary_server_id`]); the
/// members' own `server_id`s must stay below it.
pub const PRIMARY_SERVER_ID_BASE: u32 = 1_000_000_000;

/// The server id the database primary of `term` writes its transactions with.
///
/// Each term's primary has an id of its own, never a member's configured one: a
/// MariaDB replica ignores events that carry its own server id, so a former primary
/// that lost its unacknowledged tail at restart (back to its configured id) takes
/// those transactions, as the stream committed them, from its binlog server again.
pub fn primary_server_id(term: u64) -> u32 {
    PRIMARY_SERVER_ID_BASE.saturating_add(u32::try_from(term).unwrap_or(u32::MAX))
}

/// Readies the server at `login` to be the database primary of `term` once it holds
/// the stream up to `stream` (waiting at most `wait`, see [`caught_up`]): its
/// replication stops and is forgotten, it writes with the term's server id, and it
/// waits for semi-sync ACKs as the front demands. It stays read-only: the front lets
/// it take writes ([`open_writes`]) once its ACKs are in place. Returns its binlog
/// position.
pub fn promote(
    login: &Login,
    stream: &GtidState,
    wait: Duration,
    term: u64,
) -> Result<GtidState, RoleError> {
    let mut c = MyConn::connect(&waiting(login, wait))?;
    let addr = c.addr().to_owned();
    wait_for(&mut c, stream, wait)?;
    for sql in [
        "STOP SLAVE".to_string(),
        "RESET SLAVE ALL".to_string(),
        format!("SET GLOBAL server_id = {}", primary_server_id(term)),
        "SET GLOBAL rpl_semi_sync_slave_enabled = OFF".to_string(),
        "SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC".to_string(),
        "SET GLOBAL rpl_semi_sync_master_wait_no_slave = ON".to_string(),
        format!("SET GLOBAL rpl_semi_sync_master_timeout = {SEMI_SYNC_TIMEOUT_MAX_MS}"),
        "SET GLOBAL rpl_semi_sync_master_enabled = ON".to_string(),
    ] {
        c.run(&sql)?;
    }
    let binlog = position(&mut c, "gtid_binlog_pos")?;
    if !within(stream, &binlog) {
        return Err(RoleError::Unexpected {
            addr,
            what: format!(
                "its binlog stands at {binlog} after applying the stream up to {stream}: it \
                 does not log what it replicates (log_slave_updates = ON is needed)"
            ),
        });
    }
    Ok(binlog)
}

/// Lets the primary at `login` take writes, once its semi-sync state is ON (a commit
/// then waits for the front's ACK); waits at most `wait` for it.
pub fn open_writes(login: &Login, wait: Duration) -> Result<(), RoleError> {
    let mut c = MyConn::connect(login)?;
    let started = std::time::Instant::now();
    loop {
        let on = c
            .query("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'")?
            .first(1)
            .is_some_and(|v| v.eq_ignore_ascii_case("ON"));
        if on {
            break;
        }
        if started.elapsed() >= wait {
            return Err(RoleError::Unexpected {
                addr: c.addr().to_owned(),
                what: format!(
                    "Rpl_semi_sync_master_status stays OFF for {wait:?}: it would commit \
                     without the front's ACK, so it stays read-only"
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    c.run("SET GLOBAL read_only = OFF")?;
    Ok(())
}

/// Stops the server at `login` from taking writes (`read_only`), if it answers.
pub fn fence(login: &Login) -> Result<(), RoleError> {
    let mut c = MyConn::connect(login)?;
    c.run("SET GLOBAL read_only = ON")?;
    Ok(())
}

/// Fences the server at `login` and returns its binlog position: every transaction it
/// committed, or will still commit (those waiting for their ACK), lies within it.
pub fn fence_at(login: &Login) -> Result<GtidState, RoleError> {
    let mut c = MyConn::connect(login)?;
    c.run("SET GLOBAL read_only = ON")?;
    position(&mut c, "gtid_binlog_pos")
}

/// Lets the server at `login` take writes again (a switchover that did not happen).
pub fn unfence(login: &Login) -> Result<(), RoleError> {
    let mut c = MyConn::connect(login)?;
    c.run("SET GLOBAL read_only = OFF")?;
    Ok(())
}

/// What the server at `login` is now, as its rejoin agent needs to know it.
#[derive(Debug)]
pub struct Observed {
    pub read_only: bool,
    /// Its replication's source (`host`, `port`), with both threads running.
    pub replicating: Option<(String, u16)>,
}

/// Looks at the server at `login`.
pub fn observe(login: &Login) -> Result<Observed, RoleError> {
    let mut c = MyConn::connect(login)?;
    let read_only = c
        .query("SELECT @@global.read_only")?
        .first(0)
        .is_some_and(|v| v != "0");
    let status = c.query("SHOW SLAVE STATUS")?;
    let col = |name: &str| -> Option<String> {
        let i = status.columns.iter().position(|c| c == name)?;
        status.first(i)
    };
    // Both threads running: an I/O thread that keeps reconnecting ("Connecting") to a
    // source that refuses it (another history) is not replicating.
    let running = col("Slave_IO_Running").as_deref() == Some("Yes")
        && col("Slave_SQL_Running").as_deref() == Some("Yes");
    let replicating = match (col("Master_Host"), col("Master_Port")) {
        (Some(h), Some(p)) if running && !h.is_empty() => {
            p.parse::<u16>().ok().map(|port| (h, port))
        }
        _ => None,
    };
    Ok(Observed {
        read_only,
        replicating,
    })
}

/// Makes the server at `login` a replica of the binlog server `source`, after checking
/// that its binlog holds nothing the stream (at `stream`) never committed.
pub fn rejoin(login: &Login, source: &Source, stream: &GtidState) -> Result<(), RoleError> {
    let mut c = MyConn::connect(login)?;
    let addr = c.addr().to_owned();
    let binlog = position(&mut c, "gtid_binlog_pos")?;
    if !within(&binlog, stream) {
        return Err(RoleError::Diverged {
            addr,
            binlog,
            stream: stream.clone(),
        });
    }
    let slave = position(&mut c, "gtid_slave_pos")?;
    // It resumes after what it holds: a former primary holds its own transactions in
    // its binlog, not in its replica position.
    let mut resume = slave.clone();
    for g in binlog.iter() {
        if !resume.reaches(g) {
            resume.advance(*g).map_err(|what| RoleError::Unexpected {
                addr: addr.clone(),
                what,
            })?;
        }
    }
    c.run("STOP SLAVE")?;
    c.run("SET GLOBAL read_only = ON")?;
    c.run("SET GLOBAL rpl_semi_sync_master_enabled = OFF")?;
    if resume != slave {
        c.run(&format!(
            "SET GLOBAL gtid_slave_pos = {}",
            quote(&resume.to_string())
        ))?;
    }
    c.run(&format!(
        "CHANGE MASTER TO MASTER_HOST = {}, MASTER_PORT = {}, MASTER_USER = {}, \
         MASTER_PASSWORD = {}, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
        quote(&source.host),
        source.port,
        quote(&source.user),
        quote(&source.password)
    ))?;
    c.run("START SLAVE")?;
    Ok(())
}
