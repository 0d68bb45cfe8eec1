//! One stock MariaDB replica connected to the binlog server: its setup statements
//! answered, then the stream's committed transactions, as binlog events, for as long
//! as it stays.
//!
//! A MariaDB replica (`CHANGE MASTER TO ... MASTER_USE_GTID = slave_pos`) asks for the
//! server's clock, id and checksum, sets its session (`@master_binlog_checksum`,
//! `@master_heartbeat_period`, `@mariadb_slave_capability`, `@slave_connect_state`,
//! ...), registers (`COM_REGISTER_SLAVE`) and asks for the binlog (`COM_BINLOG_DUMP`).
//! The statements it runs are answered from what the server knows; any other
//! statement is refused (this server runs no SQL).
//!
//! The dump is one virtual binlog file per connection: a ROTATE (artificial) naming it,
//! a format description, a GTID_LIST with the replica's position, then the
//! transactions after that position with their events' end offsets rewritten for the
//! file and their checksums computed again, and a heartbeat whenever nothing was sent
//! for the replica's heartbeat period. Only committed records are ever read (a lockstep
//! read returns nothing beyond the commit point the node knows), so a replica never
//! holds a transaction lockstep has not committed. A position the stream cannot serve
//! (beyond it, another history, deleted by retention) is refused with MariaDB's error
//! 1236 and the reason, which the replica shows in `SHOW SLAVE STATUS`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::ServerSettings;
use super::conn::{ConnError, ServerConn, code};
use crate::client::{Client, ClientOptions};
use crate::front::binlog_file::{self, MAGIC, Stamp, artificial_event, rotate_body};
use crate::front::cursor::{CursorError, Stream, fetch, find_start};
use crate::front::events::kind;
use crate::front::gtid::{GtidState, Next};
use crate::front::reader::{Assembler, Item};

/// The virtual binlog file of every dump.
pub const FILE_NAME: &str = "lockstep-bin.000001";

/// Records asked for by one read of the stream.
const READ_RECORDS_MAX: u32 = 1024;

/// Waits between two looks for new commits while the replica is caught up: short
/// while commits keep coming, longer once the stream is quiet.
const POLL_MIN: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(20);

/// The heartbeat period a replica gets when it asks for none.
const HEARTBEAT_DEFAULT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("the stream: {0}")]
    Cursor(#[from] CursorError),
    #[error("the local node: {0}")]
    Node(#[from] crate::client::ClientError),
}

/// Serves one replica until it leaves, the server stops, or the stream cannot serve it.
pub fn serve(
    mut conn: ServerConn,
    settings: &ServerSettings,
    stop: &AtomicBool,
) -> Result<(), ReplicaError> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let cmd = conn.read_command()?;
        match cmd.first() {
            Some(0x01) => return Ok(()),
            Some(0x03) => {
                let sql = String::from_utf8_lossy(&cmd[1..]).into_owned();
                answer(&mut conn, settings, &mut vars, &sql)?;
            }
            Some(0x0e) => conn.ok()?,
            // COM_REGISTER_SLAVE: nothing to keep; replicas are listed in the metrics.
            Some(0x15) => conn.ok()?,
            Some(0x12) => return dump(&mut conn, settings, &vars, stop),
            Some(other) => {
                let (c, s) = code::UNKNOWN_COM;
                conn.err(
                    c,
                    s,
                    &format!("command {other:#04x} is not served by lockstep's binlog server"),
                )?;
            }
            None => return Ok(()),
        }
    }
}

/// Answers a statement of a replica's setup.
fn answer(
    conn: &mut ServerConn,
    settings: &ServerSettings,
    vars: &mut BTreeMap<String, String>,
    sql: &str,
) -> Result<(), ReplicaError> {
    let text = sql.trim().trim_end_matches(';').trim();
    let lower = text.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("set ") {
        // `SET @name = value` (several, comma-separated): user variables are kept for
        // the dump; anything else (NAMES, autocommit, sql_mode) changes nothing here.
        for assignment in split_top(&text[4..]) {
            if let Some((name, value)) = assignment.split_once('=') {
                let name = name.trim().trim_start_matches('@').to_ascii_lowercase();
                let value = value.trim().trim_matches('\'').trim_matches('"').to_owned();
                vars.insert(name, value);
            }
        }
        let _ = rest;
        conn.ok()?;
        return Ok(());
    }
    if let Some(rest) = lower.strip_prefix("select ") {
        let exprs = split_top(rest);
        let mut columns = Vec::new();
        let mut row = Vec::new();
        for e in &exprs {
            let e = e.trim();
            let Some(v) = value_of(settings, vars, e) else {
                return refuse(conn, sql);
            };
            columns.push(e.to_owned());
            row.push(Some(v));
        }
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        conn.result_set(&columns, &[row])?;
        return Ok(());
    }
    for prefix in ["show global variables like ", "show variables like "] {
        if let Some(pattern) = lower.strip_prefix(prefix) {
            let name = pattern.trim().trim_matches('\'').trim_matches('"');
            let rows: Vec<Vec<Option<String>>> = value_of(settings, vars, &format!("@@{name}"))
                .map(|v| vec![vec![Some(name.to_owned()), Some(v)]])
                .unwrap_or_default();
            conn.result_set(&["Variable_name", "Value"], &rows)?;
            return Ok(());
        }
    }
    refuse(conn, sql)
}

fn refuse(conn: &mut ServerConn, sql: &str) -> Result<(), ReplicaError> {
    let (c, s) = code::NOT_SUPPORTED;
    let shown: String = sql.chars().take(80).collect();
    conn.err(
        c,
        s,
        &format!("lockstep's binlog server serves replication only, not `{shown}`"),
    )?;
    Ok(())
}

/// Splits at commas outside quotes and parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut cur) = (0i32, None, String::new());
    for c in s.chars() {
        match (c, quote) {
            ('\'' | '"', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            ('(', None) => depth += 1,
            (')', None) => depth -= 1,
            (',', None) if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// The value of an expression a replica selects, if it is one this server knows.
fn value_of(
    settings: &ServerSettings,
    vars: &BTreeMap<String, String>,
    expr: &str,
) -> Option<String> {
    let e = expr.trim().to_ascii_lowercase();
    if e == "1" {
        return Some("1".into());
    }
    if e == "unix_timestamp()" {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
        return Some(now.as_secs().to_string());
    }
    if e == "version()" {
        return Some(settings.version.clone());
    }
    if let Some(var) = e.strip_prefix("@@") {
        let var = var
            .strip_prefix("global.")
            .or_else(|| var.strip_prefix("session."))
            .unwrap_or(var);
        return Some(match var {
            "server_id" => settings.server_id.to_string(),
            "version" => settings.version.clone(),
            "version_comment" => "lockstep binlog server".into(),
            "binlog_checksum" => "CRC32".into(),
            "gtid_domain_id" => "0".into(),
            "gtid_strict_mode" => "1".into(),
            "read_only" => "1".into(),
            "log_bin" => "1".into(),
            "binlog_format" => "ROW".into(),
            "rpl_semi_sync_master_enabled" => "0".into(),
            "max_allowed_packet" => (1u32 << 30).to_string(),
            _ => return None,
        });
    }
    if let Some(var) = e.strip_prefix('@') {
        return match var {
            // What the replica set it to, resolved as the server would.
            "master_binlog_checksum" => Some("CRC32".into()),
            _ => vars.get(var).cloned(),
        };
    }
    None
}

/// Streams the transactions after the replica's position; returns when it leaves.
fn dump(
    conn: &mut ServerConn,
    settings: &ServerSettings,
    vars: &BTreeMap<String, String>,
    stop: &AtomicBool,
) -> Result<(), ReplicaError> {
    let position = match vars.get("slave_connect_state") {
        Some(text) => match GtidState::parse(text) {
            Ok(p) => Some(p),
            Err(e) => return fatal(conn, &format!("@slave_connect_state: {e}")),
        },
        None => None,
    };
    if vars
        .get("mariadb_slave_capability")
        .is_none_or(|v| v.trim() != "4")
        || position.is_none()
    {
        return fatal(
            conn,
            "lockstep's binlog server serves replicas by GTID only: CHANGE MASTER TO \
             MASTER_USE_GTID = slave_pos",
        );
    }
    let heartbeat = vars
        .get("master_heartbeat_period")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ns| ns > 0)
        .map_or(HEARTBEAT_DEFAULT, Duration::from_nanos);
    let options = ClientOptions {
        timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let mut node = Client::connect(&[&settings.node], &settings.stream, options)?;
    // Where the replica's transactions begin, and their format description.
    let start = {
        let mut stream = match Stream::open(&mut node) {
            Ok(s) => s,
            Err(e) => return fatal(conn, &e.to_string()),
        };
        // An empty position asks for the stream from its start.
        let from = position.as_ref().filter(|p| !p.is_empty());
        match find_start(&mut stream, from) {
            Ok(s) => s,
            Err(e) => return fatal(conn, &e.to_string()),
        }
    };
    let stamp = Stamp {
        timestamp: start.fde.timestamp(),
        server_id: settings.server_id,
    };
    let mut at: u64 = MAGIC.len() as u64;
    send_event(
        conn,
        &artificial_event(kind::ROTATE, stamp, &rotate_body(FILE_NAME, at), 0),
    )?;
    let fde = start.fde.for_file();
    at += fde.len() as u64;
    send_event(conn, &fde)?;
    let list = binlog_file::gtid_list_event(&start.list, stamp, at);
    at += list.len() as u64;
    send_event(conn, &list)?;

    let replica_has = position.unwrap_or_default();
    let mut asm = Assembler::after(start.before);
    let mut lsn = start.lsn;
    let mut last_sent = Instant::now();
    let mut poll = POLL_MIN;
    while !stop.load(Ordering::Relaxed) {
        let records = match fetch(&mut node, lsn, READ_RECORDS_MAX) {
            Ok((_, records)) => records,
            Err(e) if crate::front::cursor::is_deleted(&e) => {
                return fatal(
                    conn,
                    &format!(
                        "retention deleted lsn {lsn} of the stream before this replica read                          it: it fell too far behind (keep more segments: retain_segments)"
                    ),
                );
            }
            Err(e) => return Err(e.into()),
        };
        if records.is_empty() {
            if last_sent.elapsed() >= heartbeat {
                let beat = artificial_event(
                    kind::HEARTBEAT,
                    stamp,
                    FILE_NAME.as_bytes(),
                    u32::try_from(at).unwrap_or(u32::MAX),
                );
                send_event(conn, &beat)?;
                last_sent = Instant::now();
            }
            std::thread::sleep(poll);
            poll = (poll * 2).min(POLL_MAX);
            continue;
        }
        poll = POLL_MIN;
        for record in records {
            if record.lsn != lsn {
                return fatal(
                    conn,
                    &format!("the node answered lsn {} for lsn {lsn}", record.lsn),
                );
            }
            lsn += 1;
            let item = match asm.push(record.lsn, &record.payload) {
                Ok(item) => item,
                Err(e) => {
                    return fatal(conn, &format!("the stream is not what a front writes: {e}"));
                }
            };
            let Some(Item::Transaction(mut t)) = item else {
                continue;
            };
            // Transactions the replica holds already are left out.
            if replica_has.check(&t.gtid) == Next::Held {
                continue;
            }
            match binlog_file::place(&mut t.events, at) {
                Ok(placed) => at = placed.end,
                Err(e) => {
                    return fatal(conn, &format!("transaction {}: {e:?}", t.gtid));
                }
            }
            for event in crate::front::reader::split_events(&t.events) {
                send_event(conn, event)?;
            }
            last_sent = Instant::now();
        }
    }
    Ok(())
}

/// Sends one binlog event packet (`0x00` then the event).
fn send_event(conn: &mut ServerConn, event: &[u8]) -> Result<(), ConnError> {
    let mut packet = Vec::with_capacity(event.len() + 1);
    packet.push(0x00);
    packet.extend_from_slice(event);
    conn.write_packet(&packet)
}

/// Ends the dump with MariaDB's error 1236 and `why`.
fn fatal(conn: &mut ServerConn, why: &str) -> Result<(), ReplicaError> {
    let (c, s) = code::MASTER_FATAL_READING_BINLOG;
    conn.err(c, s, why)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ServerSettings {
        ServerSettings {
            listen: "127.0.0.1:3310".parse().unwrap(),
            user: "repl".into(),
            password: b"pw".to_vec(),
            server_id: 77,
            stream: "s".into(),
            node: "127.0.0.1:7001".into(),
            version: "10.11.99-MariaDB-lockstep".into(),
        }
    }

    #[test]
    fn a_replicas_setup_statements_have_answers() {
        let s = settings();
        let mut vars = BTreeMap::new();
        vars.insert("slave_connect_state".to_string(), "0-1-5".to_string());
        // (expression, answer)
        let table = [
            ("@@GLOBAL.SERVER_ID", Some("77")),
            ("@@server_id", Some("77")),
            ("@@GLOBAL.gtid_domain_id", Some("0")),
            ("@master_binlog_checksum", Some("CRC32")),
            ("@@global.binlog_checksum", Some("CRC32")),
            ("@slave_connect_state", Some("0-1-5")),
            ("version()", Some("10.11.99-MariaDB-lockstep")),
            ("1", Some("1")),
            ("@@global.gtid_binlog_pos", None),
            ("now()", None),
            ("@unset", None),
        ];
        for (expr, want) in table {
            assert_eq!(value_of(&s, &vars, expr).as_deref(), want, "{expr}");
        }
        assert!(value_of(&s, &vars, "UNIX_TIMESTAMP()").is_some());
    }

    #[test]
    fn statements_split_at_top_level_commas_only() {
        assert_eq!(
            split_top("@a = 1, @b = 'x,y', f(1, 2)"),
            vec!["@a = 1", " @b = 'x,y'", " f(1, 2)"]
        );
        assert_eq!(split_top(""), Vec::<String>::new());
    }
}
