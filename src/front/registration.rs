//! Registers the front as a semi-synchronous replica of the primary and starts the
//! binlog dump from a GTID position.
//!
//! The session variables are the ones MariaDB's own replica sets: the checksum it can
//! verify, its capability to follow GTIDs (`@mariadb_slave_capability = 4`), where to
//! start (`@slave_connect_state`), strict GTID order, the heartbeat period, and that it
//! answers semi-sync (`@rpl_semi_sync_slave = 1`). Then `COM_REGISTER_SLAVE` (so the
//! primary lists it in `SHOW SLAVE HOSTS`) and `COM_BINLOG_DUMP`.
//!
//! A primary that cannot serve the position answers the dump with an error (for
//! example ERROR 1236 when the position is not in its binlog: it lost transactions
//! the stream holds, or purged ones the stream lacks); the first read of the stream
//! returns it.

use std::time::Duration;

use mysql_common::packets::{ComBinlogDump, ComRegisterSlave};

use super::connection::{MyConn, MyError, quote};
use super::events::{BinlogStream, StreamError};
use super::gtid::GtidState;

/// `MARIA_SLAVE_CAPABILITY_GTID`: the replica understands GTID events and positions.
const MARIADB_SLAVE_CAPABILITY_GTID: u32 = 4;

/// How the front asks for the binlog.
#[derive(Clone, Debug)]
pub struct DumpRequest<'a> {
    /// The id the front registers with (unique among the primary's replicas).
    pub server_id: u32,
    pub position: &'a GtidState,
    /// The primary sends a heartbeat when it has sent nothing for this long.
    pub heartbeat: Duration,
    /// A stream silent for this long is given up (a few heartbeats).
    pub silence: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Connection(#[from] MyError),
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// Sets the replica's session, registers and starts the dump. Consumes the connection:
/// from now on it carries the binlog.
pub fn start_dump(
    mut conn: MyConn,
    request: &DumpRequest<'_>,
) -> Result<BinlogStream, RegisterError> {
    let heartbeat_ns = u64::try_from(request.heartbeat.as_nanos()).unwrap_or(u64::MAX);
    let statements = [
        "SET @master_binlog_checksum = 'CRC32'".to_string(),
        format!("SET @mariadb_slave_capability = {MARIADB_SLAVE_CAPABILITY_GTID}"),
        format!(
            "SET @slave_connect_state = {}",
            quote(&request.position.to_string())
        ),
        "SET @slave_gtid_strict_mode = 1".to_string(),
        "SET @slave_gtid_ignore_duplicates = 0".to_string(),
        format!("SET @master_heartbeat_period = {heartbeat_ns}"),
        "SET @rpl_semi_sync_slave = 1".to_string(),
    ];
    for sql in &statements {
        conn.run(sql)?;
    }
    conn.send_packet(
        &ComRegisterSlave::new(request.server_id),
        "register as a replica",
    )?;
    conn.read_ok("register as a replica")?;
    // With a GTID position the file name is empty and the position 4: the primary
    // finds the file from @slave_connect_state.
    let dump = ComBinlogDump::new(request.server_id).with_pos(4);
    conn.send_packet(&dump, "start the binlog dump")?;
    let (socket, codec, input, addr) = conn.into_parts();
    Ok(BinlogStream::new(
        socket,
        codec,
        input,
        addr,
        true,
        request.silence,
    )?)
}
