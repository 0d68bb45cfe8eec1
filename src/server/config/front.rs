//! A stream's `front` table (the MariaDB primary it replicates) and its `binlog_server`
//! table (where this node serves the stream to MariaDB replicas).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::replication::{Mode, NodeId, OnInsufficient, StreamSettings};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBinlogServer {
    listen: SocketAddr,
    user: String,
    password_file: Option<PathBuf>,
    server_id: Option<u32>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFront {
    kind: String,
    primary: String,
    user: String,
    password_file: Option<PathBuf>,
    server_id: Option<u32>,
    heartbeat_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    retry_ms: Option<u64>,
    event_bytes_max: Option<usize>,
    /// node id → its database server's host:port (database failover).
    members: Option<std::collections::BTreeMap<String, String>>,
    db_failover_timeout_ms: Option<u64>,
}

/// strong mode, and no degrading to the primary alone.
pub(super) fn front_settings(
    f: RawFront,
    stream: &StreamSettings,
    node: NodeId,
    base: &Path,
) -> Result<crate::front::FrontSettings, String> {
    use crate::front;
    if f.kind != "mariadb" {
        return Err(format!("kind = {:?}: the only kind is \"mariadb\"", f.kind));
    }
    if stream.mode != Mode::Strong {
        return Err(format!(
            "the stream's mode is {}: a front needs mode = \"strong\" (its ACK tells the \
             database that the sync set holds the transaction durably)",
            stream.mode
        ));
    }
    if stream.on_insufficient != OnInsufficient::Block {
        return Err(
            "on_insufficient = \"degrade\" would let the database commit on the lockstep \
             primary's copy alone; a front needs \"block\""
                .into(),
        );
    }
    if f.primary.is_empty() || f.primary.len() > front::record::TEXT_BYTES_MAX {
        return Err(format!("primary = {:?}: not a host:port", f.primary));
    }
    if f.user.is_empty() {
        return Err("user is empty".into());
    }
    let password = match f.password_file {
        Some(p) => Some(read_password(&base.join(p))?),
        None => None,
    };
    let ms = |v: Option<u64>, default: std::time::Duration, key: &str| {
        let d = v.map_or(default, std::time::Duration::from_millis);
        if d.is_zero() {
            Err(format!("{key} must be positive"))
        } else {
            Ok(d)
        }
    };
    let server_id = f
        .server_id
        .unwrap_or(front::SERVER_ID_BASE_DEFAULT)
        .checked_add(node)
        .ok_or_else(|| {
            format!(
                "server_id = {}: with the node id {node} added it exceeds {}",
                f.server_id.unwrap_or_default(),
                u32::MAX
            )
        })?;
    let event_bytes_max = f.event_bytes_max.unwrap_or(front::EVENT_BYTES_DEFAULT);
    if !(1 << 20..=1 << 30).contains(&event_bytes_max) {
        return Err(format!(
            "event_bytes_max = {event_bytes_max}: must be between 1 MiB and 1 GiB"
        ));
    }
    let failover_timeout = ms(
        f.db_failover_timeout_ms,
        front::DB_FAILOVER_TIMEOUT_DEFAULT,
        "db_failover_timeout_ms",
    )?;
    let db = db_members(
        f.members,
        f.db_failover_timeout_ms.map(|_| failover_timeout),
        &f.primary,
        node,
    )?;
    Ok(front::FrontSettings {
        upstream: f.primary,
        user: f.user,
        password,
        server_id,
        heartbeat: ms(f.heartbeat_ms, front::HEARTBEAT_DEFAULT, "heartbeat_ms")?,
        connect_timeout: ms(
            f.connect_timeout_ms,
            front::CONNECT_TIMEOUT_DEFAULT,
            "connect_timeout_ms",
        )?,
        retry: ms(f.retry_ms, front::RETRY_DEFAULT, "retry_ms")?,
        event_bytes_max,
        db,
    })
}

/// Checks a stream's `binlog_server` table; `listen` is the node's client address.
pub(super) fn binlog_server_settings(
    b: RawBinlogServer,
    stream: &str,
    listen: SocketAddr,
    base: &Path,
) -> Result<crate::front::server::ServerSettings, String> {
    if b.user.is_empty() || b.user.len() > 80 {
        return Err(format!("user = {:?}: 1 to 80 bytes", b.user));
    }
    if b.listen == listen {
        return Err(format!(
            "listen = {}: the node's own client address; give the binlog server a port of \
             its own",
            b.listen
        ));
    }
    let password = match b.password_file {
        Some(p) => read_password(&base.join(p))?,
        None => Vec::new(),
    };
    let server_id = b
        .server_id
        .unwrap_or(crate::front::BINLOG_SERVER_ID_DEFAULT);
    if server_id == 0 {
        return Err("server_id = 0: MariaDB's replicas refuse a primary without an id".into());
    }
    Ok(crate::front::server::ServerSettings {
        listen: b.listen,
        user: b.user,
        password,
        server_id,
        stream: stream.to_owned(),
        node: local_client_addr(listen),
        version: crate::front::server::VERSION.to_owned(),
    })
}

/// The address a process on this machine reaches a node listening on `listen` at.
pub fn local_client_addr(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    SocketAddr::new(ip, listen.port()).to_string()
}

/// A password file: its first line; readable by its owner only.
fn read_password(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("password_file {shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "password_file {shown}: mode {mode:o} lets group or others read the password; \
             chmod 600 it"
        ));
    }
    let text = std::fs::read(path).map_err(|e| format!("password_file {shown}: {e}"))?;
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    Ok(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
}

/// Checks the front's database members: the configured primary must be one of them.
fn db_members(
    raw: Option<std::collections::BTreeMap<String, String>>,
    failover_timeout: Option<std::time::Duration>,
    primary: &str,
    node: NodeId,
) -> Result<Option<crate::front::DbMembers>, String> {
    use crate::front;
    let Some(raw) = raw else {
        if failover_timeout.is_some() {
            return Err("db_failover_timeout_ms without members: nothing to fail over to".into());
        }
        return Ok(None);
    };
    let mut members = std::collections::BTreeMap::new();
    for (id, addr) in raw {
        let id: NodeId = id
            .parse()
            .map_err(|_| format!("members: {id:?} is not a node id"))?;
        if addr.is_empty() || addr.len() > front::record::TEXT_BYTES_MAX {
            return Err(format!("members: node {id}: {addr:?} is not a host:port"));
        }
        members.insert(id, addr);
    }
    if !members.values().any(|a| a == primary) {
        return Err(format!(
            "primary = {primary:?} is not one of the members' database servers"
        ));
    }
    Ok(Some(front::DbMembers {
        node,
        members,
        failover_timeout: failover_timeout.unwrap_or(front::DB_FAILOVER_TIMEOUT_DEFAULT),
        source: None,
    }))
}
