//! One simulated node of a stream: its disk, its process state and its stream role,
//! driven exactly as production's `server::stream` drives the core.
//!
//! A node is primary or secondary according to its configuration, and
//! [`Node::apply_config`] switches the role at run time, as the cluster controller will:
//! the old role stops (a primary's waiting requests end in doubt), the log settles, and
//! the new role starts from the durable log. Starting as primary takes a new epoch, higher
//! than the configured one, than every epoch in the log and than the EPOCH file, and
//! stores it first — as `server::open_stream` does at every start.
//!
//! The driver code mirrors `server::stream`: the connect handshake (Hello, Welcome), the
//! shared-prefix rule through [`shared_prefix`] with `Truncate` before anything is sent,
//! the member's link and epoch checks, acks after durability (on receipt in semi mode),
//! and a full disk refusing appends without appending anything. It owns no protocol
//! rule of its own: every decision about commits, epochs and records is the core's.
//!
//! Everything a node does that the checker must know (taking a role, answering a
//! primary, accepting records, the core's events) is reported as a [`NodeEvent`]: the
//! checker learns who is primary in which epoch from the nodes, not from the harness.

use std::collections::BTreeMap;

use crate::replication::shared_prefix::{Answer, answer, member_cut, truncation_is_stale};
use crate::replication::{
    Action, Event, MemberSpec, Mode, NodeId, Outcome, Primary, RequestId, Secondary,
    StreamSettings, Verdict,
};
use crate::sim::Bug;
use crate::sim::Rec;
use crate::sim::disk::{Deleted, Disk, Interrupt};
use crate::sim::network::{ConnId, Msg};

/// Records per Replicate frame: small, so that a batch spans several frames and frames
/// can be lost, duplicated and reordered one by one.
const FRAME_RECORDS_MAX: usize = 8;

/// Ticks between two dials of a member that is not connected.
const REDIAL_TICKS: u64 = 10;

/// Ticks between two looks of retention at the log (production's `RETENTION_EVERY`).
const RETAIN_EVERY_TICKS: u64 = 20;

/// Retention of a run, as a stream's `retain_segments` sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Records per log segment.
    pub segment_records: u64,
    /// Sealed segments kept beyond the floor (`retain_segments`).
    pub keep_segments: usize,
}

/// A stream configuration, as the controller will commit it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub epoch: u64,
    pub primary: NodeId,
    pub sync_set: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Under the controller: the process (incarnation) that holds the primary role.
    /// `None`: a static configuration, whose primary takes a new epoch at every start.
    pub incarnation: Option<u64>,
    /// Under the controller: the sync set shrank below `min_sync` under `degrade`.
    pub degraded: bool,
    /// Under the controller: the version of these roles.
    pub version: u64,
}

/// Who is waiting for a request's answer: (client, the client's token).
pub type ClientRef = (usize, u64);

/// A node's answer to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Appended {
        first: u64,
        last: u64,
    },
    InDoubt {
        first: u64,
        last: u64,
    },
    NotPrimary {
        primary: NodeId,
    },
    /// Nothing was appended (full disk, failed log, changing role).
    Unavailable(&'static str),
    ModeNotAllowed,
}

/// What a node reports about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    BecamePrimary {
        node: NodeId,
        epoch: u64,
        settings: StreamSettings,
        sync_set: Vec<NodeId>,
    },
    BecameSecondary {
        node: NodeId,
        epoch: u64,
    },
    /// The primary role of `epoch` ended here (crash, failed log or new configuration).
    StoppedPrimary {
        node: NodeId,
        epoch: u64,
    },
    /// Answered a primary of `epoch`: from now on older epochs must be refused.
    Welcomed {
        node: NodeId,
        epoch: u64,
    },
    /// The primary of `epoch` applied a committed change of its sync set.
    MembersChanged {
        node: NodeId,
        epoch: u64,
        sync_set: Vec<NodeId>,
        degraded: bool,
    },
    /// Answered the controller's fence of `epoch` (durably): from now on older epochs
    /// must be refused.
    Fenced {
        node: NodeId,
        epoch: u64,
    },
    /// Appended records `first..=last` sent by a primary of `epoch`.
    Accepted {
        node: NodeId,
        epoch: u64,
        first: u64,
        last: u64,
    },
    Truncated {
        node: NodeId,
        after: u64,
    },
    /// Retention deleted `records`, LSN `first..`, from the log; as primary of `epoch`
    /// (`None`: as secondary).
    Retained {
        node: NodeId,
        primary_epoch: Option<u64>,
        first: u64,
        records: Vec<Rec>,
    },
    /// The log started over after (`base_lsn`, `base_epoch`), as the primary of `epoch`
    /// asked (a crash may have stopped the reset midway: the disk tells).
    Rebased {
        node: NodeId,
        epoch: u64,
        base_lsn: u64,
        base_epoch: u64,
    },
    /// The primary of `epoch` was told where `member`'s log stands (its handshake or
    /// an ack), and hands it to its core: the commit rule counts a member's records
    /// only from such a report.
    Reported {
        node: NodeId,
        epoch: u64,
        member: NodeId,
        received: u64,
        durable: u64,
    },
    /// The primary of `epoch` completed a request as committed, `first..=last` (its
    /// reply follows): told here, in the order of its other events.
    Completed {
        node: NodeId,
        epoch: u64,
        first: u64,
        last: u64,
    },
    /// An event of the primary core (sync-set changes, degrade, block).
    Core {
        node: NodeId,
        epoch: u64,
        event: Event,
    },
}

/// What a node wants done after an input.
#[derive(Debug, Default)]
pub struct Out {
    pub sends: Vec<(NodeId, ConnId, Msg)>,
    pub closes: Vec<ConnId>,
    pub events: Vec<NodeEvent>,
    pub replies: Vec<(ClientRef, Reply)>,
    pub trace: Vec<String>,
}

/// What became of a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    Done,
    /// Not now: the same message again later (production's `Handled::Later`).
    Later,
}

struct MemberLink {
    id: NodeId,
    conn: Option<ConnId>,
    /// Waiting for the member to cut its tail and greet again.
    truncating: bool,
    /// The core was told the member connected on this connection.
    ready: bool,
    next_dial: u64,
}

pub struct PrimaryRole {
    core: Primary,
    epoch: u64,
    members: Vec<MemberLink>,
    requests: BTreeMap<RequestId, ClientRef>,
    next_request: RequestId,
}

pub struct SecondaryRole {
    core: Secondary,
    primary_conn: Option<ConnId>,
    ack_due: bool,
    /// The primary of an epoch asked to keep records up to (its epoch, LSN, the epoch
    /// of its record there).
    truncate_to: Option<(u64, u64, u64)>,
    /// The primary of an epoch asked to start the log over after (LSN, epoch): it no
    /// longer holds what comes after this log's end.
    rebase_to: Option<(u64, u64, u64)>,
}

pub enum Role {
    Down,
    Primary(Box<PrimaryRole>),
    Secondary(SecondaryRole),
}

pub struct Node {
    pub id: NodeId,
    pub disk: Disk,
    config: Config,
    settings: StreamSettings,
    role: Role,
    /// A configuration that changes this node's role, waiting for the log to settle.
    reconfigure: bool,
    /// Tick of the next restart while down (`None`: stays down until told).
    pub restart_at: Option<u64>,
    plant: Option<Bug>,
    /// This process, as the controller knows it (a restart is a new incarnation).
    pub incarnation: u64,
    retention: Option<Retention>,
    /// Tick retention last looked at the log.
    retained_at: u64,
    /// The next cleanup of the log (retention or reset) stops after this many segment
    /// deletions: the process dies there.
    pub cleanup_crash: Interrupt,
    /// The process must stop now (a cleanup cut short, or a failed stream); the caller
    /// crashes it.
    pub stop: Option<&'static str>,
}

impl Node {
    /// A node that is down; [`Node::start`] brings it up.
    pub fn new(
        id: NodeId,
        settings: StreamSettings,
        config: Config,
        plant: Option<Bug>,
        retention: Option<Retention>,
    ) -> Node {
        let mut disk = Disk::default();
        if let Some(r) = retention {
            disk.segment_records = r.segment_records;
        }
        Node {
            id,
            disk,
            config,
            settings,
            role: Role::Down,
            reconfigure: false,
            restart_at: None,
            plant,
            incarnation: 0,
            retention,
            retained_at: 0,
            cleanup_crash: None,
            stop: None,
        }
    }

    /// Answers the controller's `Fence(epoch)` as production's `StreamDriver::fence`:
    /// the epoch is stored durably, a primary of an older epoch stops, older records are
    /// refused from now on. Returns where the log ends (epoch, LSN).
    pub fn fence(&mut self, epoch: u64, out: &mut Out) -> (u64, u64) {
        if epoch > self.disk.epoch_file {
            self.disk.epoch_file = epoch;
            out.events.push(NodeEvent::Fenced {
                node: self.id,
                epoch,
            });
        }
        match &mut self.role {
            Role::Primary(p) if p.epoch < epoch => {
                out.trace.push(format!(
                    "n{} fenced by epoch {epoch}: stops as primary",
                    self.id
                ));
                if self.disk.settled() {
                    self.switch_role(out);
                } else {
                    // The role ends now; the switch waits for the write in flight.
                    p.core.stop("fenced by a newer epoch");
                    Self::primary_actions(self.id, p, &self.disk, out);
                    self.reconfigure = true;
                }
            }
            Role::Secondary(s) => s.core.fence(epoch),
            _ => {}
        }
        // Where the durable log ends: what is not durable yet may vanish in a crash and
        // was never committed, and a promotion's floor must be a log that exists.
        let durable = self.disk.durable_lsn();
        (self.disk.epoch_at(durable).unwrap_or(0), durable)
    }

    /// The stream's state as the controller sees it.
    pub fn status(&self) -> crate::control::StreamStatus {
        let (primary, commit) = match &self.role {
            Role::Primary(p) => (true, p.core.commit_lsn()),
            Role::Secondary(s) => (false, s.core.readable_commit()),
            Role::Down => (false, 0),
        };
        crate::control::StreamStatus {
            stream: "s".into(),
            epoch: self.disk.epoch_file,
            primary,
            last_epoch: self.disk.last_epoch(),
            last_lsn: self.disk.last_lsn(),
            durable_lsn: self.disk.durable_lsn(),
            commit_lsn: commit,
        }
    }

    pub fn up(&self) -> bool {
        !matches!(self.role, Role::Down)
    }

    pub fn is_primary(&self) -> bool {
        matches!(self.role, Role::Primary(_))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The epoch this node is in: its own as primary, the newest it has seen as
    /// secondary.
    pub fn epoch(&self) -> Option<u64> {
        match &self.role {
            Role::Down => None,
            Role::Primary(p) => Some(p.epoch),
            Role::Secondary(s) => Some(s.core.epoch()),
        }
    }

    /// Highest LSN a reader may see here as committed.
    pub fn readable_commit(&self) -> Option<u64> {
        match &self.role {
            Role::Down => None,
            Role::Primary(p) => Some(p.core.commit_lsn()),
            Role::Secondary(s) => Some(s.core.readable_commit()),
        }
    }

    /// Requests waiting for their commit (primary only).
    pub fn waiting(&self) -> usize {
        match &self.role {
            Role::Primary(p) => p.core.waiting(),
            _ => 0,
        }
    }

    /// Members the primary has connected (handshake done, tail cut).
    pub fn connected_members(&self) -> Vec<NodeId> {
        match &self.role {
            Role::Primary(p) => p.core.members().filter(|m| m.2).map(|m| m.0).collect(),
            _ => Vec::new(),
        }
    }

    /// Settings as the core gets them; a planted bug may change them behind the
    /// checker's back.
    fn core_settings(&self) -> StreamSettings {
        let mut s = self.settings.clone();
        if self.plant == Some(Bug::CommitOnKMinusOne) {
            let k = s.k(self.config.sync_set.len());
            if k >= 2 {
                s.sync_acks = Some(k - 1);
            }
        }
        s
    }

    /// Whether the configuration makes this process the primary.
    fn primary_here(&self) -> bool {
        self.config.primary == self.id
            && self
                .config
                .incarnation
                .is_none_or(|i| i == self.incarnation && self.config.epoch >= self.disk.epoch_file)
    }

    /// Starts the process: the role of the configuration, from the durable log.
    pub fn start(&mut self, out: &mut Out) {
        assert!(!self.up());
        assert!(self.disk.settled(), "a node starts from a durable log");
        self.disk.recover();
        self.restart_at = None;
        self.reconfigure = false;
        let last = self.disk.last_lsn();
        let last_epoch = self.disk.last_epoch();
        if self.primary_here() {
            // Static: a new incarnation of the primary takes a new epoch, durable before
            // any record. Under the controller, the configuration's epoch, promised to
            // this very process.
            let epoch = if self.config.incarnation.is_some() {
                self.config.epoch
            } else {
                self.config
                    .epoch
                    .max(last_epoch + 1)
                    .max(self.disk.epoch_file + 1)
            };
            self.disk.epoch_file = epoch;
            let specs: Vec<MemberSpec> = self
                .config
                .sync_set
                .iter()
                .map(|&id| MemberSpec { id, sync: true })
                .chain(
                    self.config
                        .learners
                        .iter()
                        .map(|&id| MemberSpec { id, sync: false }),
                )
                .collect();
            let mut core = Primary::new(self.core_settings(), epoch, &specs, last, 0);
            if self.config.incarnation.is_some() {
                core = core.under_controller();
                core.set_members(&specs, self.config.degraded, self.config.version);
            }
            self.role = Role::Primary(Box::new(PrimaryRole {
                core,
                epoch,
                members: specs
                    .iter()
                    .map(|m| MemberLink {
                        id: m.id,
                        conn: None,
                        truncating: false,
                        ready: false,
                        next_dial: 0,
                    })
                    .collect(),
                requests: BTreeMap::new(),
                next_request: 1,
            }));
            out.trace.push(format!(
                "n{} up as primary of epoch {epoch} at lsn {last}",
                self.id
            ));
            out.events.push(NodeEvent::BecamePrimary {
                node: self.id,
                epoch,
                settings: self.settings.clone(),
                sync_set: self.config.sync_set.clone(),
            });
        } else {
            let epoch = self.config.epoch.max(last_epoch).max(self.disk.epoch_file);
            let semi = self.settings.mode == Mode::Semi;
            self.role = Role::Secondary(SecondaryRole {
                core: Secondary::new(epoch, last, last_epoch, semi),
                primary_conn: None,
                ack_due: false,
                truncate_to: None,
                rebase_to: None,
            });
            out.trace.push(format!(
                "n{} up as secondary of epoch {epoch} at lsn {last}",
                self.id
            ));
            out.events.push(NodeEvent::BecameSecondary {
                node: self.id,
                epoch,
            });
        }
    }

    /// The process dies: requests vanish unanswered, the disk keeps its durable part
    /// and `torn_keep` records of the pending one. The caller closes the connections.
    pub fn crash(&mut self, torn_keep: usize, out: &mut Out) {
        if let Role::Primary(p) = &self.role {
            out.events.push(NodeEvent::StoppedPrimary {
                node: self.id,
                epoch: p.epoch,
            });
        }
        self.role = Role::Down;
        self.reconfigure = false;
        self.stop = None;
        let lost = self.disk.crash(torn_keep);
        out.trace.push(format!(
            "n{} down: log ends at {} ({lost} pending records lost)",
            self.id,
            self.disk.last_lsn()
        ));
    }

    /// The log failed (a write returned an error): a primary's waiting requests end in
    /// doubt, as production's `StreamDriver::fail` does; the caller then stops the node.
    pub fn fail(&mut self, out: &mut Out) {
        if let Role::Primary(p) = &mut self.role {
            p.core.stop("the primary's log failed");
            Self::primary_actions(self.id, p, &self.disk, out);
        }
    }

    /// A new configuration. A change of role (or of the primary's epoch) waits until
    /// the log is settled, then restarts the role; a node that is down uses it at its
    /// next start.
    pub fn apply_config(&mut self, config: Config, out: &mut Out) {
        let old = std::mem::replace(&mut self.config, config.clone());
        let here = self.primary_here();
        self.config = old;
        let changes_role = match &mut self.role {
            Role::Down => false,
            Role::Primary(p) if here && config.epoch == p.epoch => {
                // The same primary: its members changed (removal, restore).
                let specs: Vec<MemberSpec> = config
                    .sync_set
                    .iter()
                    .map(|&id| MemberSpec { id, sync: true })
                    .chain(
                        config
                            .learners
                            .iter()
                            .map(|&id| MemberSpec { id, sync: false }),
                    )
                    .collect();
                p.core.set_members(&specs, config.degraded, config.version);
                out.events.push(NodeEvent::MembersChanged {
                    node: self.id,
                    epoch: p.epoch,
                    sync_set: config.sync_set.clone(),
                    degraded: config.degraded,
                });
                p.members.retain(|m| {
                    let keep = specs.iter().any(|s| s.id == m.id);
                    if !keep {
                        out.closes.extend(m.conn);
                    }
                    keep
                });
                for s in &specs {
                    if !p.members.iter().any(|m| m.id == s.id) {
                        p.members.push(MemberLink {
                            id: s.id,
                            conn: None,
                            truncating: false,
                            ready: false,
                            next_dial: 0,
                        });
                    }
                }
                false
            }
            Role::Primary(_) => true,
            Role::Secondary(s) => {
                if config.incarnation.is_some() {
                    s.core.fence(config.epoch);
                }
                here
            }
        };
        out.trace.push(format!(
            "n{} configured: epoch {}, primary n{}, sync set {:?}, learners {:?}",
            self.id, config.epoch, config.primary, config.sync_set, config.learners
        ));
        self.config = config;
        if changes_role {
            self.reconfigure = true;
        }
    }

    /// Members to dial now (primary only).
    pub fn to_dial(&mut self, now: u64) -> Vec<NodeId> {
        let Role::Primary(p) = &mut self.role else {
            return Vec::new();
        };
        let mut v = Vec::new();
        for m in &mut p.members {
            if m.conn.is_none() && m.next_dial <= now {
                m.next_dial = now + REDIAL_TICKS;
                v.push(m.id);
            }
        }
        v
    }

    /// A connection to `member` is open: greet it.
    pub fn dialled(&mut self, member: NodeId, conn: ConnId, out: &mut Out) {
        let Role::Primary(p) = &mut self.role else {
            return;
        };
        let m = p
            .members
            .iter_mut()
            .find(|m| m.id == member)
            .expect("dialled a member");
        m.conn = Some(conn);
        m.truncating = false;
        m.ready = false;
        out.sends
            .push((member, conn, Msg::Hello { epoch: p.epoch }));
    }

    /// A connection of this node closed.
    pub fn on_conn_closed(&mut self, conn: ConnId) {
        match &mut self.role {
            Role::Primary(p) => {
                if let Some(m) = p.members.iter_mut().find(|m| m.conn == Some(conn)) {
                    m.conn = None;
                    m.truncating = false;
                    m.ready = false;
                    p.core.on_member_disconnected(m.id);
                }
            }
            Role::Secondary(s) => {
                if s.primary_conn == Some(conn) {
                    s.primary_conn = None;
                }
            }
            Role::Down => {}
        }
    }

    /// A client's append.
    #[allow(clippy::too_many_arguments)]
    pub fn client_append(
        &mut self,
        now: u64,
        client: ClientRef,
        mode: Option<Mode>,
        timeout_ticks: u64,
        payloads: &[Vec<u8>],
        out: &mut Out,
    ) {
        let reply = |out: &mut Out, r| out.replies.push((client, r));
        let primary = self.config.primary;
        let stream_mode = self.settings.mode;
        let full = self.disk.full(now);
        let reconfigure = self.reconfigure;
        let Role::Primary(p) = &mut self.role else {
            if self.up() && primary == self.id {
                // Named primary, but not as this process: the controller is about to
                // promote a node; nobody serves until then.
                reply(out, Reply::Unavailable("no primary serves yet"));
            } else if self.up() {
                reply(out, Reply::NotPrimary { primary });
            }
            return;
        };
        if reconfigure {
            return reply(out, Reply::Unavailable("the node is changing its role"));
        }
        if mode.is_some_and(|m| m > stream_mode) {
            return reply(out, Reply::ModeNotAllowed);
        }
        if full {
            // A full disk refuses this append (nothing was appended); the stream goes on.
            return reply(out, Reply::Unavailable("no space left on the log's disk"));
        }
        let request = p.next_request;
        p.next_request += 1;
        let (first, last) = p
            .core
            .append(request, payloads.len() as u64, mode, timeout_ticks);
        for (n, payload) in payloads.iter().enumerate() {
            let lsn = self.disk.append(Rec {
                epoch: p.epoch,
                payload: payload.clone(),
            });
            assert_eq!(
                lsn,
                first + n as u64,
                "the log and the core assign the same LSNs"
            );
        }
        assert_eq!(self.disk.last_lsn(), last);
        p.requests.insert(request, client);
        out.trace.push(format!(
            "n{} append c{}#{} {first}..={last} mode {mode:?}",
            self.id, client.0, client.1
        ));
    }

    /// A client's read: (commit LSN, records from `from` up to it).
    pub fn read(&self, from: u64, records_max: u64) -> Option<(u64, Vec<(u64, Rec)>)> {
        let commit = self.readable_commit()?;
        let to = commit.min(from + records_max - 1).min(self.disk.last_lsn());
        // Records retention deleted are not served.
        let recs = (from.max(self.disk.first_lsn())..=to)
            .map(|lsn| (lsn, self.disk.record(lsn).expect("held").clone()))
            .collect();
        Some((commit, recs))
    }

    /// The disk made the log durable up to `lsn`.
    pub fn on_durable(&mut self, lsn: u64) {
        match &mut self.role {
            Role::Primary(p) => p.core.on_local_durable(lsn),
            Role::Secondary(s) => {
                s.core.on_local_durable(lsn);
                s.ack_due = true;
            }
            Role::Down => {}
        }
    }

    /// A message from `from` on `conn`.
    pub fn on_message(
        &mut self,
        now: u64,
        from: NodeId,
        conn: ConnId,
        msg: &Msg,
        out: &mut Out,
    ) -> Handled {
        let id = self.id;
        let configured_primary = self.config.primary;
        if self.reconfigure && matches!(self.role, Role::Primary(_)) {
            // The primary role is ending (fenced, or another node named): as in
            // production, which demotes at once and closes its links, nothing more
            // counts toward its commits.
            return Handled::Done;
        }
        match (&mut self.role, msg) {
            (Role::Down, _) => Handled::Done,
            (_, Msg::Control(_)) => Handled::Done,
            (Role::Secondary(s), Msg::Hello { epoch }) => {
                if from != configured_primary || *epoch < s.core.epoch() {
                    out.sends.push((
                        from,
                        conn,
                        Msg::Refuse {
                            epoch: s.core.epoch(),
                            last_lsn: s.core.last_lsn(),
                        },
                    ));
                    out.closes.push(conn);
                    out.trace.push(format!(
                        "n{id} refuses n{from} of epoch {epoch}: not the configured primary, or an older epoch"
                    ));
                    return Handled::Done;
                }
                if let Some(old) = s.primary_conn.replace(conn)
                    && old != conn
                {
                    out.closes.push(old);
                }
                s.core.on_heartbeat(*epoch, 0);
                out.sends.push((
                    from,
                    conn,
                    Msg::Welcome {
                        epoch: s.core.epoch(),
                        last_lsn: s.core.last_lsn(),
                        last_epoch: s.core.last_epoch(),
                        durable_lsn: s.core.durable_lsn(),
                    },
                ));
                out.events.push(NodeEvent::Welcomed {
                    node: id,
                    epoch: s.core.epoch(),
                });
                Handled::Done
            }
            (Role::Primary(p), Msg::Hello { .. }) => {
                out.sends.push((
                    from,
                    conn,
                    Msg::Refuse {
                        epoch: p.epoch,
                        last_lsn: self.disk.durable_lsn(),
                    },
                ));
                out.closes.push(conn);
                Handled::Done
            }
            (
                Role::Secondary(s),
                Msg::Replicate {
                    epoch,
                    prev_lsn,
                    prev_epoch,
                    commit,
                    records,
                },
            ) => {
                if s.primary_conn != Some(conn) {
                    out.closes.push(conn);
                    return Handled::Done;
                }
                if s.truncate_to.is_some() || s.rebase_to.is_some() {
                    return Handled::Later;
                }
                let first = prev_lsn + 1;
                let last = first + records.len() as u64 - 1;
                let last_epoch = records.last().map_or(*epoch, |r| r.epoch);
                if last > s.core.last_lsn() && self.disk.full(now) {
                    // The primary dials again: a full disk is retried at that pace.
                    out.trace
                        .push(format!("n{id} has no space for {first}..={last}: closes"));
                    out.closes.push(conn);
                    return Handled::Done;
                }
                let verdict = s.core.on_replicate(
                    *epoch,
                    *prev_lsn,
                    *prev_epoch,
                    first,
                    last,
                    last_epoch,
                    *commit,
                );
                out.trace.push(format!(
                    "n{id} replicate e{epoch} {first}..={last}: {verdict:?}"
                ));
                match verdict {
                    Verdict::Append { skip, first, last } => {
                        for (n, r) in records.iter().skip(skip).enumerate() {
                            let lsn = self.disk.append(r.clone());
                            assert_eq!(lsn, first + n as u64);
                        }
                        assert_eq!(self.disk.last_lsn(), last);
                        if s.core.ack_on_receipt() {
                            s.ack_due = true;
                        }
                        out.events.push(NodeEvent::Accepted {
                            node: id,
                            epoch: *epoch,
                            first,
                            last,
                        });
                    }
                    Verdict::Duplicate => s.ack_due = true,
                    Verdict::Refuse { last_lsn, .. } => out.sends.push((
                        from,
                        conn,
                        Msg::Refuse {
                            epoch: s.core.epoch(),
                            last_lsn,
                        },
                    )),
                }
                Handled::Done
            }
            (Role::Secondary(s), Msg::Heartbeat { epoch, commit }) => {
                s.core.on_heartbeat(*epoch, *commit);
                Handled::Done
            }
            (
                Role::Secondary(s),
                Msg::Truncate {
                    epoch,
                    after_lsn: lsn,
                    after_epoch: lsn_epoch,
                }
                | Msg::Rebase {
                    epoch,
                    base_lsn: lsn,
                    base_epoch: lsn_epoch,
                },
            ) => {
                if *epoch < s.core.epoch() || s.primary_conn != Some(conn) {
                    out.closes.push(conn);
                    return Handled::Done;
                }
                let asked = Some((*epoch, *lsn, *lsn_epoch));
                if matches!(msg, Msg::Truncate { .. }) {
                    s.truncate_to = asked;
                } else {
                    s.rebase_to = asked;
                }
                Handled::Done
            }
            (
                Role::Primary(p),
                Msg::Welcome {
                    last_lsn,
                    last_epoch,
                    durable_lsn,
                    ..
                },
            ) => {
                let Some(member) = p
                    .members
                    .iter()
                    .find(|m| m.conn == Some(conn))
                    .map(|m| m.id)
                else {
                    out.closes.push(conn);
                    return Handled::Done;
                };
                if let Err(Deleted(lsn)) = Self::member_connected(
                    id,
                    p,
                    &self.disk,
                    member,
                    conn,
                    *last_lsn,
                    *last_epoch,
                    *durable_lsn,
                    out,
                ) {
                    // As production, which fails the stream on a log error here.
                    out.trace.push(format!(
                        "n{id}: the log no longer holds lsn {lsn} to compare with n{member}'s: the stream fails"
                    ));
                    self.stop = Some("the log failed");
                }
                Handled::Done
            }
            (
                Role::Primary(p),
                Msg::Ack {
                    received, durable, ..
                },
            ) => {
                let Some(m) = p.members.iter().find(|m| m.conn == Some(conn)) else {
                    out.closes.push(conn);
                    return Handled::Done;
                };
                if !m.ready {
                    // As production: until a returning member has cut its tail and
                    // greeted again, its acks speak of records that are not this
                    // primary's.
                    out.trace.push(format!(
                        "n{id} ignores an ack of n{} sent before its handshake ended",
                        m.id
                    ));
                    return Handled::Done;
                }
                out.trace.push(format!(
                    "n{id} ack from n{}: received {received}, durable {durable}",
                    m.id
                ));
                out.events.push(NodeEvent::Reported {
                    node: id,
                    epoch: p.epoch,
                    member: m.id,
                    received: *received,
                    durable: *durable,
                });
                p.core.on_ack(m.id, *received, *durable);
                Handled::Done
            }
            (Role::Primary(p), Msg::Refuse { epoch, last_lsn }) => {
                let Some(m) = p.members.iter().find(|m| m.conn == Some(conn)) else {
                    out.closes.push(conn);
                    return Handled::Done;
                };
                if *epoch > p.epoch {
                    out.trace.push(format!(
                        "n{id}: member n{} is in a newer epoch {epoch}",
                        m.id
                    ));
                    out.closes.push(conn);
                    return Handled::Done;
                }
                p.core.on_refused(m.id, *last_lsn);
                Handled::Done
            }
            (_, other) => {
                out.trace.push(format!(
                    "n{id}: unexpected {:?} from n{from}: closes",
                    other.kind()
                ));
                out.closes.push(conn);
                Handled::Done
            }
        }
    }

    /// Production's `StreamDriver::on_member_connected`: resume after the prefix both
    /// logs share, ask the member to cut a tail this primary does not have, or to start
    /// over after this log's base when retention deleted what the member needs next.
    /// An error is a record the log can no longer tell (production fails the stream).
    #[allow(clippy::too_many_arguments)]
    fn member_connected(
        id: NodeId,
        p: &mut PrimaryRole,
        disk: &Disk,
        member: NodeId,
        conn: ConnId,
        last_lsn: u64,
        last_epoch: u64,
        durable_lsn: u64,
        out: &mut Out,
    ) -> Result<(), Deleted> {
        let answer = answer(
            p.epoch,
            disk.base(),
            last_lsn,
            last_epoch,
            p.core.last_lsn(),
            &mut disk.epochs(),
        )?;
        let m = p
            .members
            .iter_mut()
            .find(|m| m.id == member)
            .expect("found by its connection");
        let ask = match answer {
            Answer::Resume { agree } => {
                m.truncating = false;
                m.ready = true;
                out.trace.push(format!(
                    "n{id}: member n{member} connected: durable {durable_lsn}, resume at {}",
                    agree + 1
                ));
                let durable = durable_lsn.min(agree);
                out.events.push(NodeEvent::Reported {
                    node: id,
                    epoch: p.epoch,
                    member,
                    received: durable,
                    durable,
                });
                p.core.on_member_connected(member, durable, agree + 1);
                return Ok(());
            }
            Answer::Rebase {
                base_lsn,
                base_epoch,
            } => {
                out.trace.push(format!(
                    "n{id}: member n{member} ends at {last_lsn}, before this primary's first record {}: rebase after {base_lsn}",
                    base_lsn + 1
                ));
                Msg::Rebase {
                    epoch: p.epoch,
                    base_lsn,
                    base_epoch,
                }
            }
            Answer::Truncate {
                after_lsn,
                after_epoch,
            } => {
                out.trace.push(format!(
                    "n{id}: member n{member} holds {}..={last_lsn} that this primary does not: truncate after {after_lsn}",
                    after_lsn + 1
                ));
                Msg::Truncate {
                    epoch: p.epoch,
                    after_lsn,
                    after_epoch,
                }
            }
        };
        m.truncating = true;
        m.ready = false;
        out.sends.push((member, conn, ask));
        Ok(())
    }

    /// Runs the role for this tick: the core's tick and actions (primary), truncation
    /// and acks (secondary), and a pending change of configuration.
    pub fn drive(&mut self, now: u64, out: &mut Out) {
        if self.reconfigure && self.disk.settled() {
            self.switch_role(out);
        }
        if let Some(r) = self.retention
            && self.retention_due(now)
        {
            self.retained_at = now;
            self.retain(r, out);
            if self.stop.is_some() {
                return;
            }
        }
        let id = self.id;
        match &mut self.role {
            Role::Down => {}
            Role::Primary(_) if self.reconfigure => {}
            Role::Primary(p) => {
                p.core.on_tick(now);
                Self::primary_actions(id, p, &self.disk, out);
            }
            Role::Secondary(s) => {
                if let Some((epoch, base, base_epoch)) = s.rebase_to
                    && self.disk.settled()
                {
                    s.rebase_to = None;
                    let last = self.disk.last_lsn();
                    // Asked because this log ended before `base`: a log that reaches it
                    // now answers an older greeting and is kept.
                    if last < base {
                        let stop = self.cleanup_crash.take();
                        self.disk.reset(base, base_epoch, stop);
                        out.events.push(NodeEvent::Rebased {
                            node: id,
                            epoch,
                            base_lsn: base,
                            base_epoch,
                        });
                        if stop.is_some() {
                            self.stop = Some("crashed while starting the log over");
                            return;
                        }
                        out.trace.push(format!(
                            "n{id}: the primary no longer holds {}..={base}: the log starts over after {base}",
                            last + 1
                        ));
                        s.core = Secondary::new(
                            s.core.epoch(),
                            base,
                            base_epoch,
                            s.core.ack_on_receipt(),
                        );
                    } else {
                        out.trace.push(format!(
                            "n{id} keeps its log up to {last}: a stale rebase after {base}"
                        ));
                    }
                    if let Some(conn) = s.primary_conn {
                        let last = self.disk.last_lsn();
                        out.sends.push((
                            self.config.primary,
                            conn,
                            Msg::Welcome {
                                epoch: s.core.epoch(),
                                last_lsn: last,
                                last_epoch: self.disk.last_epoch(),
                                durable_lsn: last,
                            },
                        ));
                    }
                }
                if let Some((epoch, asked, asked_epoch)) = s.truncate_to
                    && self.disk.settled()
                {
                    s.truncate_to = None;
                    let last_epoch = self.disk.last_epoch();
                    let after = if truncation_is_stale(epoch, last_epoch) {
                        let last = self.disk.last_lsn();
                        out.trace.push(format!(
                            "n{id} keeps its log up to {last}: a truncation of epoch {epoch} would cut records of epoch {last_epoch}"
                        ));
                        last
                    } else {
                        let after = member_cut(asked, self.disk.last_up_to_epoch(asked_epoch));
                        if after + 1 < self.disk.first_lsn() {
                            // Below what retention kept here: the log starts over, and
                            // the primary sends it what it holds.
                            let stop = self.cleanup_crash.take();
                            self.disk.reset(0, 0, stop);
                            if stop.is_some() {
                                self.stop = Some("crashed while starting the log over");
                                return;
                            }
                        } else {
                            self.disk.truncate_after(after);
                        }
                        let after = self.disk.last_lsn();
                        out.trace
                            .push(format!("n{id} truncated its log after {after} as asked"));
                        out.events.push(NodeEvent::Truncated { node: id, after });
                        let last_epoch = self.disk.last_epoch();
                        s.core = Secondary::new(
                            s.core.epoch(),
                            after,
                            last_epoch,
                            s.core.ack_on_receipt(),
                        );
                        after
                    };
                    let last_epoch = self.disk.last_epoch();
                    if let Some(conn) = s.primary_conn {
                        out.sends.push((
                            self.config.primary,
                            conn,
                            Msg::Welcome {
                                epoch: s.core.epoch(),
                                last_lsn: after,
                                last_epoch,
                                durable_lsn: after,
                            },
                        ));
                    }
                }
                if s.ack_due
                    && let Some(conn) = s.primary_conn
                {
                    s.ack_due = false;
                    let (received, mut durable) = s.core.ack();
                    if self.plant == Some(Bug::AckBeforeDurable) {
                        durable = received;
                    }
                    out.sends.push((
                        self.config.primary,
                        conn,
                        Msg::Ack {
                            epoch: s.core.epoch(),
                            received,
                            durable,
                        },
                    ));
                }
            }
        }
    }

    /// Retention as production's `StreamDriver::retain`: the primary deletes below
    /// `Primary::retention_floor`, a secondary below its readable commit.
    fn retain(&mut self, r: Retention, out: &mut Out) {
        let (floor, primary_epoch) = match &self.role {
            Role::Primary(p) if self.plant == Some(Bug::RetainAboveCommit) => {
                (p.core.local_durable(), Some(p.epoch))
            }
            Role::Primary(p) => (p.core.retention_floor(), Some(p.epoch)),
            Role::Secondary(s) => (s.core.readable_commit(), None),
            Role::Down => return,
        };
        let first = self.disk.first_lsn();
        let stop = self.cleanup_crash;
        let Some(records) = self.disk.retain(floor + 1, r.keep_segments, stop) else {
            return;
        };
        out.trace.push(format!(
            "n{} retention deleted {first}..{} (floor {floor})",
            self.id,
            self.disk.first_lsn()
        ));
        out.events.push(NodeEvent::Retained {
            node: self.id,
            primary_epoch,
            first,
            records,
        });
        if stop.is_some() {
            self.cleanup_crash = None;
            self.stop = Some("crashed while deleting segments");
        }
    }

    /// Retention looks at the log in this tick's [`Node::drive`].
    pub fn retention_due(&self, now: u64) -> bool {
        self.retention.is_some()
            && self.up()
            && !self.reconfigure
            && now >= self.retained_at + RETAIN_EVERY_TICKS
            && self.disk.settled()
    }

    /// Connections the old role held, to be closed by the caller after a switch.
    fn switch_role(&mut self, out: &mut Out) {
        match &mut self.role {
            Role::Primary(p) => {
                p.core.stop("the primary lost its role");
                Self::primary_actions(self.id, p, &self.disk, out);
                out.closes.extend(p.members.iter().filter_map(|m| m.conn));
                out.events.push(NodeEvent::StoppedPrimary {
                    node: self.id,
                    epoch: p.epoch,
                });
            }
            Role::Secondary(s) => out.closes.extend(s.primary_conn),
            Role::Down => {}
        }
        self.role = Role::Down;
        self.start(out);
    }

    /// Carries out the primary core's actions.
    fn primary_actions(id: NodeId, p: &mut PrimaryRole, disk: &Disk, out: &mut Out) {
        let commit = p.core.commit_lsn();
        let epoch = p.epoch;
        let actions: Vec<Action> = p.core.poll().collect();
        for a in actions {
            match a {
                Action::Send { member, from, to } => {
                    let Some(conn) = p
                        .members
                        .iter()
                        .find(|m| m.id == member)
                        .and_then(|m| m.conn)
                    else {
                        continue;
                    };
                    if disk.epoch_at(from - 1).is_none() || from < disk.first_lsn() {
                        // As production's `send_records` failing to read: the link
                        // closes, and the member's next greeting finds it a new start.
                        out.trace.push(format!(
                            "n{id} no longer holds {from}..={to} for n{member}: closes"
                        ));
                        out.closes.push(conn);
                        continue;
                    }
                    let mut lsn = from;
                    while lsn <= to {
                        let end = to.min(lsn + FRAME_RECORDS_MAX as u64 - 1);
                        let records = (lsn..=end)
                            .map(|l| disk.record(l).expect("held").clone())
                            .collect();
                        out.sends.push((
                            member,
                            conn,
                            Msg::Replicate {
                                epoch,
                                prev_lsn: lsn - 1,
                                prev_epoch: disk.epoch_at(lsn - 1).expect("held"),
                                commit,
                                records,
                            },
                        ));
                        lsn = end + 1;
                    }
                }
                Action::Heartbeat { member } => {
                    if let Some(conn) = p
                        .members
                        .iter()
                        .find(|m| m.id == member)
                        .and_then(|m| m.conn)
                    {
                        out.sends
                            .push((member, conn, Msg::Heartbeat { epoch, commit }));
                    }
                }
                Action::Complete {
                    request,
                    first_lsn,
                    last_lsn,
                    outcome,
                } => {
                    let Some(client) = p.requests.remove(&request) else {
                        continue;
                    };
                    out.trace.push(format!(
                        "n{id} complete c{}#{} {first_lsn}..={last_lsn}: {outcome:?}",
                        client.0, client.1
                    ));
                    let reply = match outcome {
                        Outcome::Committed => {
                            out.events.push(NodeEvent::Completed {
                                node: id,
                                epoch,
                                first: first_lsn,
                                last: last_lsn,
                            });
                            Reply::Appended {
                                first: first_lsn,
                                last: last_lsn,
                            }
                        }
                        Outcome::InDoubt(_) => Reply::InDoubt {
                            first: first_lsn,
                            last: last_lsn,
                        },
                    };
                    out.replies.push((client, reply));
                }
                Action::Event(event) => {
                    out.trace.push(format!("n{id} e{epoch}: {event:?}"));
                    out.events.push(NodeEvent::Core {
                        node: id,
                        epoch,
                        event,
                    });
                }
            }
        }
    }
}
