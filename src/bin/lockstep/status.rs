//! `lockstep status`: a stream's state as its primary sees it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Duration;

use clap::Args;
use lockstep::client::{Client, ClientOptions};
use lockstep::demo;
use lockstep::server::metrics::PHASES;
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::first_answer;
use super::read::node_text;
use super::{CommandError, Global, Target};

#[derive(Args)]
pub(super) struct StatusArgs {
    #[command(flatten)]
    target: Target,
}

/// A stream's status from `addr`, with the node that answered.
pub(super) fn status_of(g: &Global, stream: &str, addr: &str) -> Option<(Value, String)> {
    let options = ClientOptions {
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        ..ClientOptions::default()
    };
    let _ = g;
    let mut c = Client::connect(&[addr], stream, options).ok()?;
    let v = c.status().ok()?;
    Some((v, node_text(&c)))
}

/// `lockstep status`: the primary's view when a primary answers, else the first
/// node's own view with a note.
pub(super) fn status(g: &Global, a: &StatusArgs) -> Result<(), CommandError> {
    let nodes = g.nodes()?;
    let mut first: Option<(Value, String)> = None;
    let mut primary: Option<(Value, String)> = None;
    let mut tried = Vec::new();
    for addr in nodes {
        tried.push(addr.clone());
        if let Some((v, node)) = status_of(g, &a.target.stream, addr) {
            let is_primary = v["role"] == "primary";
            if first.is_none() {
                first = Some((v.clone(), node.clone()));
            }
            if is_primary {
                primary = Some((v, node));
                break;
            }
        }
    }
    // The controller knows where the primary is, when --nodes does not list it.
    if primary.is_none()
        && let Ok((_, answer)) = first_answer(g, "/v1/members")
        && let Some(view) = answer.json()
        && let Some(p) = view["config"]["streams"][&a.target.stream]["primary"].as_u64()
        && let Some(addr) = view["config"]["members"][p.to_string()].as_str()
        && !tried.iter().any(|t| t == addr)
    {
        primary = status_of(g, &a.target.stream, addr);
    }
    let (v, node, own_view) = match (primary, first) {
        (Some((v, node)), _) => (v, node, false),
        (None, Some((v, node))) => (v, node, true),
        (None, None) => {
            // Say why with the client's own error.
            a.target.connect(g)?;
            return Err(CommandError::Unreachable("no node answered".into()));
        }
    };
    let mut out = io::stdout().lock();
    if g.json {
        let mut v = v;
        v["primary_view"] = json!(!own_view);
        writeln!(out, "{v}")?;
    } else {
        let mut text = match StatusView::deserialize(&v) {
            Ok(view) => view.text(&node),
            // A node of another version: show what it said rather than nothing.
            Err(e) => format!(
                "status{node} in an unknown shape ({e}):\n{}\n",
                serde_json::to_string_pretty(&v).expect("a JSON value serializes")
            ),
        };
        if own_view {
            text.push_str(
                "\nnote: no primary of this stream answered; this is the answering node's \
                 own view (its log positions are current, the members' are the primary's \
                 to know)\n",
            );
        }
        out.write_all(text.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// The status reply of a node (see `lockstep::server::metrics`), as far as it is shown.
#[derive(Deserialize, Default)]
#[serde(default)]
struct StatusView {
    stream: String,
    role: String,
    mode: String,
    epoch: u64,
    last_lsn: u64,
    durable_lsn: u64,
    commit_lsn: u64,
    commits: u64,
    commit_bytes: u64,
    in_doubt: u64,
    events: u64,
    degraded: bool,
    failure: Option<String>,
    /// A secondary's link from its primary.
    transport: String,
    members: Vec<MemberView>,
    latency: BTreeMap<String, PhaseView>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MemberView {
    id: u64,
    in_sync: bool,
    connected: bool,
    received_lsn: u64,
    durable_lsn: u64,
    lag: u64,
    transport: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PhaseView {
    count: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

impl StatusView {
    fn text(&self, node: &str) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
        let mut t = format!("stream {}{node}\n", self.stream);
        let _ = writeln!(
            t,
            "role      {}, epoch {}, mode {}",
            self.role, self.epoch, self.mode
        );
        let _ = writeln!(
            t,
            "lsns      last {}, durable {}, commit {}",
            self.last_lsn, self.durable_lsn, self.commit_lsn
        );
        // Commits, the sync set and latency are the primary's to know.
        if self.role == "primary" {
            let _ = writeln!(
                t,
                "commits   {} ({}), in doubt {}",
                self.commits,
                bytes_text(self.commit_bytes),
                self.in_doubt
            );
            let in_sync = self.members.iter().filter(|m| m.in_sync).count();
            let _ = writeln!(
                t,
                "sync set  {in_sync} of {} members in sync, {}, {} recorded changes",
                self.members.len(),
                if self.degraded {
                    "DEGRADED (committing without the sync set)"
                } else {
                    "not degraded"
                },
                self.events
            );
        }
        let _ = writeln!(t, "failure   {}", self.failure.as_deref().unwrap_or("none"));
        if self.role != "primary" && !self.transport.is_empty() {
            let _ = writeln!(
                t,
                "transport {} (the link from the primary)",
                self.transport
            );
        }
        if !self.members.is_empty() {
            let mut rows = vec![
                [
                    "member",
                    "in sync",
                    "connected",
                    "received lsn",
                    "durable lsn",
                    "lag",
                    "transport",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            for m in &self.members {
                rows.push(vec![
                    m.id.to_string(),
                    yes(m.in_sync),
                    yes(m.connected),
                    m.received_lsn.to_string(),
                    m.durable_lsn.to_string(),
                    m.lag.to_string(),
                    m.transport.clone(),
                ]);
            }
            t.push('\n');
            t += &demo::markdown_table(&rows);
        }
        let measured = |p: &&PhaseView| p.count > 0;
        if self.latency.values().any(|p| measured(&p)) {
            let mut rows = vec![
                [
                    "commit latency",
                    "count",
                    "p50 µs",
                    "p99 µs",
                    "p99.9 µs",
                    "max µs",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            // The phases in the order a commit goes through them.
            let known = PHASES.map(|p| p.as_str());
            let others = self.latency.keys().map(String::as_str);
            let names = known
                .into_iter()
                .chain(others.filter(|k| !known.contains(k)));
            for name in names {
                let Some(p) = self.latency.get(name) else {
                    continue;
                };
                rows.push(vec![
                    name.replace('_', " "),
                    p.count.to_string(),
                    p.p50_us.to_string(),
                    p.p99_us.to_string(),
                    p.p999_us.to_string(),
                    p.max_us.to_string(),
                ]);
            }
            t.push('\n');
            t += &demo::markdown_table(&rows);
        }
        t
    }
}

fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
