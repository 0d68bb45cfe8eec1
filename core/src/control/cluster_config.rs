//! The cluster configuration the controller agrees on, and the commands that change it.
//!
//! Every voting node applies the same committed commands in the same order, so every
//! node computes the same configuration. A command carries the epoch it was decided in
//! and is applied only if that epoch is still current (compare-and-set): a decision
//! taken by a leader that has since been replaced, or a removal asked for by a primary
//! that has since been fenced, is refused by every node alike instead of being applied
//! on top of a newer configuration.
//!
//! Invariants kept by [`ClusterConfig::apply`]:
//! - A stream's epoch only grows, and grows on every change of primary.
//! - The primary is never in its own sync set or learners; a node is never both a
//!   sync-set member and a learner.
//! - With `on_insufficient = block`, a removal never shrinks the sync set below
//!   `min_sync`; with `degrade` it may, and the stream is then marked degraded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::control::error::{ControlError, Refusal};
use crate::replication::{Mode, NodeId, OnInsufficient, StreamSettings};

/// What the controller needs to know of a stream's settings to decide failovers and
/// removals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// `strong`, `semi` or `async`.
    pub mode: String,
    /// `k`: acks needed from the sync set; `None` means every member.
    pub sync_acks: Option<usize>,
    pub min_sync: usize,
    /// `on_insufficient = degrade`.
    pub degrade: bool,
    /// The rest of the stream's settings, so that a node that joins the cluster runs
    /// the stream as the others do.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_ticks: u64,
    #[serde(default = "default_window")]
    pub window_records: u64,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    #[serde(default)]
    pub retain_segments: Option<usize>,
}

fn default_ack_timeout() -> u64 {
    StreamSettings::default().ack_timeout_ticks
}

fn default_window() -> u64 {
    StreamSettings::default().window_records
}

fn default_request_timeout() -> u64 {
    5000
}

impl Policy {
    pub fn of(settings: &StreamSettings, request_timeout_ms: u64) -> Policy {
        Policy {
            mode: settings.mode.as_str().to_string(),
            sync_acks: settings.sync_acks,
            min_sync: settings.min_sync,
            degrade: settings.on_insufficient == OnInsufficient::Degrade,
            ack_timeout_ticks: settings.ack_timeout_ticks,
            window_records: settings.window_records,
            request_timeout_ms,
            retain_segments: None,
        }
    }

    /// The stream settings this policy describes.
    pub fn settings(&self) -> StreamSettings {
        StreamSettings {
            mode: self.mode.parse().unwrap_or(Mode::Strong),
            sync_acks: self.sync_acks,
            min_sync: self.min_sync,
            on_insufficient: if self.degrade {
                OnInsufficient::Degrade
            } else {
                OnInsufficient::Block
            },
            ack_timeout_ticks: self.ack_timeout_ticks,
            window_records: self.window_records,
        }
    }

    /// `k` for a sync set of `members`: 0 when commits do not wait for the sync set.
    pub fn k(&self, members: usize) -> usize {
        if self.mode == Mode::Async.as_str() {
            return 0;
        }
        self.sync_acks.unwrap_or(members).min(members)
    }
}

/// The roles of one stream in one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRoles {
    pub epoch: u64,
    pub primary: NodeId,
    /// The process (incarnation) of the primary node that holds the role; 0 before any
    /// process was promoted. A primary that restarts is a new incarnation and does not
    /// inherit the role: it is fenced and promoted again in a newer epoch, so that an
    /// (epoch, LSN) pair names one record forever.
    pub incarnation: u64,
    pub sync_set: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// The sync set shrank below `min_sync` under `degrade`: commits wait for the
    /// primary alone.
    pub degraded: bool,
    pub policy: Policy,
    /// Changes applied to these roles. A removal or restore is decided on one version
    /// and applies only to it: a request overtaken by any other change is refused, so
    /// the primary that asked can reason about its members again from the new roles.
    #[serde(default)]
    pub version: u64,
    /// Where the primary's log ended when it was promoted (epoch of the last record,
    /// LSN): everything committed before this epoch lies within it. Until the primary
    /// has copied it to its members, only a node whose log reaches it can take over, so
    /// a failover waits for one rather than promote a shorter log.
    #[serde(default)]
    pub floor: (u64, u64),
    /// The database servers of a stream with a front, and which one is the primary.
    #[serde(default)]
    pub db: Option<DbRoles>,
}

/// The database roles of a stream with a front: one MariaDB server beside each member
/// node, one of them the database primary (the one the front replicates and ACKs).
///
/// The primary changes only by a committed [`Command::DbPromote`], decided on the
/// current `term`: a front ACKs only the primary of the term it reads, so once a new
/// term is committed no commit on the former primary can return OK any more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbRoles {
    /// node → the `host:port` of the MariaDB server beside it.
    pub members: BTreeMap<NodeId, String>,
    /// The node whose MariaDB server is the database primary.
    pub primary: NodeId,
    /// Grows by one on every change of the database primary.
    pub term: u64,
}

impl DbRoles {
    /// The database primary's address.
    pub fn primary_addr(&self) -> &str {
        self.members.get(&self.primary).map_or("", String::as_str)
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Raft index of the last command applied.
    pub version: u64,
    /// Every node with its address, voters and learners of the controller alike.
    pub members: BTreeMap<NodeId, String>,
    /// The controller's voting nodes.
    pub voters: Vec<NodeId>,
    pub streams: BTreeMap<String, StreamRoles>,
}

/// A change of the configuration, decided by the controller's leader (or asked for by
/// a primary) and applied by every node once committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Makes `primary` (process `incarnation`) the primary of `stream` in `epoch`,
    /// replacing the configuration of epoch `from_epoch`.
    Promote {
        stream: String,
        from_epoch: u64,
        epoch: u64,
        primary: NodeId,
        incarnation: u64,
        sync_set: Vec<NodeId>,
        learners: Vec<NodeId>,
        /// The new primary's log end (epoch of its last record, LSN).
        floor: (u64, u64),
    },
    /// Moves a stalled sync-set member to the learners (asked by the primary of
    /// `epoch`, which waits for this change before committing without the member).
    Remove {
        stream: String,
        epoch: u64,
        version: u64,
        member: NodeId,
    },
    /// Moves a learner that holds everything committed back into the sync set.
    Restore {
        stream: String,
        epoch: u64,
        version: u64,
        member: NodeId,
    },
    /// Adds a node that proved it knows the cluster secret, as a learner of every
    /// stream.
    Join { node: NodeId, addr: String },
    /// Makes the database server beside `primary` the database primary of `stream`,
    /// replacing the one of term `from_term`, decided on the stream's position as its
    /// lockstep primary of `epoch` stated it (a newer epoch may have committed more).
    DbPromote {
        stream: String,
        epoch: u64,
        from_term: u64,
        primary: NodeId,
    },
}

impl Command {
    /// The stream a command is about, if any.
    pub fn stream(&self) -> Option<&str> {
        match self {
            Command::Promote { stream, .. }
            | Command::Remove { stream, .. }
            | Command::Restore { stream, .. }
            | Command::DbPromote { stream, .. } => Some(stream),
            Command::Join { .. } => None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("commands always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, ControlError> {
        serde_json::from_slice(bytes).map_err(|e| ControlError::decode("controller command", e))
    }
}

impl ClusterConfig {
    /// The configuration every node starts from: the one of the configuration files.
    pub fn genesis(
        members: BTreeMap<NodeId, String>,
        voters: Vec<NodeId>,
        streams: BTreeMap<String, StreamRoles>,
    ) -> ClusterConfig {
        ClusterConfig {
            version: 0,
            members,
            voters,
            streams,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("configurations always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<ClusterConfig, ControlError> {
        serde_json::from_slice(bytes).map_err(|e| ControlError::decode("cluster configuration", e))
    }

    /// Applies a committed command at raft index `index`. A command whose precondition
    /// no longer holds is refused (the configuration is unchanged) with the reason.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Result<(), Refusal> {
        assert!(index > self.version, "commands apply in raft order");
        let result = self.apply_inner(cmd);
        self.version = index;
        result
    }

    fn apply_inner(&mut self, cmd: &Command) -> Result<(), Refusal> {
        match cmd {
            Command::Promote {
                stream,
                from_epoch,
                epoch,
                primary,
                incarnation,
                sync_set,
                learners,
                floor,
            } => {
                let roles = self.stream_mut(stream)?;
                if roles.epoch != *from_epoch {
                    return Err(Refusal::StalePromotion {
                        stream: stream.clone(),
                        from_epoch: *from_epoch,
                        now: roles.epoch,
                    });
                }
                assert!(epoch > from_epoch, "a promotion moves to a newer epoch");
                assert!(!sync_set.contains(primary));
                assert!(!learners.contains(primary));
                assert!(sync_set.iter().all(|m| !learners.contains(m)));
                roles.epoch = *epoch;
                roles.primary = *primary;
                roles.incarnation = *incarnation;
                roles.sync_set = sync_set.clone();
                roles.learners = learners.clone();
                let min_sync = roles.policy.min_sync;
                roles.degraded = roles.policy.degrade && sync_set.len() < min_sync;
                roles.floor = (*floor).max(roles.floor);
                roles.version += 1;
                Ok(())
            }
            Command::Remove {
                stream,
                epoch,
                version,
                member,
            } => {
                let roles = self.current(stream, "removal from", *epoch, *version)?;
                let Some(at) = roles.sync_set.iter().position(|m| m == member) else {
                    return Err(Refusal::NotInSyncSet {
                        member: *member,
                        stream: stream.clone(),
                    });
                };
                let left = roles.sync_set.len() - 1;
                if left < roles.policy.min_sync && !roles.policy.degrade {
                    return Err(Refusal::BelowMinSync {
                        member: *member,
                        left,
                        stream: stream.clone(),
                        min_sync: roles.policy.min_sync,
                    });
                }
                roles.sync_set.remove(at);
                roles.learners.push(*member);
                roles.learners.sort_unstable();
                roles.degraded = left < roles.policy.min_sync;
                roles.version += 1;
                Ok(())
            }
            Command::Restore {
                stream,
                epoch,
                version,
                member,
            } => {
                let roles = self.current(stream, "restore to", *epoch, *version)?;
                let Some(at) = roles.learners.iter().position(|m| m == member) else {
                    return Err(Refusal::NotALearner {
                        member: *member,
                        stream: stream.clone(),
                    });
                };
                roles.learners.remove(at);
                roles.sync_set.push(*member);
                roles.sync_set.sort_unstable();
                roles.degraded = roles.sync_set.len() < roles.policy.min_sync;
                roles.version += 1;
                Ok(())
            }
            Command::Join { node, addr } => {
                if let Some(known) = self.members.get(node) {
                    if known == addr {
                        return Ok(());
                    }
                    return Err(Refusal::AlreadyMember {
                        node: *node,
                        known: known.clone(),
                        addr: addr.clone(),
                    });
                }
                self.members.insert(*node, addr.clone());
                for roles in self.streams.values_mut() {
                    roles.learners.push(*node);
                    roles.learners.sort_unstable();
                    roles.version += 1;
                }
                Ok(())
            }
            Command::DbPromote {
                stream,
                epoch,
                from_term,
                primary,
            } => {
                let roles = self.stream_mut(stream)?;
                if roles.epoch != *epoch {
                    return Err(Refusal::StalePromotion {
                        stream: stream.clone(),
                        from_epoch: *epoch,
                        now: roles.epoch,
                    });
                }
                let Some(db) = roles.db.as_mut() else {
                    return Err(Refusal::NoDatabase(stream.clone()));
                };
                if db.term != *from_term {
                    return Err(Refusal::StaleDbPromotion {
                        stream: stream.clone(),
                        from_term: *from_term,
                        now: db.term,
                    });
                }
                if !db.members.contains_key(primary) {
                    return Err(Refusal::NotADbMember {
                        node: *primary,
                        stream: stream.clone(),
                    });
                }
                db.primary = *primary;
                db.term += 1;
                Ok(())
            }
        }
    }

    /// The roles of `stream`, if a request decided on (`epoch`, `version`) still
    /// applies to them.
    fn current(
        &mut self,
        stream: &str,
        what: &'static str,
        epoch: u64,
        version: u64,
    ) -> Result<&mut StreamRoles, Refusal> {
        let roles = self.stream_mut(stream)?;
        if roles.epoch != epoch || roles.version != version {
            return Err(Refusal::Stale {
                what,
                stream: stream.to_string(),
                epoch,
                version,
                now_epoch: roles.epoch,
                now_version: roles.version,
            });
        }
        Ok(roles)
    }

    fn stream_mut(&mut self, stream: &str) -> Result<&mut StreamRoles, Refusal> {
        self.streams
            .get_mut(stream)
            .ok_or_else(|| Refusal::UnknownStream(stream.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClusterConfig {
        let roles = StreamRoles {
            epoch: 3,
            primary: 1,
            incarnation: 7,
            sync_set: vec![2, 3],
            learners: vec![],
            degraded: false,
            policy: Policy::of(&StreamSettings::default(), 5000),
            version: 0,
            floor: (0, 0),
            db: Some(DbRoles {
                members: (1..=3)
                    .map(|n| (n, format!("127.0.0.1:{}", 3300 + n)))
                    .collect(),
                primary: 1,
                term: 0,
            }),
        };
        ClusterConfig::genesis(
            (1..=3)
                .map(|n| (n, format!("127.0.0.1:{}", 7000 + n)))
                .collect(),
            vec![1, 2, 3],
            [("s".to_string(), roles)].into(),
        )
    }

    fn remove(epoch: u64, version: u64, member: NodeId) -> Command {
        Command::Remove {
            stream: "s".into(),
            epoch,
            version,
            member,
        }
    }

    #[test]
    fn removal_is_refused_below_min_sync_when_blocking() {
        let mut c = config();
        c.apply(1, &remove(3, 0, 3)).unwrap();
        assert_eq!(c.streams["s"].sync_set, vec![2]);
        assert_eq!(c.streams["s"].learners, vec![3]);
        assert!(!c.streams["s"].degraded);
        assert_eq!(c.streams["s"].version, 1);
        let err = c.apply(2, &remove(3, 1, 2)).unwrap_err().to_string();
        assert!(err.contains("below min_sync"), "{err}");
        assert_eq!(c.streams["s"].sync_set, vec![2]);
        assert_eq!(c.version, 2);
    }

    #[test]
    fn removal_below_min_sync_degrades_when_allowed() {
        let mut c = config();
        c.streams.get_mut("s").unwrap().policy.degrade = true;
        c.apply(1, &remove(3, 0, 3)).unwrap();
        c.apply(2, &remove(3, 1, 2)).unwrap();
        assert!(c.streams["s"].sync_set.is_empty());
        assert!(c.streams["s"].degraded);
        c.apply(
            3,
            &Command::Restore {
                stream: "s".into(),
                epoch: 3,
                version: 2,
                member: 2,
            },
        )
        .unwrap();
        assert_eq!(c.streams["s"].sync_set, vec![2]);
        assert!(!c.streams["s"].degraded);
    }

    #[test]
    fn stale_commands_change_nothing() {
        let mut c = config();
        let before = c.streams.clone();
        assert!(
            c.apply(1, &remove(2, 0, 3))
                .unwrap_err()
                .to_string()
                .contains("epoch 2")
        );
        // A request overtaken by another change of the roles is refused too.
        assert!(
            c.apply(2, &remove(3, 7, 3))
                .unwrap_err()
                .to_string()
                .contains("version 7")
        );
        let promote = Command::Promote {
            stream: "s".into(),
            from_epoch: 2,
            epoch: 4,
            primary: 2,
            incarnation: 1,
            sync_set: vec![3],
            learners: vec![1],
            floor: (3, 10),
        };
        assert!(
            c.apply(3, &promote)
                .unwrap_err()
                .to_string()
                .contains("stale")
        );
        assert_eq!(c.streams, before);
        let promote = Command::Promote {
            stream: "s".into(),
            from_epoch: 3,
            epoch: 4,
            primary: 2,
            incarnation: 1,
            sync_set: vec![3],
            learners: vec![1],
            floor: (3, 10),
        };
        c.apply(4, &promote).unwrap();
        assert_eq!(c.streams["s"].epoch, 4);
        assert_eq!(c.streams["s"].primary, 2);
        // A second decision for the same old epoch (another leader's) is refused.
        assert!(
            c.apply(5, &promote)
                .unwrap_err()
                .to_string()
                .contains("stale")
        );
    }

    #[test]
    fn the_database_primary_changes_only_from_the_current_term() {
        let mut c = config();
        let promote = |from_term, primary| Command::DbPromote {
            stream: "s".into(),
            epoch: 3,
            from_term,
            primary,
        };
        c.apply(1, &promote(0, 2)).unwrap();
        let db = c.streams["s"].db.clone().unwrap();
        assert_eq!(
            (db.primary, db.term, db.primary_addr()),
            (2, 1, "127.0.0.1:3302")
        );
        // A second decision taken on term 0 (a switchover racing a failover) is refused.
        let err = c.apply(2, &promote(0, 3)).unwrap_err().to_string();
        assert!(err.contains("term 0"), "{err}");
        let err = c.apply(3, &promote(1, 9)).unwrap_err().to_string();
        assert!(err.contains("node 9"), "{err}");
        assert_eq!(c.streams["s"].db.as_ref().unwrap().primary, 2);
        // The lockstep roles are untouched.
        assert_eq!(c.streams["s"].epoch, 3);
        // Decided on the position of an epoch that is over: refused.
        let err = c
            .apply(
                4,
                &Command::DbPromote {
                    stream: "s".into(),
                    epoch: 2,
                    from_term: 1,
                    primary: 3,
                },
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("epoch 2"), "{err}");
        c.streams.get_mut("s").unwrap().db = None;
        let err = c.apply(5, &promote(1, 3)).unwrap_err().to_string();
        assert!(err.contains("no database"), "{err}");
    }

    #[test]
    fn commands_and_configs_round_trip() {
        let c = config();
        assert_eq!(ClusterConfig::decode(&c.encode()).unwrap(), c);
        let cmd = remove(3, 0, 2);
        assert_eq!(Command::decode(&cmd.encode()).unwrap(), cmd);
        assert!(
            Command::decode(b"{")
                .unwrap_err()
                .to_string()
                .contains("bad controller command")
        );
    }
}
