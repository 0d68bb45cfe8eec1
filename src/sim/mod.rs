//! The deterministic cluster simulator: a whole cluster of one stream runs in one
//! thread, from a seed, on a simulated clock, under faults that real machines produce
//! rarely, and the invariants of `DESIGN.md` are checked after every step.
//!
//! Every node runs the node's own stream driver ([`crate::stream`]), which runs the
//! production state machines ([`Primary`](crate::replication::Primary),
//! [`Secondary`](crate::replication::Secondary), the commit rule and
//! [`shared_prefix`](crate::replication::shared_prefix)), and, on about half of the
//! seeds, the production controller ([`crate::control`]). Only storage, links and time
//! are simulated; frames cross the network encoded by the wire codec.
//!
//! - [`rng`]: the seeded generator every choice comes from.
//! - [`disk`]: a node's log (the driver's `LogStore`) with a durable prefix, torn and
//!   lost writes, failed writes, a full disk, slow writes, the EPOCH file, and
//!   retention's segments and BASE file (retention and starting a member over after a
//!   base, either cut short by a crash).
//! - [`network`]: connections carrying encoded frames with delay, loss (which closes
//!   the connection, as TCP does), duplication, reordering, corruption, directed
//!   partitions, late frames of old connections, and control datagrams.
//! - [`node`]: one node as a process: up or down, crash, incarnation, planted bugs.
//! - [`host`]: what the node does around the driver (links, greetings, the driver's
//!   outputs), and the driver's notes turned into the checker's [`event`]s.
//! - [`control`]: the controller on every node, its messages on the network.
//! - [`workload`]: clients that append in random modes and sizes, read from every
//!   node, time out, retry, and resolve in-doubt appends by LSN.
//! - [`checker`]: the invariants, from the disks and the nodes' own events.
//! - [`faults`]: the kinds of injected faults and the schedule of a run.
//! - [`scenario`]: the script API of the scenario tests.
//!
//! A run: `ticks` steps, the last `quiet_ticks` of them without faults (partitions
//! healed, nodes restarted, disks well), in which every append a client starts must
//! commit (liveness). Each step: faults, restarts, dials, clients, disk completions,
//! frame deliveries, the nodes' turns, new disk writes, then the checker.
//!
//! Without the controller the configuration is static: node 0 is the primary of every
//! epoch, and every start of it takes a new epoch from its EPOCH file, as the node does.
//! Scripts may still hand nodes a new configuration ([`Sim::apply_config`]).

pub mod checker;
pub mod control;
pub mod disk;
pub mod event;
pub mod faults;
pub mod host;
pub mod network;
pub mod node;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod workload;

use std::collections::VecDeque;

use crate::replication::{Mode, NodeId, OnInsufficient, StreamSettings};
use crate::stream::Handled;
use crate::wire::{Frame, Message};
use checker::Checker;
use host::Out;
use network::{NO_CONN, NetFaults, Network};
use node::Node;
use workload::Client;

pub use crate::wire::Kind as MsgKind;
pub use disk::Retention;
pub use event::NodeEvent;
pub use faults::{Fault, FaultCounts, Faults, Rates};
pub use network::Rule;
pub use node::Config;
pub use report::{Report, Stats};
pub use rng::Rng;
pub use scenario::Test;
pub use workload::Reply;

/// A record as a log holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub epoch: u64,
    pub payload: Vec<u8>,
}

/// A bug planted on purpose, to prove the checker catches it: in the stream driver
/// (`crate::stream::Plant`), in its settings, or in the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Members ack what they received as durable.
    AckBeforeDurable,
    /// The primary's driver gives the core a commit quorum one short (`k - 1`).
    CommitOnKMinusOne,
    /// The primary's driver counts a returning member's acks while the member is still
    /// cutting the tail the primary does not have.
    CountAcksWhileTruncating,
    /// The controller decides a failover on the first sync member's answer, as if every
    /// member held every commit (with `k` below the sync set they do not).
    FenceShort,
    /// The primary's retention deletes everything durable here, above the commit LSN
    /// and above what the sync set holds.
    RetainAboveCommit,
    /// Members write into their RDMA ack slot as durable what they only received (the
    /// slot is read as durable before the member's log write completed).
    AckSlotBeforeDurable,
}

#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Length of a run.
    pub ticks: u64,
    /// The last ticks of a run, without faults: liveness is checked there.
    pub quiet_ticks: u64,
    /// Inject random faults (scenario tests inject their own).
    pub faults: bool,
    /// Random clients append and read.
    pub workload: bool,
    pub plant: Option<Bug>,
    /// Settings of the stream; `None` picks them from the seed.
    pub settings: Option<StreamSettings>,
    /// Nodes of the cluster; `None` picks 3 or 4 (the fourth a learner) from the seed.
    pub nodes: Option<usize>,
    /// Events kept for the report.
    pub trace_tail: usize,
    /// Run the cluster's controller (failover, removal, restore of members). `None`:
    /// the seed decides (about half the seeds; always with the planted fence bug).
    pub controller: Option<bool>,
    /// Log retention on every node. `None`: the seed decides (about a third of the
    /// seeds; always with the planted retention bug), from a draw of its own, so a seed
    /// without retention runs exactly as it did before retention was modelled.
    pub retention: Option<Option<Retention>>,
    /// Peer links on RDMA rings (emulated verbs, with queue pair errors) once the
    /// member's log agrees. `None`: the seed decides (about half the seeds; always with
    /// the planted ack-slot bug), from a draw of its own, so a seed on TCP runs exactly
    /// as it did before rings were modelled.
    pub rdma: Option<bool>,
    /// The controller's timing: the node's defaults, or another to replay a seed found
    /// with an earlier timing.
    pub controller_timing: crate::control::ControllerSettings,
}

/// Ticks of a run by default. Short enough for thousands of seeds in the test suite's
/// two minutes, long enough for several crashes, restarts and partitions per seed.
pub const TICKS_DEFAULT: u64 = 2_000;

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            ticks: TICKS_DEFAULT,
            quiet_ticks: TICKS_DEFAULT * 3 / 10,
            faults: true,
            workload: true,
            plant: None,
            settings: None,
            nodes: None,
            trace_tail: 40,
            controller: None,
            retention: None,
            rdma: None,
            controller_timing: crate::control::ControllerSettings::default(),
        }
    }
}

/// One simulated cluster. Scenario tests drive it step by step.
pub struct Sim {
    seed: u64,
    opts: SimOptions,
    rng: Rng,
    now: u64,
    settings: StreamSettings,
    settings_desc: String,
    nodes: Vec<Node>,
    net: Network,
    clients: Vec<Client>,
    /// Per client: finished appends already handed to the checker.
    reported: Vec<usize>,
    checker: Checker,
    faults: Faults,
    rates: Rates,
    /// The newest lines of the trace, with their ticks.
    trace: VecDeque<(u64, String)>,
    trace_hash: u64,
    stats: Stats,
    violation: Option<String>,
    /// Per node, under the controller.
    control: Option<Vec<control::NodeControl>>,
    /// The configuration the controller starts from, under the controller.
    genesis: Option<crate::control::ClusterConfig>,
}

impl Sim {
    pub fn new(seed: u64, opts: SimOptions) -> Sim {
        let mut rng = Rng::new(seed);
        let mut settings = opts.settings.clone().unwrap_or_else(|| {
            let mode = match rng.range(0, 9) {
                0..=5 => Mode::Strong,
                6..=7 => Mode::Semi,
                _ => Mode::Async,
            };
            let degrade = rng.chance(250);
            StreamSettings {
                mode,
                sync_acks: rng.chance(300).then_some(1),
                min_sync: 1,
                on_insufficient: if degrade {
                    OnInsufficient::Degrade
                } else {
                    OnInsufficient::Block
                },
                ack_timeout_ticks: rng.range(100, 400),
                window_records: if rng.chance(300) {
                    rng.range(4, 32)
                } else {
                    StreamSettings::default().window_records
                },
            }
        });
        if opts.plant == Some(Bug::CommitOnKMinusOne) && opts.settings.is_none() {
            // The bug needs a quorum of two or more to be one short of.
            settings.sync_acks = None;
        }
        let controlled = opts
            .controller
            .unwrap_or_else(|| opts.plant == Some(Bug::FenceShort) || rng.chance(500));
        if opts.plant == Some(Bug::FenceShort) && opts.settings.is_none() {
            // The bug needs a fence that must hear from two members: k = 1 of 2.
            settings.sync_acks = Some(1);
        }
        if controlled {
            // A failover keeps every acknowledged commit only when commits waited for
            // the sync set's durable writes: `semi` (acks on receipt, lost when a member
            // crashes too), `async` and `degrade` trade that away by design.
            settings.mode = Mode::Strong;
            settings.on_insufficient = OnInsufficient::Block;
        }
        let n = opts
            .nodes
            .unwrap_or_else(|| if rng.chance(200) { 4 } else { 3 });
        assert!(n >= 2);
        let config = Config {
            epoch: 1,
            primary: 0,
            sync_set: (1..3.min(n) as NodeId).collect(),
            learners: (3..n as NodeId).collect(),

            incarnation: controlled.then_some(0),
            degraded: false,
            version: 0,
        };
        settings
            .validate(config.sync_set.len())
            .expect("valid settings for the cluster");
        let k = settings.k(config.sync_set.len());
        let settings_desc = format!(
            "{n} nodes, mode {:?}, k = {k} of {:?}, {:?}, ack timeout {}, window {}{}",
            settings.mode,
            config.sync_set,
            settings.on_insufficient,
            settings.ack_timeout_ticks,
            settings.window_records,
            if controlled {
                ", controller"
            } else {
                ", static roles"
            }
        );
        let retention = opts.retention.unwrap_or_else(|| {
            let mut r = Rng::new(seed ^ 0x5245_5441_494E);
            (opts.plant == Some(Bug::RetainAboveCommit) || r.chance(330)).then(|| Retention {
                segment_records: r.range(2, 8),
                keep_segments: r.range(0, 2) as usize,
            })
        });
        let mut settings_desc = settings_desc;
        if let Some(r) = retention {
            settings_desc += &format!(
                ", retention keeping {} segments of {} records",
                r.keep_segments, r.segment_records
            );
        }
        let rates = if opts.faults {
            let mut r = Rates::pick(&mut rng);
            if retention.is_some() {
                r.cleanup_crash = 3;
            }
            r
        } else {
            Rates {
                crash: 0,
                primary_crash: 0,
                crash_after_durable: 0,
                sync_error: 0,
                no_space: 0,
                latency_spike: 0,
                partition: 0,
                late_delivery: 0,
                cleanup_crash: 0,
                net: NetFaults::NONE,
            }
        };
        let rdma = opts.rdma.unwrap_or_else(|| {
            let mut r = Rng::new(seed ^ 0x5244_4d41);
            opts.plant == Some(Bug::AckSlotBeforeDurable) || r.chance(500)
        });
        if rdma {
            settings_desc += ", peer links on RDMA rings (emulated verbs)";
        }
        let nodes = (0..n as NodeId)
            .map(|id| {
                // Each node's queue pair faults come from a draw of its own.
                let rdma = rdma.then(|| seed ^ (u64::from(id) << 48) ^ 0x5150);
                Node::new(
                    id,
                    settings.clone(),
                    config.clone(),
                    opts.plant,
                    retention,
                    rdma,
                )
            })
            .collect();
        let client_count = if opts.workload {
            rng.range(2, 4) as usize
        } else {
            0
        };
        let clients = (0..client_count)
            .map(|c| Client::new(c, n, config.primary, false))
            .collect();
        let genesis = controlled.then(|| Sim::genesis_of(&config, n, &settings));
        let mut sim = Sim {
            genesis,
            seed,
            rng,
            now: 0,
            checker: Checker::new(n, settings.mode),
            settings,
            settings_desc,
            nodes,
            net: Network::new(),
            clients,
            reported: vec![0; client_count],
            faults: Faults::default(),
            rates,
            trace: VecDeque::new(),
            trace_hash: 0xCBF2_9CE4_8422_2325,
            stats: Stats::default(),
            violation: None,
            control: controlled.then(|| {
                (0..n)
                    .map(|_| control::NodeControl {
                        ctrl: None,
                        persisted: None,
                        clock_offset_ms: 0,
                    })
                    .collect()
            }),
            opts,
        };
        sim.checker.failover = controlled;
        for id in 0..n as NodeId {
            sim.start(id);
        }
        sim
    }

    /// Runs a whole seed: faults, then the quiet tail, then the final checks.
    pub fn run_seed(seed: u64, opts: SimOptions) -> Report {
        let mut sim = Sim::new(seed, opts);
        while sim.now < sim.opts.ticks && sim.violation.is_none() {
            sim.step();
        }
        sim.finish();
        sim.report()
    }

    pub fn report(&self) -> Report {
        Report {
            seed: self.seed,
            settings: self.settings_desc.clone(),
            violation: self.violation.clone(),
            trace_hash: self.trace_hash,
            trace_tail: self
                .trace
                .iter()
                .map(|(t, line)| format!("t{t} {line}"))
                .collect(),
            schedule: self.faults.schedule.clone(),
            faults: self.faults.counts,
            stats: self.stats,
            ticks: self.opts.ticks,
            plant: self.opts.plant,
            controller: self.control.is_some(),
            controller_forced: self.opts.controller == Some(true),
        }
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    pub fn network_mut(&mut self) -> &mut Network {
        &mut self.net
    }

    pub fn checker(&self) -> &Checker {
        &self.checker
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn trace_hash(&self) -> u64 {
        self.trace_hash
    }

    /// A line of the trace: kept for the report and hashed, with its tick.
    fn event(&mut self, line: String) {
        let tick = self.now.to_le_bytes();
        for b in tick.into_iter().chain(line.bytes()) {
            self.trace_hash = (self.trace_hash ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
        self.trace_hash = (self.trace_hash ^ 0xFF).wrapping_mul(0x100_0000_01B3);
        if self.trace.len() == self.opts.trace_tail {
            self.trace.pop_front();
        }
        self.trace.push_back((self.now, line));
    }

    fn fault(&mut self, kind: Fault, what: String) {
        self.event(format!("FAULT {kind:?}: {what}"));
        self.faults.record(kind, self.now, what);
    }

    fn check_violation(&mut self) {
        if self.violation.is_none()
            && let Some(v) = self.checker.violation()
        {
            let v = format!("t{}: {v}", self.now);
            self.event(format!("VIOLATION {v}"));
            self.violation = Some(v);
        }
    }

    /// Records a violation the harness itself found (liveness).
    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            let v = format!("t{}: {what}", self.now);
            self.event(format!("VIOLATION {v}"));
            self.violation = Some(v);
        }
    }

    fn quiet_from(&self) -> u64 {
        self.opts.ticks.saturating_sub(self.opts.quiet_ticks)
    }

    fn quiet(&self) -> bool {
        !self.opts.faults || self.now >= self.quiet_from()
    }

    /// Appends started from this tick on must commit: the quiet tail has had time to
    /// heal, restart and reconnect.
    fn liveness_from(&self) -> u64 {
        if self.control.is_some() {
            // A restart in the quiet tail may need a failover first: an election, the
            // failure detection and a fence round.
            return self.quiet_from() + self.opts.quiet_ticks / 2;
        }
        self.quiet_from() + self.opts.quiet_ticks / 4
    }

    /// Carries out what a node asked for.
    fn route(&mut self, from: NodeId, out: Out) {
        self.route_without_closing(from, out);
        self.notify_closed();
        self.check_violation();
    }

    /// [`Sim::route`], but the ends of the connections closed are told later.
    fn route_without_closing(&mut self, from: NodeId, out: Out) {
        for line in out.trace {
            // Rings are counted from the lines the hosts write, as the node logs them.
            if line.contains(": ring on link") {
                self.stats.rings += 1;
            } else if line.contains("falling back to tcp") {
                self.stats.ring_failures += 1;
            } else if line.contains("stepped down as the primary") {
                self.stats.step_downs += 1;
            }
            self.event(line);
        }
        for e in &out.events {
            if let NodeEvent::BecamePrimary { .. } = e {
                self.stats.primary_starts += 1;
            }
            self.checker.on_event(e, &self.nodes);
        }
        self.control_requests(from, out.requests);
        let rates = if self.quiet() {
            NetFaults::NONE
        } else {
            self.rates.net
        };
        for (conn, frame) in out.sends {
            let Some(to) = self.net.peer(conn, from) else {
                continue;
            };
            self.net.send(
                self.now,
                &mut self.rng,
                rates,
                &mut self.faults,
                from,
                to,
                conn,
                frame,
            );
        }
        for c in out.closes {
            self.net.close(c);
        }
        for ((client, token), reply) in out.replies {
            self.clients[client].on_reply(self.now, from, token, reply);
        }
        for (to, msg) in out.control {
            self.send_control(from, to, msg);
        }
        self.check_violation();
    }

    /// Both ends of every closed connection learn of it.
    fn notify_closed(&mut self) {
        // What the nodes do about it may close more: bounded rounds (a node closes
        // only its own links).
        for _ in 0..8 {
            let closed = self.net.take_closed();
            if closed.is_empty() {
                return;
            }
            for (conn, a, b) in closed {
                for id in [a, b] {
                    let mut out = Out::default();
                    let now = self.now;
                    self.nodes[id as usize].on_conn_closed(conn, now, &self.net, &mut out);
                    self.route_without_closing(id, out);
                }
            }
        }
    }

    /// Starts node `id` (it must be down).
    fn start(&mut self, id: NodeId) {
        self.start_control(id);
        let mut out = Out::default();
        self.nodes[id as usize].start(self.now, &self.net, &mut out);
        self.route(id, out);
    }

    /// Crashes node `id`: it loses what is not durable, keeping a torn prefix of it with
    /// `torn`. It stays down until restarted.
    pub fn crash(&mut self, id: NodeId, torn: bool) {
        let i = id as usize;
        if !self.nodes[i].up() {
            return;
        }
        let pending = self.nodes[i].disk().pending() as u64;
        let keep = if torn && pending > 0 {
            self.rng.range(0, pending) as usize
        } else {
            0
        };
        self.crash_control(id);
        let mut out = Out::default();
        self.nodes[i].crash(keep, &mut out);
        self.net.close_all_of(id);
        self.route(id, out);
    }

    /// Restarts node `id` from its durable log, in the role of its configuration.
    pub fn restart(&mut self, id: NodeId) {
        if !self.nodes[id as usize].up() {
            self.start(id);
        }
    }

    /// A new configuration for node `id` (what the controller will deliver).
    pub fn apply_config(&mut self, id: NodeId, config: Config) {
        let mut out = Out::default();
        self.nodes[id as usize].apply_config(config, self.now, &self.net, &mut out);
        self.route(id, out);
    }

    /// Crashes node `id` if it must stop: its stream failed (after one more turn, in
    /// which it answers what it can, as the node's next turn does), or it died in the
    /// middle of a cleanup of its log.
    fn stop_if_asked(&mut self, id: NodeId) {
        let i = id as usize;
        let Some((why, died)) = self.nodes[i].stop() else {
            return;
        };
        self.event(format!("n{id} stops: {why}"));
        if !died {
            let mut out = Out::default();
            self.nodes[i].with(self.now, &self.net, &mut out, |p, cx| p.drive(cx));
            self.route(id, out);
        }
        self.crash(id, false);
        self.nodes[i].restart_at = Some(self.now + self.rng.range(5, 200));
    }

    /// One tick.
    pub fn step(&mut self) {
        self.now += 1;
        let now = self.now;
        let quiet = self.quiet();
        if !quiet {
            self.inject_faults();
        } else if self.opts.faults && now == self.quiet_from() {
            self.event("quiet: faults stop, partitions heal, nodes restart".into());
            self.net.heal();
            for n in &mut self.nodes {
                let d = n.disk_mut();
                d.full_until = 0;
                d.slow_until = 0;
                d.fail_next_write = false;
                d.cleanup_crash = None;
                if !n.up() {
                    n.restart_at = Some(now);
                }
            }
        }
        for id in 0..self.nodes.len() as NodeId {
            let n = &self.nodes[id as usize];
            if !n.up() && n.restart_at.is_some_and(|t| t <= now) {
                self.start(id);
            }
        }
        // Primaries dial the members they are not connected to.
        for id in 0..self.nodes.len() as NodeId {
            for member in self.nodes[id as usize].to_dial(now) {
                let conn = self.net.connect(id, member);
                let mut out = Out::default();
                self.nodes[id as usize].with(now, &self.net, &mut out, |p, cx| {
                    p.dialled(cx, member, conn)
                });
                self.route(id, out);
            }
        }
        for n in &mut self.nodes {
            n.disk_mut().now = now;
        }
        // Clients: no new appends at the very end, so the run can drain.
        let may_start = self.opts.workload && now + self.opts.quiet_ticks / 3 < self.opts.ticks;
        let mode = self.settings.mode;
        for c in 0..self.clients.len() {
            if let Some(op) = self.clients[c].tick(now, &mut self.rng, mode, may_start) {
                self.execute(c, op);
            }
        }
        self.complete_writes();
        for p in self.net.due(now) {
            if p.conn != NO_CONN && !self.net.is_open(p.conn) {
                continue;
            }
            let to = p.to as usize;
            if !self.nodes[to].up() {
                // Nobody listens: the connection is refused or reset.
                self.net.close(p.conn);
                self.notify_closed();
                continue;
            }
            if p.conn == NO_CONN {
                // A datagram that fails its checks is dropped, as UDP drops it.
                if let Ok(Frame {
                    message: Message::Control { message },
                    ..
                }) = Frame::parse(&p.frame)
                {
                    self.deliver_control(p.from, p.to, message);
                }
                continue;
            }
            let mut out = Out::default();
            let handled = self.nodes[to].on_frame(now, p.conn, &p.frame, &self.net, &mut out);
            self.route(p.to, out);
            self.stop_if_asked(p.to);
            if handled == Handled::Later {
                self.net.retry_later(p, now + 1);
            }
        }
        self.tick_control();
        for id in 0..self.nodes.len() {
            if self.nodes[id].retention_due(now) {
                // The rule's measure as the node's core stands when it picks its floor:
                // a commit may rest on a write that became durable in this step.
                self.checker.measure(&self.nodes);
            }
            let mut out = Out::default();
            self.nodes[id].with(now, &self.net, &mut out, |p, cx| p.drive(cx));
            self.route(id as NodeId, out);
            self.stop_if_asked(id as NodeId);
        }
        for id in 0..self.nodes.len() {
            let slow = self.nodes[id].disk().slow_until > now;
            let latency = if slow {
                self.rng.range(30, 200)
            } else {
                self.rng.range(1, 8)
            };
            self.nodes[id].start_flush(now, latency);
        }
        self.checker.check(&self.nodes);
        self.check_violation();
        self.settle_clients();
    }

    /// Disk writes that complete now; a node may crash right after its write became
    /// durable, before acting on it.
    fn complete_writes(&mut self) {
        let now = self.now;
        for id in 0..self.nodes.len() {
            let Some(c) = self.nodes[id].disk_mut().complete(now) else {
                continue;
            };
            match c {
                disk::Completion::Durable(lsn) => {
                    if !self.quiet() && self.rng.chance(self.rates.crash_after_durable) {
                        self.fault(
                            Fault::CrashAfterDurable,
                            format!("n{id} crashes with lsn {lsn} durable, before acting on it"),
                        );
                        self.crash(id as NodeId, false);
                        self.nodes[id].restart_at = Some(now + self.rng.range(5, 300));
                        continue;
                    }
                    self.nodes[id].on_durable(lsn, now);
                }
                disk::Completion::Failed => {
                    self.event(format!("n{id}'s write failed: the node stops and recovers"));
                    let mut out = Out::default();
                    self.nodes[id].with(now, &self.net, &mut out, |p, cx| {
                        p.fail(cx);
                        p.drive(cx);
                    });
                    self.route(id as NodeId, out);
                    self.crash(id as NodeId, true);
                    self.nodes[id].restart_at = Some(now + self.rng.range(5, 200));
                }
            }
        }
    }

    /// The end of a run: acknowledged commits kept, no record twice, and every append
    /// of the quiet tail answered.
    pub fn finish(&mut self) {
        self.checker.finish(&self.nodes);
        self.check_violation();
        if self.violation.is_some() || !self.opts.faults {
            return;
        }
        let live_from = self.liveness_from();
        for c in 0..self.clients.len() {
            if let Some((token, issued)) = self.clients[c].pending_append()
                && issued >= live_from
            {
                self.violate(format!(
                    "liveness: c{c}#{token} appended at t{issued} in the quiet tail never completed"
                ));
            }
        }
    }
}
