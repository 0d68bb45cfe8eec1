//! `lockstep switchover`: move a stream's primary role through the controller.

use std::io::{self, Write};
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::http::{HTTP_TIMEOUT, http};
use super::{CommandError, Global};

#[derive(Args)]
pub(super) struct SwitchoverArgs {
    /// The stream whose primary role moves
    #[arg(long, value_name = "NAME")]
    stream: String,
    /// The node to become primary (a member of the stream's sync set); with `--db`,
    /// the node whose database server becomes the database primary
    #[arg(long, value_name = "NODE")]
    to: u32,
    /// Move the database primary of the stream's front instead: fence it, wait until
    /// the stream and the target hold all it committed, promote the target
    #[arg(long)]
    db: bool,
}

/// `lockstep switchover`.
pub(super) fn switchover(g: &Global, a: &SwitchoverArgs) -> Result<(), CommandError> {
    let token = g.token()?;
    let wait = g
        .timeout_ms
        .map_or(Duration::from_secs(10), Duration::from_millis);
    let path = format!(
        "/v1/switchover?stream={}&to={}&timeout_ms={}{}",
        a.stream,
        a.to,
        wait.as_millis(),
        if a.db { "&db=1" } else { "" }
    );
    let mut errors = Vec::new();
    for addr in g.nodes()? {
        let answer = match http(addr, "POST", &path, token.as_deref(), wait + HTTP_TIMEOUT) {
            Ok(answer) => answer,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        return match answer.status {
            200 => {
                let v = answer.json().unwrap_or(Value::Null);
                let mut out = io::stdout().lock();
                if g.json {
                    writeln!(out, "{v}")?;
                } else if a.db {
                    writeln!(
                        out,
                        "stream {}: node {}'s database server is the database primary; writes \
                         were refused for {:.1} ms",
                        a.stream,
                        a.to,
                        v["fenced_ms"].as_f64().unwrap_or(0.0)
                    )?;
                } else {
                    writeln!(
                        out,
                        "stream {}: node {} is the primary (epoch {}, was node {}), after {} ms",
                        a.stream, a.to, v["epoch"], v["from"], v["took_ms"]
                    )?;
                }
                Ok(())
            }
            400 => Err(CommandError::Usage(answer.reason())),
            401 | 403 => Err(CommandError::Failed(answer.reason())),
            _ => Err(CommandError::Failed(answer.reason())),
        };
    }
    Err(CommandError::Unreachable(format!(
        "no node answered: {}",
        errors.join("; ")
    )))
}
