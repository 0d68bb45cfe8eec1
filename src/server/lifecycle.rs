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

use crate::constants::START_PROBE_WAIT_MS;
use crate::control::Request;
use crate::replication::NodeId;
use crate::server::Server;
use crate::server::admin::{Progress, members_view, switchover_check, switchover_progress};
use crate::server::config::Config;
use crate::server::control_loop::{DialError, Greeting, ToControl, dial};
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

/// Refuses to start a second process of a live node: greets every other node's
/// controller as this node, process `incarnation`, the way the control loop will,
/// before this process opens anything. A node that answers `id-in-use` has a live
/// process of this node id connected (see [`crate::server::identity`]) and logs the
/// refusal; every node is greeted (at once), so that each says so. The error is the
/// first answer's one line, "node id N is already served at ADDR ...". Nodes that are
/// down or do not answer within [`START_PROBE_WAIT_MS`] are skipped; the control
/// loop's own greetings refuse a second process that started while they were (it then
/// stops). Only with `[control]` (incarnations are the controller's).
pub fn refuse_if_running(cfg: &Config, incarnation: u64) -> Result<(), String> {
    if cfg.control.is_none() {
        return Ok(());
    }
    let me = cfg.node_id;
    // All at once: a start waits for the slowest answer, not for their sum.
    let answers: Vec<Option<String>> = std::thread::scope(|s| {
        let greetings: Vec<_> = cfg
            .nodes
            .iter()
            .filter(|n| n.id != me)
            .map(|peer| {
                s.spawn(move || {
                    let greeting = Greeting {
                        node_id: me,
                        incarnation,
                        serves: &cfg.advertise,
                        addr: &peer.addr,
                        secret: cfg.secret.as_ref(),
                        wait: Duration::from_millis(START_PROBE_WAIT_MS),
                    };
                    match dial(&greeting) {
                        Ok(sock) => {
                            let _ = sock.shutdown(std::net::Shutdown::Both);
                            None
                        }
                        Err(DialError::InUse(why)) => Some(format!(
                            "{why}, says node {} at {}; a second process with node_id = {me} \
                             is refused",
                            peer.id, peer.addr
                        )),
                        Err(_) => None,
                    }
                })
            })
            .collect();
        greetings
            .into_iter()
            .map(|g| g.join().unwrap_or(None))
            .collect()
    });
    answers.into_iter().flatten().next().map_or(Ok(()), Err)
}
