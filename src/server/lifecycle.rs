//! What a running node does when asked to change: SIGHUP reloads what can change
//! without a restart ([`Server::reload`]); SIGTERM on a primary first hands the role
//! to a caught-up sync member ([`Server::hand_off`]), so that a planned restart costs
//! a switchover (tens of milliseconds of refused appends) rather than a failover
//! timeout.
//!
//! Reloadable: `log_level` and the admin token (`admin_token_file`, or the cluster
//! secret's token). Everything else needs a restart; a reload names each such key
//! that changed and keeps running with the old value.

use std::time::{Duration, Instant};

use crate::control::Request;
use crate::replication::NodeId;
use crate::server::Server;
use crate::server::admin::{Progress, members_view, switchover_check, switchover_progress};
use crate::server::config::Config;
use crate::server::control_loop::ToControl;
use crate::server::logging::LogHandle;

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Changes applied.
    pub applied: Vec<String>,
    /// Keys that changed in the file but need a restart.
    pub restart_needed: Vec<&'static str>,
}

/// How one stream's hand-off ended.
#[derive(Debug, PartialEq, Eq)]
pub struct HandOff {
    pub stream: String,
    /// The node that took the role, and how long it took.
    pub outcome: Result<(NodeId, Duration), String>,
}

impl Server {
    /// Applies what can change while the node runs from `new` (read again from the
    /// same file), compared with `old`.
    pub fn reload(&self, old: &Config, new: &Config, log: Option<&LogHandle>) -> Reloaded {
        let mut r = Reloaded::default();
        if let Some(log) = log {
            match log.set_filter(new.log_level.as_deref()) {
                Ok(true) => r.applied.push(format!(
                    "log_level = {}",
                    new.log_level
                        .as_deref()
                        .unwrap_or(crate::server::logging::DEFAULT_FILTER)
                )),
                Ok(false) => {}
                Err(e) => r.applied.push(format!("log_level not changed: {e}")),
            }
        }
        let token = new.admin_token();
        let mut current = self.admin_state().token.write().expect("token lock");
        if *current != token {
            *current = token;
            r.applied.push("admin token".to_string());
        }
        drop(current);
        let checks: [(&'static str, bool); 12] = [
            ("node_id", old.node_id != new.node_id),
            ("data_dir", old.data_dir != new.data_dir),
            ("listen", old.listen != new.listen),
            ("admin", old.admin != new.admin),
            ("shards", old.shards != new.shards),
            (
                "profile",
                format!("{:?}", old.profile) != format!("{:?}", new.profile),
            ),
            ("nodes", old.nodes != new.nodes),
            ("streams", old.streams != new.streams),
            ("control", old.control != new.control),
            (
                "secret_file",
                old.secret.as_ref().map(|s| s.admin_token())
                    != new.secret.as_ref().map(|s| s.admin_token()),
            ),
            ("join", old.join != new.join),
            ("advertise", old.advertise != new.advertise),
        ];
        r.restart_needed = checks
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(k, _)| k)
            .collect();
        r
    }

    /// Moves the primary role of every stream this node leads to a caught-up sync
    /// member (a switchover through the controller), waiting at most `within` in all.
    /// Streams without a controller, or without a member to take over, are reported
    /// and left as they are.
    pub fn hand_off(&self, within: Duration) -> Vec<HandOff> {
        let me = self.node_id();
        let deadline = Instant::now() + within;
        let leading: Vec<_> = self
            .metrics()
            .into_iter()
            .filter(|s| s.role == "primary")
            .collect();
        let mut done = Vec::new();
        let Some(control) = self.admin_state().control.clone() else {
            for s in leading {
                done.push(HandOff {
                    stream: s.stream,
                    outcome: Err("no [control] section: nobody can take over".into()),
                });
            }
            return done;
        };
        // (stream, target, epoch asked in, started, last asked)
        let mut pending = Vec::new();
        for s in leading {
            let Some(view) = members_view(&self.shared) else {
                done.push(HandOff {
                    stream: s.stream,
                    outcome: Err("the controller has not published its view".into()),
                });
                continue;
            };
            if view["config"]["streams"][&s.stream]["primary"].as_u64() != Some(u64::from(me)) {
                continue;
            }
            // The member whose log ends highest, among those in sync and connected.
            let target = s
                .members
                .iter()
                .filter(|m| m.in_sync && m.connected)
                .max_by_key(|m| (m.durable_lsn, std::cmp::Reverse(m.id)))
                .map(|m| m.id);
            let Some(target) = target else {
                done.push(HandOff {
                    stream: s.stream,
                    outcome: Err("no connected sync member to take over".into()),
                });
                continue;
            };
            match switchover_check(&view, &s.stream, target) {
                Ok(epoch) => {
                    pending.push((s.stream, target, epoch, Instant::now(), None::<Instant>))
                }
                Err((_, why)) => done.push(HandOff {
                    stream: s.stream,
                    outcome: Err(why),
                }),
            }
        }
        // Without a controller leader nothing can move (the other nodes are stopping
        // too, or unreachable): give up after a second of that rather than wait out
        // `within`.
        let mut leaderless_since: Option<Instant> = None;
        while !pending.is_empty() {
            let view = members_view(&self.shared);
            let leaderless = view.as_ref().is_none_or(|v| v["leader"].is_null());
            if !leaderless {
                leaderless_since = None;
            } else if leaderless_since.get_or_insert_with(Instant::now).elapsed()
                >= Duration::from_secs(1)
            {
                for (stream, ..) in pending.drain(..) {
                    done.push(HandOff {
                        stream,
                        outcome: Err(
                            "the controller has no leader (are the other nodes stopping?)".into(),
                        ),
                    });
                }
                break;
            }
            pending.retain_mut(|(stream, to, epoch0, started, asked)| {
                if let Some(v) = &view {
                    match switchover_progress(v, stream, *to, *epoch0) {
                        Progress::Done { .. } => {
                            done.push(HandOff {
                                stream: stream.clone(),
                                outcome: Ok((*to, started.elapsed())),
                            });
                            return false;
                        }
                        Progress::Lost { primary, .. } => {
                            done.push(HandOff {
                                stream: stream.clone(),
                                outcome: Ok((primary as NodeId, started.elapsed())),
                            });
                            return false;
                        }
                        Progress::Pending { .. } => {}
                    }
                }
                if Instant::now() >= deadline {
                    done.push(HandOff {
                        stream: stream.clone(),
                        outcome: Err(format!(
                            "node {to} did not take over within {} ms",
                            within.as_millis()
                        )),
                    });
                    return false;
                }
                if asked.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
                    *asked = Some(Instant::now());
                    let _ = control.try_send(ToControl::Request(Request::Switchover {
                        stream: stream.clone(),
                        to: *to,
                    }));
                }
                true
            });
            std::thread::sleep(Duration::from_millis(5));
        }
        done
    }
}

/// How long a refreshed status counts as a live process: the controller's statuses
/// come every 20 ms; a dead node's age only grows.
const PROBE_AGAIN_AFTER: Duration = Duration::from_millis(200);

/// What one peer said of this node id: (how long ago it heard it, the incarnation).
fn heard_of(peer: &str, node: NodeId, query: &str) -> Option<(u64, u64)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(500)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(format!("http://{peer}/v1/members?{query}"))
        .call()
        .ok()?;
    if r.status().as_u16() != 200 {
        return None;
    }
    let view: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
    let me = view["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"].as_u64() == Some(u64::from(node)))?;
    Some((me["heard_ms_ago"].as_u64()?, me["incarnation"].as_u64()?))
}

/// Refuses to start a node whose id another live process holds: asks the other
/// nodes' controllers when they last heard from this node id, twice; a status that
/// keeps coming is another process (a node that crashed or stopped is heard less and
/// less recently). The peer that saw it is asked once more, so that it logs the
/// refusal on its side too. Only with `[control]` (statuses are the controller's).
pub fn refuse_if_running(cfg: &Config) -> Result<(), String> {
    let Some(control) = &cfg.control else {
        return Ok(());
    };
    let live_within = 3 * control.failover_timeout_ms;
    let me = cfg.node_id;
    for peer in cfg.nodes.iter().filter(|n| n.id != me) {
        let Some((first, _)) = heard_of(&peer.addr, me, "") else {
            continue;
        };
        if first >= live_within {
            continue;
        }
        std::thread::sleep(PROBE_AGAIN_AFTER);
        let Some((again, incarnation)) = heard_of(&peer.addr, me, "") else {
            continue;
        };
        let refreshed = again < first + PROBE_AGAIN_AFTER.as_millis() as u64 / 2;
        if refreshed && again < live_within {
            let _ = heard_of(&peer.addr, me, &format!("duplicate_of={me}"));
            return Err(format!(
                "node {me} is already running: node {} heard from it {again} ms ago \
                 (incarnation {incarnation}); a second process with node_id = {me} is refused",
                peer.id
            ));
        }
    }
    Ok(())
}
