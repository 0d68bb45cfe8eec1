//! What the controller's leader decides: who is alive, when a stream's primary is
//! replaced (a fence round, then a promotion committed through raft), and
//! switchovers.

use super::*;

impl Controller {
    pub(super) fn alive(&self, node: NodeId) -> bool {
        self.heard
            .get(&node)
            .is_some_and(|h| self.now_ms < h.at_ms + self.settings.failover_timeout_ms)
    }

    /// The leader's duties: replace failed primaries, push fences and drains along.
    pub(super) fn lead(&mut self) {
        // A leader decides on the configuration of every committed command: until its
        // own term's first entry is committed and everything committed is applied, it
        // may hold an older configuration than the one it would change.
        let log = &self.raw.raft.raft_log;
        if !self.is_leader()
            || !self.raw.raft.commit_to_current_term()
            || log.applied < log.committed
        {
            return;
        }
        let streams: Vec<String> = self.config.streams.keys().cloned().collect();
        for stream in streams {
            self.lead_stream(&stream);
        }
    }

    fn lead_stream(&mut self, stream: &str) {
        let roles = self.config.streams[stream].clone();
        let now = self.now_ms;
        if let Some(round) = self.rounds.get(stream)
            && round.from_epoch != roles.epoch
        {
            // The configuration moved on (this round's promotion, or another's).
            self.rounds.remove(stream);
        }
        if let Some(d) = self.draining.get(stream)
            && d.epoch != roles.epoch
        {
            self.draining.remove(stream);
        }
        if let Some(mut round) = self.rounds.remove(stream) {
            if round
                .proposed_ms
                .is_some_and(|t| now >= t + self.settings.retry_ms * 4)
            {
                round.proposed_ms = None;
            }
            if round.proposed_ms.is_none() {
                let decision = match round.switchover {
                    // A switchover's target must win, once it holds the whole drained
                    // log and the old primary is fenced.
                    Some((to, last_lsn)) => {
                        let target_ready = round
                            .answers
                            .iter()
                            .any(|a| a.node == to && a.last_lsn >= last_lsn);
                        let primary_fenced = round.answers.iter().any(|a| a.node == roles.primary);
                        let answers: Vec<FenceAnswer> = round
                            .answers
                            .iter()
                            .filter(|a| a.node == to || a.node == roles.primary)
                            .copied()
                            .collect();
                        (target_ready && primary_fenced)
                            .then(|| decide(&roles, &answers, |n| self.alive(n), to))
                            .flatten()
                            .filter(|d| d.primary == to)
                    }
                    None if self.settings.plant_fence_short => {
                        // The planted bug: one answer from any sync member decides, as
                        // if every member held every commit, and the floor is ignored.
                        let mut short = roles.clone();
                        short.policy.sync_acks = None;
                        short.policy.mode = crate::replication::Mode::Strong.as_str().into();
                        short.floor = (0, 0);
                        decide(&short, &round.answers, |n| self.alive(n), roles.primary)
                    }
                    None => decide(&roles, &round.answers, |n| self.alive(n), roles.primary),
                };
                if let Some(d) = decision {
                    self.outputs.push(Output::Event(format!(
                        "stream {stream}: node {} becomes primary in epoch {} (answers {:?})",
                        d.primary, round.epoch, round.answers
                    )));
                    let cmd = Command::Promote {
                        stream: stream.to_string(),
                        from_epoch: roles.epoch,
                        epoch: round.epoch,
                        primary: d.primary,
                        incarnation: d.incarnation,
                        sync_set: d.sync_set,
                        learners: d.learners,
                        floor: d.floor,
                    };
                    self.proposed.remove(&cmd.encode());
                    self.propose(cmd);
                    round.proposed_ms = Some(now);
                } else if now >= round.last_sent_ms + self.settings.retry_ms {
                    round.last_sent_ms = now;
                    self.send_fences(stream, &roles, &round);
                }
            }
            self.rounds.insert(stream.to_string(), round);
            return;
        }
        if let Some(d) = self.draining.get_mut(stream) {
            if now >= d.last_sent_ms + self.settings.retry_ms {
                d.last_sent_ms = now;
                let (epoch, to) = (d.epoch, d.to);
                self.outputs.push(Output::Send {
                    to: roles.primary,
                    msg: ControlMsg::Drain {
                        stream: stream.to_string(),
                        epoch,
                        to,
                    },
                });
            }
            return;
        }
        let why = match self.heard.get(&roles.primary) {
            None if now >= self.leader_since_ms + self.settings.failover_timeout_ms => {
                Some("primary not heard from".to_string())
            }
            None => None,
            Some(h) if now >= h.at_ms + self.settings.failover_timeout_ms => {
                Some(format!("primary silent for {} ms", now - h.at_ms))
            }
            Some(h) if h.status.incarnation != roles.incarnation => Some(format!(
                "primary runs as process {}, promoted was {}",
                h.status.incarnation, roles.incarnation
            )),
            Some(_) => {
                // Alive as the promoted process, but the primary or members were fenced
                // by a round that never finished (its leader lost its place): a fenced
                // primary no longer serves, and fenced members refuse it, so nothing
                // commits until a new round.
                let promised = self
                    .heard
                    .iter()
                    .filter_map(|(node, h)| {
                        let s = h.status.streams.iter().find(|s| s.stream == stream)?;
                        Some((s.epoch, *node))
                    })
                    .max();
                promised
                    .filter(|&(epoch, _)| epoch > roles.epoch)
                    .map(|(epoch, node)| {
                        format!(
                            "node {node} promised epoch {epoch} in a round that never \
                             finished; epoch {} cannot commit",
                            roles.epoch
                        )
                    })
            }
        };
        if let Some(why) = why {
            self.start_round(stream, &roles, None, &why);
        }
    }

    fn start_round(
        &mut self,
        stream: &str,
        roles: &crate::control::cluster_config::StreamRoles,
        switchover: Option<(NodeId, u64)>,
        why: &str,
    ) {
        // Above every epoch a node has promised already, so that a round never reuses
        // the epoch of an abandoned one that promoted nobody.
        let promised = self
            .heard
            .values()
            .flat_map(|h| h.status.streams.iter())
            .filter(|s| s.stream == stream)
            .map(|s| s.epoch)
            .max()
            .unwrap_or(0);
        let round = Round {
            from_epoch: roles.epoch,
            epoch: roles.epoch.max(promised) + 1,
            answers: Vec::new(),
            last_sent_ms: self.now_ms,
            proposed_ms: None,
            switchover,
        };
        self.outputs.push(Output::Event(format!(
            "stream {stream}: fencing epoch {} ({why})",
            round.epoch
        )));
        self.send_fences(stream, roles, &round);
        self.rounds.insert(stream.to_string(), round);
    }

    fn send_fences(
        &mut self,
        stream: &str,
        roles: &crate::control::cluster_config::StreamRoles,
        round: &Round,
    ) {
        let targets = std::iter::once(roles.primary).chain(roles.sync_set.iter().copied());
        for node in targets {
            if round.answers.iter().any(|a| a.node == node) {
                continue;
            }
            self.outputs.push(Output::Send {
                to: node,
                msg: ControlMsg::Fence {
                    stream: stream.to_string(),
                    epoch: round.epoch,
                },
            });
        }
    }

    pub(super) fn start_switchover(&mut self, stream: String, to: NodeId) {
        let Some(roles) = self.config.streams.get(&stream).cloned() else {
            self.outputs.push(Output::Event(format!(
                "switchover of unknown stream {stream:?} refused"
            )));
            return;
        };
        if roles.primary == to || !roles.sync_set.contains(&to) {
            self.outputs.push(Output::Event(format!(
                "switchover of {stream} to node {to} refused: it is not a sync-set member"
            )));
            return;
        }
        if self.rounds.contains_key(&stream) || self.draining.contains_key(&stream) {
            return;
        }
        self.outputs.push(Output::Event(format!(
            "stream {stream}: switchover to node {to}, draining node {}",
            roles.primary
        )));
        self.draining.insert(
            stream.clone(),
            Draining {
                epoch: roles.epoch,
                to,
                last_sent_ms: self.now_ms,
            },
        );
        self.outputs.push(Output::Send {
            to: roles.primary,
            msg: ControlMsg::Drain {
                stream,
                epoch: roles.epoch,
                to,
            },
        });
    }

    pub(super) fn on_drained(&mut self, stream: &str, epoch: u64, to: NodeId, last_lsn: u64) {
        let Some(d) = self.draining.get(stream) else {
            return;
        };
        if d.epoch != epoch || d.to != to || !self.is_leader() {
            return;
        }
        self.draining.remove(stream);
        let roles = self.config.streams[stream].clone();
        if roles.epoch != epoch {
            return;
        }
        self.start_round(
            stream,
            &roles,
            Some((to, last_lsn)),
            &format!("switchover to node {to}"),
        );
    }
}
