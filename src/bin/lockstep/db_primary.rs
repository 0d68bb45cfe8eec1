//! `lockstep db-primary`: where a stream's database primary is, for clients and
//! scripts that must reconnect after a database failover or switchover.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use super::http::{HTTP_TIMEOUT, http};
use super::{CommandError, Global};

/// Between two looks while waiting.
const POLL: Duration = Duration::from_millis(20);

#[derive(Args)]
pub(super) struct DbPrimaryArgs {
    /// The stream whose front replicates the database
    #[arg(long, value_name = "NAME")]
    stream: String,
    /// Wait until the database primary the controller committed takes writes (the
    /// front on the stream's lockstep primary streams its binlog: give every node's
    /// admin endpoint in --nodes); bounded by --timeout-ms (default 30 s)
    #[arg(long)]
    wait: bool,
}

/// What one look found: the committed database primary, and whether it serves.
struct Seen {
    node: u64,
    addr: String,
    term: u64,
    serving: bool,
}

/// `lockstep db-primary`: prints `host:port` of the database primary (`--json`: with
/// its node and term).
pub(super) fn db_primary(g: &Global, a: &DbPrimaryArgs) -> Result<(), CommandError> {
    let token = g.token()?;
    let wait = g
        .timeout_ms
        .map_or(Duration::from_secs(30), Duration::from_millis);
    let started = Instant::now();
    loop {
        let seen = look(g, &a.stream, token.as_deref())?;
        if let Some(s) = &seen
            && (s.serving || !a.wait)
        {
            let mut out = io::stdout().lock();
            if g.json {
                let v = serde_json::json!({
                    "stream": a.stream, "node": s.node, "addr": s.addr, "term": s.term,
                    "serving": s.serving,
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "{}", s.addr)?;
            }
            return Ok(());
        }
        if !a.wait || started.elapsed() >= wait {
            return Err(CommandError::Failed(match seen {
                Some(s) => format!(
                    "stream {}: node {}'s database server {} (term {}) does not take writes yet",
                    a.stream, s.node, s.addr, s.term
                ),
                None => format!("stream {}: no database primary is known", a.stream),
            }));
        }
        std::thread::sleep(POLL);
    }
}

/// The committed roles from the first node that answers, and whether the front on
/// the stream's lockstep primary streams from that database primary.
fn look(g: &Global, stream: &str, token: Option<&str>) -> Result<Option<Seen>, CommandError> {
    let mut errors = Vec::new();
    let mut roles = None;
    for addr in g.nodes()? {
        match http(addr, "GET", "/v1/members", token, HTTP_TIMEOUT) {
            Ok(answer) if answer.status == 200 => {
                let v = answer.json().unwrap_or(Value::Null);
                roles = Some(v["config"]["streams"][stream].clone());
                break;
            }
            Ok(answer) => errors.push(answer.reason()),
            Err(e) => errors.push(e),
        }
    }
    let Some(roles) = roles else {
        return Err(CommandError::Unreachable(format!(
            "no node answered: {}",
            errors.join("; ")
        )));
    };
    let db = &roles["db"];
    let (Some(node), Some(term)) = (db["primary"].as_u64(), db["term"].as_u64()) else {
        return Ok(None);
    };
    let addr = db["members"][node.to_string()]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The fronts of every node: the one serving names the primary it streams from.
    let mut serving = false;
    for n in g.nodes()? {
        let Ok(answer) = http(n, "GET", "/v1/fronts", token, HTTP_TIMEOUT) else {
            continue;
        };
        let fronts = answer.json().unwrap_or(Value::Null);
        serving |= fronts.as_array().into_iter().flatten().any(|f| {
            f["stream"] == stream
                && f["connected"] == true
                && f["db_primary"]["term"].as_u64() == Some(term)
        });
    }
    Ok(Some(Seen {
        node,
        addr,
        term,
        serving,
    }))
}
