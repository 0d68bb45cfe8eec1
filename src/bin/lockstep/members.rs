//! `lockstep members` and `lockstep cluster health`: every node asked directly, with
//! the controller's view of the roles.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use clap::Subcommand;
use lockstep::demo;
use serde_json::{Value, json};

use super::http::{HTTP_TIMEOUT, http};
use super::{CommandError, EXIT_FAILED, Global};

#[derive(Subcommand)]
pub(super) enum ClusterCommand {
    /// As `members`, with a verdict: exit 0 when every node is UP and ready and every
    /// stream has a primary with its full sync set, 1 otherwise (the problems listed)
    Health,
}

/// One node as `members` shows it.
struct NodeRow {
    node: u64,
    addr: String,
    /// Its own /v1/status, if it answered.
    status: Option<Value>,
    /// What the controller last heard from it, and how long ago.
    heard: Option<(Value, u64)>,
}

impl NodeRow {
    fn stream(&self, name: &str) -> Option<Value> {
        let live = self.status.as_ref().and_then(|s| {
            s["streams"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["stream"] == name).cloned())
        });
        live.or_else(|| {
            self.heard.as_ref().and_then(|(s, _)| {
                s["streams"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["stream"] == name).cloned())
            })
        })
    }
}

/// `lockstep members` and `lockstep cluster health`.
pub(super) fn members(g: &Global, verdict: bool) -> Result<(), CommandError> {
    // The controller's view, from the first node that has one.
    let mut view: Option<(String, Value)> = None;
    let mut reached = false;
    for addr in g.nodes()? {
        match http(addr, "GET", "/v1/members", None, HTTP_TIMEOUT) {
            Ok(a) if a.status == 200 => {
                reached = true;
                if let Some(v) = a.json() {
                    view = Some((addr.clone(), v));
                    break;
                }
            }
            Ok(_) => reached = true,
            Err(_) => {}
        }
    }
    // Every node: those of the view, else those of --nodes.
    let mut rows: Vec<NodeRow> = Vec::new();
    match &view {
        Some((_, v)) => {
            for n in v["nodes"].as_array().into_iter().flatten() {
                rows.push(NodeRow {
                    node: n["node"].as_u64().unwrap_or(0),
                    addr: n["addr"].as_str().unwrap_or("").to_string(),
                    status: None,
                    heard: n["heard_ms_ago"].as_u64().map(|ms| (n.clone(), ms)),
                });
            }
        }
        None => {
            for addr in g.nodes()? {
                rows.push(NodeRow {
                    node: 0,
                    addr: addr.clone(),
                    status: None,
                    heard: None,
                });
            }
        }
    }
    for row in &mut rows {
        if let Ok(a) = http(&row.addr, "GET", "/v1/status", None, Duration::from_secs(2))
            && a.status == 200
        {
            row.status = a.json();
            reached = true;
            if row.node == 0 {
                row.node = row
                    .status
                    .as_ref()
                    .and_then(|s| s["node"].as_u64())
                    .unwrap_or(0);
            }
        }
    }
    if !reached {
        return Err(CommandError::Unreachable(format!(
            "no node of {} answered",
            g.nodes.join(",")
        )));
    }
    // The streams: from the view's configuration, else from what the nodes said.
    let mut streams: BTreeMap<String, Value> = BTreeMap::new();
    if let Some((_, v)) = &view {
        for (name, roles) in v["config"]["streams"].as_object().into_iter().flatten() {
            streams.insert(name.clone(), roles.clone());
        }
    } else {
        for row in &rows {
            for s in row
                .status
                .as_ref()
                .and_then(|s| s["streams"].as_array().cloned())
                .unwrap_or_default()
            {
                let name = s["stream"].as_str().unwrap_or("").to_string();
                let e = streams.entry(name).or_insert_with(|| json!({}));
                if s["role"] == "primary" {
                    e["primary"] = json!(row.node);
                    e["epoch"] = s["epoch"].clone();
                }
            }
        }
    }
    let mut problems = Vec::new();
    let mut out_streams = Vec::new();
    for (name, roles) in &streams {
        let primary = roles["primary"].as_u64();
        let primary_last = rows
            .iter()
            .find(|r| Some(r.node) == primary)
            .and_then(|r| r.stream(name))
            .and_then(|s| s["last_lsn"].as_u64());
        let mut nodes = Vec::new();
        for r in &rows {
            let s = r.stream(name);
            let up = r.status.is_some();
            let role = if Some(r.node) == primary {
                "primary"
            } else if roles["sync_set"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_u64() == Some(r.node)))
            {
                "sync"
            } else if roles["learners"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_u64() == Some(r.node)))
            {
                "learner"
            } else if s.is_some() {
                "member"
            } else {
                "-"
            };
            let field = |k: &str| s.as_ref().and_then(|s| s[k].as_u64());
            let lag = match (primary_last, field("durable_lsn")) {
                (Some(p), Some(d)) => Some(p.saturating_sub(d)),
                _ => None,
            };
            if !up {
                problems.push(format!("node {} ({}) is DOWN", r.node, r.addr));
            }
            nodes.push(json!({
                "node": r.node,
                "addr": r.addr,
                "up": up,
                "ready": r.status.as_ref().map(|s| s["ready"].clone()),
                "role": role,
                "epoch": field("epoch"),
                "durable_lsn": field("durable_lsn"),
                "commit_lsn": field("commit_lsn"),
                "lag": lag,
                // The node's own answer is live; a DOWN node's numbers are what the
                // controller heard from it this long ago.
                "as_of_ms": if up { Some(0) } else { r.heard.as_ref().map(|(_, ms)| *ms) },
            }));
        }
        match primary {
            None => problems.push(format!("stream {name}: no primary")),
            Some(p) if !rows.iter().any(|r| r.node == p && r.status.is_some()) => problems.push(
                format!("stream {name}: its primary, node {p}, does not answer"),
            ),
            _ => {}
        }
        if roles["degraded"].as_bool() == Some(true) {
            problems.push(format!(
                "stream {name}: DEGRADED (committing on the primary alone)"
            ));
        }
        if roles["learners"].as_array().is_some_and(|l| !l.is_empty()) {
            problems.push(format!(
                "stream {name}: learners {} are not in the sync set",
                roles["learners"]
            ));
        }
        out_streams.push(json!({
            "stream": name,
            "epoch": roles["epoch"],
            "primary": primary,
            "sync_set": roles["sync_set"],
            "learners": roles["learners"],
            "degraded": roles["degraded"].as_bool().unwrap_or(false),
            "db": roles["db"],
            "nodes": nodes,
        }));
    }
    for r in rows
        .iter()
        .filter(|r| r.status.as_ref().is_some_and(|s| s["ready"] == false))
    {
        for why in r
            .status
            .as_ref()
            .and_then(|s| s["not_ready"].as_array().cloned())
            .unwrap_or_default()
        {
            problems.push(format!(
                "node {} not ready: {}",
                r.node,
                why.as_str().unwrap_or("")
            ));
        }
    }
    problems.dedup();
    let healthy = problems.is_empty();
    let (leader, term, from, age) = match &view {
        Some((addr, v)) => (
            v["leader"].clone(),
            v["term"].clone(),
            Some(addr.clone()),
            v["age_ms"].as_u64(),
        ),
        None => (Value::Null, Value::Null, None, None),
    };
    let mut out = io::stdout().lock();
    if g.json {
        let v = json!({
            "controller": view.as_ref().map(|_| json!({"leader": leader, "term": term, "view_from": from, "view_age_ms": age})),
            "streams": out_streams,
            "healthy": healthy,
            "problems": problems,
        });
        writeln!(out, "{v}")?;
    } else {
        match &view {
            Some(_) => writeln!(
                out,
                "controller leader: {} (term {term}); roles as {} published them {} ms ago",
                leader
                    .as_u64()
                    .map_or("none".to_string(), |l| format!("node {l}")),
                from.as_deref().unwrap_or("?"),
                age.unwrap_or(0)
            )?,
            None => writeln!(
                out,
                "no controller (static cluster): roles as the nodes report them"
            )?,
        }
        for s in &out_streams {
            writeln!(
                out,
                "stream {}: epoch {}, primary {}, sync set {}, learners {}{}",
                s["stream"].as_str().unwrap_or(""),
                s["epoch"],
                s["primary"],
                s["sync_set"],
                s["learners"],
                if s["degraded"] == true {
                    ", DEGRADED"
                } else {
                    ""
                }
            )?;
            if let Some(p) = s["db"]["primary"].as_u64() {
                writeln!(
                    out,
                    "  database primary: node {p}'s {} (term {}); members {}",
                    s["db"]["members"][p.to_string()].as_str().unwrap_or("?"),
                    s["db"]["term"],
                    s["db"]["members"]
                )?;
            }
            let mut table = vec![
                [
                    "node", "addr", "state", "role", "epoch", "durable", "commit", "lag",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            for n in s["nodes"].as_array().into_iter().flatten() {
                let show = |k: &str| n[k].as_u64().map_or("-".to_string(), |v| v.to_string());
                let state = match (n["up"].as_bool(), n["ready"].as_bool()) {
                    (Some(true), Some(true)) => "UP".to_string(),
                    (Some(true), _) => "UP, not ready".to_string(),
                    _ => match n["as_of_ms"].as_u64() {
                        Some(ms) => format!("DOWN (heard {ms} ms ago)"),
                        None => "DOWN".to_string(),
                    },
                };
                table.push(vec![
                    show("node"),
                    n["addr"].as_str().unwrap_or("").to_string(),
                    state,
                    n["role"].as_str().unwrap_or("-").to_string(),
                    show("epoch"),
                    show("durable_lsn"),
                    show("commit_lsn"),
                    show("lag"),
                ]);
            }
            write!(out, "{}", demo::markdown_table(&table))?;
        }
        if verdict {
            if healthy {
                writeln!(out, "healthy: yes")?;
            } else {
                writeln!(out, "healthy: no")?;
                for p in &problems {
                    writeln!(out, "  {p}")?;
                }
            }
        }
    }
    out.flush()?;
    if verdict && !healthy {
        return Err(CommandError::Exit(EXIT_FAILED));
    }
    Ok(())
}
