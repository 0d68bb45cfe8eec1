//! What the front demands of the database primary before it takes its binlog, and
//! what it only warns about.
//!
//! The front's ACK is what lets the primary answer COMMIT. That is only strong sync if
//! the primary waits for the ACK after its own binlog is durable and never gives up
//! waiting, and if its binlog can be replayed exactly: every setting below that would
//! break one of those is refused, one line each, and the front does not connect until
//! it is fixed (it checks again at every retry).
//!
//! | setting | must be | why |
//! |---|---|---|
//! | `log_bin` | ON | no binlog, nothing to replicate |
//! | `binlog_format` | ROW | statements can replay differently on another server |
//! | `sync_binlog` | 1 | a transaction the front ACKed must survive the primary's crash |
//! | `innodb_flush_log_at_trx_commit` | 1 | the same, for the storage engine |
//! | `gtid_strict_mode` | ON | the stream's position is a GTID position |
//! | `binlog_checksum` | CRC32 | every event is verified on arrival |
//! | `rpl_semi_sync_master_enabled` | ON | without it nothing waits for the front |
//! | `rpl_semi_sync_master_wait_point` | AFTER_SYNC | AFTER_COMMIT shows commits to other sessions before lockstep holds them |
//! | `rpl_semi_sync_master_wait_no_slave` | ON | OFF commits without waiting while the front reconnects |
//!
//! Warned about: a `rpl_semi_sync_master_timeout` under [`SEMI_SYNC_TIMEOUT_WARN_MS`]
//! (a lockstep failover or a blocked sync set that lasts longer lets the primary fall
//! back to asynchronous replication; the front reports such a fallback as an alert, see
//! `front::watch`).

use super::connection::{MyConn, MyError};
use super::gtid::GtidState;

/// The largest `rpl_semi_sync_master_timeout` (49 days): commits wait instead of
/// falling back to asynchronous replication.
pub const SEMI_SYNC_TIMEOUT_MAX_MS: u64 = 4_294_967_295;

/// Below this `rpl_semi_sync_master_timeout` the front warns at every connect.
pub const SEMI_SYNC_TIMEOUT_WARN_MS: u64 = 60_000;

/// The primary as the front found it.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub version: String,
    pub server_id: u32,
    /// `@@gtid_binlog_pos`: where a stream with no transaction yet starts.
    pub binlog_pos: GtidState,
    pub semi_sync_timeout_ms: u64,
    /// Lines to log: settings that are allowed but risky.
    pub warnings: Vec<String>,
}

/// Why the front will not take a primary's binlog.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Connection(#[from] MyError),
    /// Settings that would lose data, one line each.
    #[error("{}", .0.join("; "))]
    Refused(Vec<String>),
}

const VARIABLES: [&str; 13] = [
    "version",
    "server_id",
    "log_bin",
    "binlog_format",
    "sync_binlog",
    "innodb_flush_log_at_trx_commit",
    "gtid_strict_mode",
    "binlog_checksum",
    "gtid_binlog_pos",
    "rpl_semi_sync_master_enabled",
    "rpl_semi_sync_master_wait_point",
    "rpl_semi_sync_master_wait_no_slave",
    "rpl_semi_sync_master_timeout",
];

/// Reads the primary's settings and checks them (see the module docs).
pub fn check(conn: &mut MyConn, front_server_id: u32) -> Result<Upstream, CheckError> {
    let select = VARIABLES
        .iter()
        .map(|v| format!("@@global.{v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let result = match conn.query(&format!("SELECT {select}")) {
        Ok(r) => r,
        // ER_UNKNOWN_SYSTEM_VARIABLE: semi-sync is not part of this server.
        Err(e) if e.server_code() == Some(1193) => {
            return Err(CheckError::Refused(vec![format!(
                "the primary has no semi-synchronous replication ({e}); lockstep needs \
                 MariaDB 10.3 or newer"
            )]));
        }
        Err(e) => return Err(e.into()),
    };
    let values: Vec<String> = (0..VARIABLES.len())
        .map(|i| result.first(i).unwrap_or_default())
        .collect();
    let get = |name: &str| -> &str {
        let i = VARIABLES
            .iter()
            .position(|v| *v == name)
            .expect("a listed variable");
        values[i].as_str()
    };
    judge(get, front_server_id)
}

/// The verdict on a set of settings; `get` gives a variable's value as text.
pub fn judge<'a>(
    get: impl Fn(&str) -> &'a str,
    front_server_id: u32,
) -> Result<Upstream, CheckError> {
    let mut refused = Vec::new();
    let on = |v: &str| v == "1" || v.eq_ignore_ascii_case("ON");
    let version = get("version").to_owned();
    if !version.contains("MariaDB") {
        refused.push(format!(
            "the primary runs {version:?}: the front follows MariaDB's GTID replication, \
             and MySQL is not supported"
        ));
    }
    let server_id: u32 = get("server_id").parse().unwrap_or(0);
    if server_id == front_server_id {
        refused.push(format!(
            "the primary's server_id is {server_id}, the id the front registers with; \
             give the front another server_id"
        ));
    }
    let mut demand = |name: &str, ok: bool, want: &str, why: &str| {
        if !ok {
            refused.push(format!("{name} = {:?} (need {want}): {why}", get(name)));
        }
    };
    demand(
        "log_bin",
        on(get("log_bin")),
        "ON",
        "there is no binlog to replicate",
    );
    demand(
        "binlog_format",
        get("binlog_format").eq_ignore_ascii_case("ROW"),
        "ROW",
        "statement-based events can replay differently on another server",
    );
    demand(
        "sync_binlog",
        get("sync_binlog") == "1",
        "1",
        "a crash of the primary could lose transactions the front acknowledged",
    );
    demand(
        "innodb_flush_log_at_trx_commit",
        get("innodb_flush_log_at_trx_commit") == "1",
        "1",
        "a crash of the primary could lose committed transactions",
    );
    demand(
        "gtid_strict_mode",
        on(get("gtid_strict_mode")),
        "ON",
        "the stream's position is a GTID position, which needs contiguous GTIDs",
    );
    demand(
        "binlog_checksum",
        get("binlog_checksum").eq_ignore_ascii_case("CRC32"),
        "CRC32",
        "the front verifies every event it receives",
    );
    demand(
        "rpl_semi_sync_master_enabled",
        on(get("rpl_semi_sync_master_enabled")),
        "ON",
        "without semi-sync no commit waits for lockstep",
    );
    demand(
        "rpl_semi_sync_master_wait_point",
        get("rpl_semi_sync_master_wait_point").eq_ignore_ascii_case("AFTER_SYNC"),
        "AFTER_SYNC",
        "other sessions would see commits before lockstep holds them",
    );
    demand(
        "rpl_semi_sync_master_wait_no_slave",
        on(get("rpl_semi_sync_master_wait_no_slave")),
        "ON",
        "the primary would commit without waiting while the front reconnects",
    );
    let binlog_pos = GtidState::parse(get("gtid_binlog_pos"))
        .map_err(|e| CheckError::Refused(vec![format!("gtid_binlog_pos: {e}")]))?;
    if !refused.is_empty() {
        return Err(CheckError::Refused(refused));
    }
    let semi_sync_timeout_ms: u64 = get("rpl_semi_sync_master_timeout").parse().unwrap_or(0);
    let mut warnings = Vec::new();
    if semi_sync_timeout_ms < SEMI_SYNC_TIMEOUT_WARN_MS {
        warnings.push(format!(
            "rpl_semi_sync_master_timeout = {semi_sync_timeout_ms} ms: a lockstep failover \
             or a blocked sync set lasting longer makes the primary fall back to \
             asynchronous replication (the front reports it as an alert); set it to \
             4294967295 (49 days) so that commits wait instead"
        ));
    }
    Ok(Upstream {
        version,
        server_id,
        binlog_pos,
        semi_sync_timeout_ms,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("version", "10.11.19-MariaDB-log"),
            ("server_id", "1"),
            ("log_bin", "1"),
            ("binlog_format", "ROW"),
            ("sync_binlog", "1"),
            ("innodb_flush_log_at_trx_commit", "1"),
            ("gtid_strict_mode", "1"),
            ("binlog_checksum", "CRC32"),
            ("gtid_binlog_pos", "0-1-17"),
            ("rpl_semi_sync_master_enabled", "1"),
            ("rpl_semi_sync_master_wait_point", "AFTER_SYNC"),
            ("rpl_semi_sync_master_wait_no_slave", "1"),
            ("rpl_semi_sync_master_timeout", "4294967295"),
        ]
    }

    fn run(vars: &[(&'static str, &'static str)]) -> Result<Upstream, CheckError> {
        judge(
            |name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| *v)
                    .unwrap_or("")
            },
            4_000_000_001,
        )
    }

    #[test]
    fn a_lossless_primary_is_taken() {
        let up = run(&good()).unwrap();
        assert_eq!(up.server_id, 1);
        assert_eq!(up.binlog_pos.to_string(), "0-1-17");
        assert!(up.warnings.is_empty());
    }

    #[test]
    fn each_setting_that_loses_data_is_refused_with_its_own_line() {
        // (variable, bad value, a word the refusal must contain)
        let table = [
            ("log_bin", "0", "log_bin"),
            ("binlog_format", "STATEMENT", "binlog_format"),
            ("binlog_format", "MIXED", "binlog_format"),
            ("sync_binlog", "0", "sync_binlog"),
            (
                "innodb_flush_log_at_trx_commit",
                "2",
                "innodb_flush_log_at_trx_commit",
            ),
            ("gtid_strict_mode", "0", "gtid_strict_mode"),
            ("binlog_checksum", "NONE", "binlog_checksum"),
            (
                "rpl_semi_sync_master_enabled",
                "0",
                "rpl_semi_sync_master_enabled",
            ),
            (
                "rpl_semi_sync_master_wait_point",
                "AFTER_COMMIT",
                "AFTER_SYNC",
            ),
            ("rpl_semi_sync_master_wait_no_slave", "0", "wait_no_slave"),
            ("version", "8.0.36", "MySQL"),
            ("server_id", "4000000001", "server_id"),
        ];
        for (name, value, word) in table {
            let mut vars = good();
            vars.iter_mut().find(|(k, _)| *k == name).unwrap().1 = value;
            match run(&vars) {
                Err(CheckError::Refused(lines)) => {
                    assert_eq!(lines.len(), 1, "{name} = {value}: {lines:?}");
                    assert!(lines[0].contains(word), "{name} = {value}: {lines:?}");
                }
                other => panic!("{name} = {value} was not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn a_short_semi_sync_timeout_is_a_warning() {
        let mut vars = good();
        vars.iter_mut()
            .find(|(k, _)| *k == "rpl_semi_sync_master_timeout")
            .unwrap()
            .1 = "10000";
        let up = run(&vars).unwrap();
        assert_eq!(up.warnings.len(), 1);
        assert!(up.warnings[0].contains("fall back"));
    }
}
