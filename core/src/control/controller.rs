//! The controller of one node: its replica of the cluster's raft group, the
//! configuration that group agrees on, and — on the raft leader — the decisions that
//! change it (failovers, removals, restores, switchovers).
//!
//! Sans-I/O: inputs are messages from other nodes' controllers, this node's status,
//! requests of this node's primaries and the time in milliseconds; outputs
//! ([`Output`]) are messages to send, state to persist and configurations to apply.
//! The driver executes outputs in order: a `Persist` must be durable before any
//! output after it is carried out (raft's rule: persist before sending the messages
//! that promise it).
//!
//! Decisions are taken by the leader only, and every decision is a compare-and-set on
//! the stream's epoch (see `cluster_config`), so two leaders that overlap for a moment
//! cannot both change a stream's roles.
//!
//! Failure detection: every node sends its status to every voter every
//! `status_interval_ms`. The leader replaces a stream's primary when the primary has
//! been silent for `failover_timeout_ms`, or when it reports a process (incarnation)
//! other than the one promoted — it restarted, and a restarted primary is promoted
//! again in a newer epoch, never resumed.

use std::collections::{BTreeMap, HashMap};

use raft::StateRole;
use raft::eraftpb::{ConfChangeV2, Entry, EntryType};
use raft::{RawNode, Storage};

use crate::control::cluster_config::{ClusterConfig, Command};
use crate::control::error::ControlError;
use crate::control::fence::{FenceAnswer, decide};
use crate::control::message::{ControlMsg, NodeStatus, Request};
use crate::control::storage::ControlLog;
use crate::replication::NodeId;

/// Where raft-rs logs: set once by the node's log set-up (`server::logging`); raft-rs
/// logs nowhere until then (the simulator never sets it).
static RAFT_LOGGER: std::sync::OnceLock<slog::Logger> = std::sync::OnceLock::new();

/// Sets the logger of every raft group started from now on (first call wins).
pub fn set_raft_logger(logger: slog::Logger) {
    let _ = RAFT_LOGGER.set(logger);
}

fn raft_logger() -> slog::Logger {
    RAFT_LOGGER
        .get()
        .cloned()
        .unwrap_or_else(|| slog::Logger::root(slog::Discard, slog::o!()))
}

/// Timing of the controller. The defaults suit a LAN or loopback: a failed primary is
/// replaced in a few hundred milliseconds.
///
/// Raft ticks every 5 ms: an election timeout of 20 to 39 ticks (100 to 195 ms) and a
/// heartbeat every 4 ticks (20 ms). The same wall-clock timeouts in 10 ms ticks gave
/// only 10 distinct election timeouts, so two candidates of a 4-voter group drew the
/// same one a tenth of the time and split the vote again (seeds 111121 and 128310 of
/// the simulator, before each process ticked in its own phase); with 20 it is a
/// twentieth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerSettings {
    /// Milliseconds per raft tick.
    pub raft_tick_ms: u64,
    /// Raft ticks without a leader before an election (randomized up to twice this).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub status_interval_ms: u64,
    /// A primary silent for this long is replaced.
    pub failover_timeout_ms: u64,
    /// Fences, drains and proposals not answered within this are sent again.
    pub retry_ms: u64,
    /// Applied commands kept in the raft log before it is compacted to a snapshot.
    pub compact_after: u64,
    /// Bytes of entries in one raft append at most (one entry always goes): the
    /// receiver decodes an append entry by entry, and bounds how many it takes.
    pub append_bytes_max: u64,
    /// Bytes of uncommitted commands the leader holds at most (more than one append);
    /// a proposal beyond them is dropped (its requester asks again), so requests from
    /// the other nodes cannot grow the leader's log without bound.
    pub uncommitted_bytes_max: u64,
    /// A deliberate bug for the simulator's test of its own checker: a failover is
    /// decided on the first sync member's answer, as if every member held every
    /// commit. Never set otherwise.
    pub plant_fence_short: bool,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            raft_tick_ms: 5,
            election_ticks: 20,
            heartbeat_ticks: 4,
            status_interval_ms: 20,
            failover_timeout_ms: 150,
            retry_ms: 50,
            compact_after: 64,
            append_bytes_max: 8 << 10,
            uncommitted_bytes_max: 64 << 10,
            plant_fence_short: false,
        }
    }
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Send {
        to: NodeId,
        msg: ControlMsg,
    },
    /// Store these bytes durably (replacing the previous state) before carrying out
    /// any output after this one. [`ControlLog::decode`] reads them back.
    Persist(Vec<u8>),
    /// The configuration changed: apply it.
    Config(ClusterConfig),
    /// A line for the node's log: a failover started or decided, a command refused.
    Event(String),
}

/// A failover (or switchover) of one stream in progress, on the leader.
#[derive(Clone, Debug)]
struct Round {
    from_epoch: u64,
    epoch: u64,
    answers: Vec<FenceAnswer>,
    last_sent_ms: u64,
    proposed_ms: Option<u64>,
    /// A switchover to this node: it must win, holding the whole drained log.
    switchover: Option<(NodeId, u64)>,
}

/// A switchover waiting for the old primary to drain.
#[derive(Clone, Debug)]
struct Draining {
    epoch: u64,
    to: NodeId,
    last_sent_ms: u64,
}

struct Heard {
    at_ms: u64,
    status: NodeStatus,
}

/// A small deterministic generator for election timeouts, so that a seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One node's controller. See the module docs.
pub struct Controller {
    id: NodeId,
    raw: RawNode<ControlLog>,
    config: ClusterConfig,
    settings: ControllerSettings,
    rng: Rng,
    now_ms: u64,
    raft_ticked_ms: u64,
    raft_shape: (u64, StateRole),
    leader_since_ms: u64,
    local: Option<NodeStatus>,
    status_sent_ms: Option<u64>,
    heard: BTreeMap<NodeId, Heard>,
    rounds: BTreeMap<String, Round>,
    draining: BTreeMap<String, Draining>,
    /// Requests proposed recently (encoded command → when), so that a primary that
    /// repeats a request does not fill the raft log.
    proposed: HashMap<Vec<u8>, u64>,
    /// Compact the raft log at the next chance (a node joined).
    compact_now: bool,
    outputs: Vec<Output>,
}

/// The configuration command an entry carries: a normal entry's data, or a conf
/// change's context (a join). `None` for a leader's empty entry or a bare conf change.
fn raft_error(what: &'static str, e: raft::Error) -> ControlError {
    ControlError::Raft {
        what,
        reason: e.to_string(),
    }
}

fn entry_command(e: &Entry) -> Result<Option<Command>, ControlError> {
    let bytes: &[u8] = match e.get_entry_type() {
        EntryType::EntryNormal => e.get_data(),
        // raft-rs keeps a proposed conf change's context in its entry.
        EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => e.get_context(),
    };
    if bytes.is_empty() {
        return Ok(None);
    }
    Command::decode(bytes).map(Some)
}

/// Raft ids start at 1 (0 means "none" to raft-rs); node ids may start at 0.
fn raft_id(n: NodeId) -> u64 {
    u64::from(n) + 1
}

fn node_id(n: u64) -> NodeId {
    NodeId::try_from(n - 1).expect("raft ids are node ids")
}

impl Controller {
    /// A controller starting from `persisted` state (None for a node's first start)
    /// or else from `genesis`, the configuration every node's file describes.
    /// `seed` drives the randomized election timeouts.
    pub fn new(
        id: NodeId,
        genesis: ClusterConfig,
        persisted: Option<ControlLog>,
        settings: ControllerSettings,
        seed: u64,
    ) -> Result<Controller, ControlError> {
        let voters: Vec<u64> = genesis.voters.iter().copied().map(raft_id).collect();
        if !genesis.voters.contains(&id) && !genesis.members.contains_key(&id) {
            return Err(ControlError::NotInCluster {
                node: id,
                voters: genesis.voters.clone(),
            });
        }
        // A node that joined starts with no raft configuration at all: the leader
        // that added it as a learner sends it the log or a snapshot.
        let store = persisted.unwrap_or_else(|| {
            if genesis.voters.contains(&id) {
                ControlLog::new(&voters)
            } else {
                ControlLog::new(&[])
            }
        });
        let snapshot = store.snapshot_ref().clone();
        let mut config = if snapshot.get_data().is_empty() {
            genesis
        } else {
            ClusterConfig::decode(snapshot.get_data())?
        };
        // Commands committed before a restart apply again now, so the node never acts
        // on a configuration older than the one it had.
        let commit = store.hard_state().get_commit();
        let first = snapshot.get_metadata().get_index() + 1;
        if commit >= first {
            let replay = store
                .entries(
                    first,
                    commit + 1,
                    None,
                    raft::GetEntriesContext::empty(false),
                )
                .map_err(|e| raft_error("state", e))?;
            for e in replay {
                // A refused command changes nothing, as it did the first time.
                if e.get_index() <= config.version {
                    continue;
                }
                if let Some(cmd) = entry_command(&e)? {
                    let _ = config.apply(e.get_index(), &cmd);
                }
            }
        }
        let applied = commit.max(snapshot.get_metadata().get_index());
        let raft_config = raft::Config {
            id: raft_id(id),
            election_tick: settings.election_ticks,
            heartbeat_tick: settings.heartbeat_ticks,
            applied,
            max_size_per_msg: settings.append_bytes_max,
            max_inflight_msgs: 256,
            max_uncommitted_size: settings.uncommitted_bytes_max,
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        raft_config
            .validate()
            .map_err(|e| raft_error("settings", e))?;
        let logger = raft_logger().new(slog::o!("node" => id));
        let raw = RawNode::new(&raft_config, store, &logger).map_err(|e| raft_error("state", e))?;
        let mut c = Controller {
            id,
            raft_shape: (raw.raft.term, raw.raft.state),
            raw,
            config,
            settings,
            rng: Rng(seed),
            now_ms: 0,
            raft_ticked_ms: 0,
            leader_since_ms: 0,
            local: None,
            status_sent_ms: None,
            heard: BTreeMap::new(),
            rounds: BTreeMap::new(),
            draining: BTreeMap::new(),
            proposed: HashMap::new(),
            compact_now: false,
            outputs: Vec::new(),
        };
        c.randomize_election();
        Ok(c)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The configuration applied so far.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The controller's leader as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        let l = self.raw.raft.leader_id;
        (l != raft::INVALID_ID).then(|| node_id(l))
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The latest status heard from `node` and how old it is, in milliseconds.
    pub fn heard_from(&self, node: NodeId) -> Option<(&NodeStatus, u64)> {
        self.heard
            .get(&node)
            .map(|h| (&h.status, self.now_ms.saturating_sub(h.at_ms)))
    }

    /// This node's own status, sent to every voter at the status interval.
    pub fn set_status(&mut self, status: NodeStatus) {
        assert_eq!(status.node, self.id);
        self.heard.insert(
            self.id,
            Heard {
                at_ms: self.now_ms,
                status: status.clone(),
            },
        );
        self.local = Some(status);
    }

    /// Time passes.
    pub fn on_tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        while self.now_ms >= self.raft_ticked_ms + self.settings.raft_tick_ms {
            self.raft_ticked_ms += self.settings.raft_tick_ms;
            self.raw.tick();
            self.after_raft();
        }
        if let Some(local) = &self.local {
            let due = self
                .status_sent_ms
                .is_none_or(|t| self.now_ms >= t + self.settings.status_interval_ms);
            if due {
                self.status_sent_ms = Some(self.now_ms);
                if let Some(h) = self.heard.get_mut(&self.id) {
                    h.at_ms = self.now_ms;
                }
                for &v in &self.config.voters {
                    if v != self.id {
                        self.outputs.push(Output::Send {
                            to: v,
                            msg: ControlMsg::Status(local.clone()),
                        });
                    }
                }
            }
        }
        self.lead();
    }

    /// A message from another node's controller. `Fence` and `Drain` are for the
    /// node's streams, not for the controller: the driver hands them to the streams.
    pub fn on_message(&mut self, from: NodeId, msg: ControlMsg) {
        match msg {
            ControlMsg::Raft(m) => {
                if m.get_from() != raft_id(from) {
                    self.outputs.push(Output::Event(format!(
                        "raft message from node {} arrived on node {from}'s link: dropped",
                        m.get_from()
                    )));
                    return;
                }
                if let Err(e) = self.raw.step(m) {
                    self.outputs
                        .push(Output::Event(format!("raft message from node {from}: {e}")));
                }
                self.after_raft();
            }
            ControlMsg::Status(status) => {
                // Only members are watched: a status from any other node would add an
                // entry to `heard` for every node id a peer cares to name.
                if status.node == from && self.config.members.contains_key(&from) {
                    self.heard.insert(
                        from,
                        Heard {
                            at_ms: self.now_ms,
                            status,
                        },
                    );
                }
            }
            ControlMsg::Fenced {
                stream,
                epoch,
                node,
                incarnation,
                last_epoch,
                last_lsn,
            } => {
                if let Some(round) = self.rounds.get_mut(&stream)
                    && round.epoch == epoch
                    && !round.answers.iter().any(|a| a.node == node)
                {
                    round.answers.push(FenceAnswer {
                        node,
                        incarnation,
                        last_epoch,
                        last_lsn,
                    });
                }
            }
            ControlMsg::Drained {
                stream,
                epoch,
                to,
                last_lsn,
            } => self.on_drained(&stream, epoch, to, last_lsn),
            ControlMsg::Request(r) => self.request(r),
            ControlMsg::Fence { .. } | ControlMsg::Drain { .. } => {
                self.outputs.push(Output::Event(format!(
                    "a stream message from node {from} reached the controller: dropped"
                )));
            }
        }
        self.lead();
    }

    /// A request of this node (or forwarded by another): handled by the leader, sent
    /// to it otherwise. Without a known leader the request is dropped; the asker asks
    /// again while its reason holds.
    pub fn request(&mut self, r: Request) {
        if !self.is_leader() {
            if let Some(leader) = self.leader()
                && leader != self.id
            {
                self.outputs.push(Output::Send {
                    to: leader,
                    msg: ControlMsg::Request(r),
                });
            }
            return;
        }
        match r {
            Request::Remove {
                stream,
                epoch,
                version,
                member,
            } => self.propose(Command::Remove {
                stream,
                epoch,
                version,
                member,
            }),
            Request::Restore {
                stream,
                epoch,
                version,
                member,
            } => self.propose(Command::Restore {
                stream,
                epoch,
                version,
                member,
            }),
            Request::Switchover { stream, to } => self.start_switchover(stream, to),
            Request::Join { node, addr } => self.join(node, addr),
            Request::DbPromote {
                stream,
                epoch,
                from_term,
                to,
            } => self.propose(Command::DbPromote {
                stream,
                epoch,
                from_term,
                primary: to,
            }),
        }
    }

    /// Adds `node` as a learner of the raft group and of every stream, in one entry:
    /// a conf change whose context is the `Join` command.
    fn join(&mut self, node: NodeId, addr: String) {
        match self.config.members.get(&node) {
            Some(known) if *known == addr => return,
            Some(known) => {
                self.outputs.push(Output::Event(format!(
                    "join of node {node} at {addr} refused: node {node} is a member at {known}"
                )));
                return;
            }
            None => {}
        }
        let cmd = Command::Join { node, addr };
        let bytes = cmd.encode();
        if self.proposed_recently(&bytes) {
            return;
        }
        let mut cc = raft::eraftpb::ConfChange::default();
        cc.set_change_type(raft::eraftpb::ConfChangeType::AddLearnerNode);
        cc.set_node_id(raft_id(node));
        match self.raw.propose_conf_change(bytes.clone(), cc) {
            Ok(()) => {
                self.outputs
                    .push(Output::Event(format!("proposed {cmd:?}")));
                self.proposed.insert(bytes, self.now_ms);
            }
            // One change of the raft group at a time: the joiner asks again.
            Err(e) => self.outputs.push(Output::Event(format!(
                "join of node {node} not proposed yet: {e}"
            ))),
        }
    }

    /// Hands over the outputs of everything since the last call.
    pub fn poll(&mut self) -> Vec<Output> {
        self.drive_raft();
        std::mem::take(&mut self.outputs)
    }

    /// Whether this command was proposed within the last few retry intervals (a
    /// primary repeats its requests; each goes into the raft log once).
    fn proposed_recently(&mut self, bytes: &[u8]) -> bool {
        let now = self.now_ms;
        let retry = self.settings.retry_ms * 4;
        self.proposed.retain(|_, t| now < *t + retry);
        self.proposed.contains_key(bytes)
    }

    fn propose(&mut self, cmd: Command) {
        let bytes = cmd.encode();
        if self.proposed_recently(&bytes) {
            return;
        }
        match self.raw.propose(Vec::new(), bytes.clone()) {
            Ok(()) => {
                self.proposed.insert(bytes, self.now_ms);
            }
            Err(e) => self
                .outputs
                .push(Output::Event(format!("proposal {cmd:?} not accepted: {e}"))),
        }
    }

    /// raft-rs draws election timeouts from the thread's random generator; the
    /// controller draws them from its seed instead whenever raft resets them (on
    /// every change of term or role), so that a simulated cluster replays exactly.
    fn after_raft(&mut self) {
        let shape = (self.raw.raft.term, self.raw.raft.state);
        if shape != self.raft_shape {
            if shape.1 == StateRole::Leader {
                self.leader_since_ms = self.now_ms;
                self.rounds.clear();
                self.draining.clear();
            }
            self.raft_shape = shape;
            self.randomize_election();
        }
    }

    fn randomize_election(&mut self) {
        // raft-rs's defaults: a timeout in [election_ticks, 2 × election_ticks).
        let min = self.settings.election_ticks;
        let max = 2 * min;
        let t = min + (self.rng.next() % (max - min) as u64) as usize;
        self.raw.raft.set_randomized_election_timeout(t);
    }

    fn drive_raft(&mut self) {
        if !self.raw.has_ready() {
            return;
        }
        let mut rd = self.raw.ready();
        let messages = rd.take_messages();
        self.send_raft(messages);
        let mut persist = false;
        if !rd.snapshot().is_empty() {
            let snapshot = rd.snapshot().clone();
            match ClusterConfig::decode(snapshot.get_data()) {
                Ok(config) => {
                    self.config = config;
                    self.outputs.push(Output::Config(self.config.clone()));
                }
                Err(e) => panic!("the leader sent a snapshot that does not decode: {e}"),
            }
            self.raw.mut_store().apply_snapshot(snapshot);
            persist = true;
        }
        let committed = rd.take_committed_entries();
        self.apply(committed);
        if !rd.entries().is_empty() {
            let entries = rd.entries().clone();
            self.raw.mut_store().append(&entries);
            persist = true;
        }
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs.clone());
            persist = true;
        }
        if persist {
            self.outputs
                .push(Output::Persist(self.raw.store().encode()));
        }
        let persisted = rd.take_persisted_messages();
        self.send_raft(persisted);
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        let messages = light.take_messages();
        self.send_raft(messages);
        let committed = light.take_committed_entries();
        self.apply(committed);
        self.raw.advance_apply();
        self.after_raft();
        self.compact();
    }

    fn send_raft(&mut self, messages: Vec<raft::eraftpb::Message>) {
        for m in messages {
            self.outputs.push(Output::Send {
                to: node_id(m.get_to()),
                msg: ControlMsg::Raft(m),
            });
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let mut changed = false;
        for e in entries {
            // A change of the raft group applies to raft whatever the configuration.
            match e.get_entry_type() {
                EntryType::EntryNormal => {}
                EntryType::EntryConfChange => {
                    let cc: raft::eraftpb::ConfChange =
                        protobuf::Message::parse_from_bytes(e.get_data())
                            .expect("committed conf changes decode");
                    let cs = self
                        .raw
                        .apply_conf_change(&cc)
                        .expect("committed conf changes apply");
                    self.raw.mut_store().set_conf_state(cs);
                }
                EntryType::EntryConfChangeV2 => {
                    let cc: ConfChangeV2 = protobuf::Message::parse_from_bytes(e.get_data())
                        .expect("committed conf changes decode");
                    let cs = self
                        .raw
                        .apply_conf_change(&cc)
                        .expect("committed conf changes apply");
                    self.raw.mut_store().set_conf_state(cs);
                }
            }
            // Commands up to the configuration's version are in it already (a node
            // that joined starts from the configuration at its join).
            if e.get_index() <= self.config.version {
                continue;
            }
            let cmd = match entry_command(&e) {
                Ok(Some(cmd)) => cmd,
                Ok(None) => continue,
                Err(why) => panic!("a committed controller entry does not decode: {why}"),
            };
            match self.config.apply(e.get_index(), &cmd) {
                Ok(()) => {
                    changed = true;
                    if matches!(cmd, Command::Join { .. }) {
                        // The new learner has no log: it must start from a snapshot,
                        // which carries the raft group's voters, not from entry 1.
                        self.compact_now = true;
                    }
                    self.outputs.push(Output::Event(format!("applied {cmd:?}")));
                }
                Err(why) => self.outputs.push(Output::Event(format!("refused: {why}"))),
            }
        }
        if changed {
            self.outputs.push(Output::Config(self.config.clone()));
        }
    }

    fn compact(&mut self) {
        let applied = self.raw.raft.raft_log.applied;
        let snap = self.raw.store().snapshot_ref().get_metadata().get_index();
        if (self.compact_now || applied >= snap + self.settings.compact_after)
            && self.raw.store().last_index().is_ok_and(|l| l >= applied)
        {
            self.compact_now = false;
            self.raw.mut_store().compact(applied, self.config.encode());
            self.outputs
                .push(Output::Persist(self.raw.store().encode()));
        }
    }
}

mod lead;
#[cfg(test)]
mod tests;
