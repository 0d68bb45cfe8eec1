//! The script API of scenario tests: a cluster without random faults or clients, driven
//! step by step, whose faults the test names.
//!
//! ```
//! use lockstep::sim::{MsgKind, Test};
//! let mut t = Test::new();
//! let r = t.append(2);
//! t.drop_next(1, 0, MsgKind::Ack);
//! t.node(2).crash();
//! t.partition(&[0], &[1, 2]);
//! t.heal();
//! t.node(2).restart();
//! t.run_until(500, |t| t.ending(r).is_some());
//! ```
//!
//! Every step is checked like a random run: a test fails at the first violation, with
//! the trace. The same script always gives the same trace.

use crate::replication::{Mode, NodeId, StreamSettings};
use crate::sim::MsgKind;
use crate::sim::network::Rule;
use crate::sim::node::{Config, Node};
use crate::sim::workload::Ending;
use crate::sim::{Bug, Rec, Sim, SimOptions};

/// Ticks a scripted append may wait for its commit: longer than any scenario.
const SCRIPT_TIMEOUT_TICKS: u64 = 100_000;

/// An append made by the script: (client, token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Req(usize, u64);

pub struct Test {
    sim: Sim,
}

/// One node, as the script acts on it.
pub struct NodeScript<'a> {
    sim: &'a mut Sim,
    id: NodeId,
}

impl NodeScript<'_> {
    /// The process dies, losing what is not durable.
    pub fn crash(self) {
        self.sim.crash(self.id, false);
    }

    /// The process dies, and part of its pending write survives (a torn write).
    pub fn crash_torn(self) {
        self.sim.crash(self.id, true);
    }

    /// The process starts again from its durable log.
    pub fn restart(self) {
        self.sim.restart(self.id);
    }

    /// The node's next log write fails (EIO on a dsync write): it stops and recovers.
    pub fn fail_next_write(self) {
        self.sim.nodes[self.id as usize].disk_mut().fail_next_write = true;
    }

    /// The node's disk is full for `ticks`.
    pub fn fill_disk(self, ticks: u64) {
        let until = self.sim.now() + ticks;
        self.sim.nodes[self.id as usize].disk_mut().full_until = until;
    }

    /// The node's writes started in the next `ticks` are slow (a latency spike).
    pub fn slow_disk(self, ticks: u64) {
        let until = self.sim.now() + ticks;
        self.sim.nodes[self.id as usize].disk_mut().slow_until = until;
    }

    /// A new configuration for this node, as the controller delivers one.
    pub fn configure(self, config: Config) {
        self.sim.apply_config(self.id, config);
    }
}

impl Default for Test {
    fn default() -> Self {
        Test::new()
    }
}

impl Test {
    /// Three nodes, node 0 primary, strong mode with every member's ack, connected.
    pub fn new() -> Test {
        Test::with(StreamSettings::default(), 3, None)
    }

    pub fn with(settings: StreamSettings, nodes: usize, plant: Option<Bug>) -> Test {
        Test::with_retention(settings, nodes, plant, None)
    }

    /// As [`Test::with`], every node's log kept as `retention` says.
    pub fn with_retention(
        settings: StreamSettings,
        nodes: usize,
        plant: Option<Bug>,
        retention: Option<crate::sim::Retention>,
    ) -> Test {
        let sim = Sim::new(
            1,
            SimOptions {
                faults: false,
                workload: false,
                controller: Some(false),
                settings: Some(settings),
                nodes: Some(nodes),
                plant,
                retention: Some(retention),
                rdma: Some(false),
                ..SimOptions::default()
            },
        );
        let mut t = Test { sim };
        let members = nodes - 1;
        t.run_until(100, |t| t.view(0).connected_members().len() == members);
        t
    }

    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    pub fn node(&mut self, id: NodeId) -> NodeScript<'_> {
        NodeScript {
            sim: &mut self.sim,
            id,
        }
    }

    /// A read-only view of node `id`.
    pub fn view(&self, id: NodeId) -> &Node {
        self.sim.node(id)
    }

    /// Nodes in `a` and nodes in `b` cannot reach each other until [`Test::heal`].
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.sim.net.block(x, y, u64::MAX);
                self.sim.net.block(y, x, u64::MAX);
            }
        }
        self.sim.notify_closed();
    }

    /// Messages from `from` to `to` are lost until [`Test::heal`]; the other direction
    /// works.
    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        self.sim.net.block(from, to, u64::MAX);
        self.sim.notify_closed();
    }

    pub fn heal(&mut self) {
        self.sim.net.heal();
    }

    /// The next message of `kind` from `from` to `to` is lost (its connection closes).
    pub fn drop_next(&mut self, from: NodeId, to: NodeId, kind: MsgKind) {
        self.sim.net.add_rule(from, to, kind, Rule::Drop);
    }

    /// The next message of `kind` from `from` to `to` arrives twice.
    pub fn duplicate_next(&mut self, from: NodeId, to: NodeId, kind: MsgKind) {
        self.sim.net.add_rule(from, to, kind, Rule::Duplicate);
    }

    /// The next message of `kind` from `from` to `to` arrives `ticks` late, after
    /// messages sent behind it.
    pub fn delay_next(&mut self, from: NodeId, to: NodeId, kind: MsgKind, ticks: u64) {
        self.sim.net.add_rule(from, to, kind, Rule::Delay(ticks));
    }

    /// The next message of `kind` from `from` to `to` is held back until
    /// [`Test::deliver_held`].
    pub fn hold_next(&mut self, from: NodeId, to: NodeId, kind: MsgKind) {
        self.sim.net.add_rule(from, to, kind, Rule::Hold);
    }

    /// Held messages arrive now, on the current connection between their nodes: late
    /// traffic, possibly of an older epoch. Returns how many.
    pub fn deliver_held(&mut self) -> usize {
        let now = self.sim.now();
        self.sim.net.release_held(now)
    }

    pub fn held(&self) -> usize {
        self.sim.net.held()
    }

    /// Messages of `kind` from `from` to `to` in flight.
    pub fn in_flight(&self, from: NodeId, to: NodeId, kind: MsgKind) -> usize {
        self.sim.net.in_flight(from, to, kind)
    }

    /// Appends `records` random records in the stream's mode.
    pub fn append(&mut self, records: usize) -> Req {
        self.append_mode(records, None)
    }

    pub fn append_mode(&mut self, records: usize, mode: Option<Mode>) -> Req {
        let primary = self
            .sim
            .nodes()
            .iter()
            .find(|n| n.is_primary())
            .map_or(0, |n| n.id);
        self.append_to(primary, records, mode)
    }

    /// Appends `records` records, asking node `target` first. Each append comes from
    /// its own client, so appends of a script can be in flight together.
    pub fn append_to(&mut self, target: NodeId, records: usize, mode: Option<Mode>) -> Req {
        let client = self.sim.script_client(target);
        let mut payloads = self.sim.payloads(client);
        let first = payloads.first().cloned().unwrap_or_default();
        payloads.resize(records, first);
        // Unique payloads whatever the count: the record's index goes into each.
        for (i, p) in payloads.iter_mut().enumerate() {
            p.truncate(6);
            p.extend_from_slice(&(i as u16).to_le_bytes());
            p.push(0x5A);
        }
        Req(
            client,
            self.sim
                .client_append(client, mode, SCRIPT_TIMEOUT_TICKS, payloads),
        )
    }

    /// How the append ended, if it did.
    pub fn ending(&self, r: Req) -> Option<&Ending> {
        self.sim.ending(r.0, r.1)
    }

    /// The append was acknowledged as committed.
    pub fn committed(&self, r: Req) -> bool {
        matches!(self.ending(r), Some(Ending::Committed { .. }))
    }

    /// Reads from node `id`, checked like every read.
    pub fn read(&mut self, id: NodeId, from: u64, records_max: u64) -> Option<(u64, Vec<Rec>)> {
        let r = self.sim.read(id, from, records_max);
        assert_eq!(self.sim.violation(), None);
        r
    }

    pub fn step(&mut self) {
        self.sim.step();
        assert_eq!(self.sim.violation(), None, "{}", self.sim.report());
    }

    pub fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.step();
        }
    }

    /// Steps until `done`, at most `max_ticks`; fails if it is not reached.
    pub fn run_until(&mut self, max_ticks: u64, done: impl Fn(&Test) -> bool) {
        for _ in 0..max_ticks {
            if done(self) {
                return;
            }
            self.step();
        }
        assert!(
            done(self),
            "not reached in {max_ticks} ticks\n{}",
            self.sim.report()
        );
    }

    /// Steps without failing on a violation (for tests of the checker itself);
    /// returns the first violation.
    pub fn run_expecting_violation(&mut self, max_ticks: u64) -> Option<String> {
        for _ in 0..max_ticks {
            self.sim.step();
            if let Some(v) = self.sim.violation() {
                return Some(v.to_string());
            }
        }
        None
    }
}
