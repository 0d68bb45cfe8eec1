//! The deterministic simulator, first slice (issue 4): one stream of a static cluster,
//! one primary and two members, run in one thread from a seed on a simulated clock.
//!
//! It runs the production state machines ([`Primary`], [`Secondary`]) and nothing else
//! of the protocol: this module only plays the drivers (disk, network, clients) around
//! them, and checks the invariants of `DESIGN.md` after every tick.
//!
//! # Fault model
//! - Disk (per node): an in-memory log with a durable prefix and a pending part; a flush
//!   completes after a random latency. A member crash loses the pending part, except a
//!   random prefix of it that a torn write left on disk (kept whole and valid, as the
//!   log's recovery would find it). An fsync error stops the member, as production does.
//! - Network (per member link): messages (`Replicate`, `Ack`, `Refuse`, `Heartbeat`)
//!   with a random delay, duplicated, reordered (a message overtakes the link's queue),
//!   and lost. A lost message closes the link, as a TCP connection that loses data
//!   does; messages of a closed link are never delivered. Partitions cut a member off
//!   for a while, then heal. A link is established by an instantaneous handshake that
//!   calls `Primary::on_member_connected` with the member's durable LSN and its last
//!   LSN + 1, as `server::stream` does when the logs agree.
//! - Processes: members crash and restart at any tick; a restarted member rebuilds its
//!   `Secondary` from its durable log.
//! - Clients: appends of random payloads in the stream's mode, with timeouts (in doubt).
//!
//! # Checked after every tick
//! 1. No acknowledged commit lost: a request completed as committed is durable on the
//!    primary and, in strong mode, on at least `k` members, at completion and forever
//!    after (crashes never take it from a member's durable log).
//! 2. Committed prefixes are byte-identical: every record a member appends equals the
//!    primary's record at that LSN (the primary never truncates in this slice, so this
//!    is stronger than comparing committed prefixes).
//! 3. Not applicable: one epoch, one fixed primary.
//! 4. Nothing readable as committed before the rule holds: `Primary::commit_lsn()` and
//!    every `Secondary::readable_commit()` never exceed the highest LSN the commit rule
//!    ever allowed given what the nodes really held (received for semi, durable for
//!    strong, the primary's durable LSN for async).
//!
//! Liveness: in the quiet tail of a run (no faults, members restarted, partitions
//! healed), every request appended completes as committed.
//!
//! # Not covered yet
//! No controller, no failover, no epoch change, no primary crash (the primary keeps
//! its log, so no member is ever asked to truncate), no `degrade` mode, no wire codec
//! (messages are Rust values), no handshake messages (connecting is instantaneous), no
//! full disk, no semi-mode durability check on members (semi acks receipt only).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use crate::replication::commit_rule::commit_point;
use crate::replication::{
    Action, MemberSpec, Mode, NodeId, Outcome, Primary, RequestId, Secondary, StreamSettings,
    Verdict,
};

/// The one epoch of this slice.
const EPOCH: u64 = 1;

/// A splitmix64 generator: small, fast and the same on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.next_u64() % 1000 < per_mille
    }
}

/// A bug planted in the simulated member driver, to prove the checker catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The member acks its received LSN as durable.
    AckBeforeDurable,
}

/// Kinds of injected faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Crash,
    TornWrite,
    FsyncError,
    Partition,
    Drop,
    Duplicate,
    Reorder,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::Crash,
        Fault::TornWrite,
        Fault::FsyncError,
        Fault::Partition,
        Fault::Drop,
        Fault::Duplicate,
        Fault::Reorder,
    ];
}

#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Length of a run.
    pub ticks: u64,
    /// The last ticks of a run, without faults: liveness is checked there.
    pub quiet_ticks: u64,
    /// Inject random faults (scenario tests inject their own).
    pub faults: bool,
    /// Random clients append records.
    pub workload: bool,
    pub plant: Option<Bug>,
    /// Settings of the stream; `None` picks them from the seed.
    pub settings: Option<StreamSettings>,
    /// Events kept for the report.
    pub trace_tail: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            ticks: 3_000,
            quiet_ticks: 1_000,
            faults: true,
            workload: true,
            plant: None,
            settings: None,
            trace_tail: 40,
        }
    }
}

/// What one seed did.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub settings: String,
    pub violation: Option<String>,
    /// Hash of the full trace: the same seed gives the same hash.
    pub trace_hash: u64,
    pub trace_tail: Vec<String>,
    pub schedule: Vec<String>,
    pub faults: [u64; Fault::ALL.len()],
    pub committed: u64,
    pub in_doubt: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {} ({})", self.seed, self.settings)?;
        if let Some(v) = &self.violation {
            writeln!(f, "VIOLATION: {v}")?;
        }
        writeln!(f, "fault schedule:")?;
        for s in &self.schedule {
            writeln!(f, "  {s}")?;
        }
        writeln!(f, "last events:")?;
        for s in &self.trace_tail {
            writeln!(f, "  {s}")?;
        }
        writeln!(f, "replay: lockstep-sim --seed {}", self.seed)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    epoch: u64,
    payload: Vec<u8>,
}

#[derive(Clone, Debug)]
enum Msg {
    Replicate {
        epoch: u64,
        prev_lsn: u64,
        prev_epoch: u64,
        commit: u64,
        records: Vec<Rec>,
    },
    Ack {
        received: u64,
        durable: u64,
    },
    Refuse {
        last_lsn: u64,
    },
    Heartbeat {
        epoch: u64,
        commit: u64,
    },
}

struct Packet {
    at: u64,
    seq: u64,
    member: usize,
    to_member: bool,
    link: u64,
    msg: Msg,
}

/// A node's log: `log[..durable]` survives a crash.
#[derive(Default)]
struct Disk {
    log: Vec<Rec>,
    durable: usize,
    /// The flush in flight: (records it covers, tick it completes).
    flush: Option<(usize, u64)>,
}

impl Disk {
    fn start_flush(&mut self, now: u64, rng: &mut Rng) {
        if self.flush.is_none() && self.log.len() > self.durable {
            self.flush = Some((self.log.len(), now + rng.range(1, 8)));
        }
    }

    fn last_epoch(&self) -> u64 {
        self.log.last().map_or(0, |r| r.epoch)
    }
}

struct Member {
    id: NodeId,
    disk: Disk,
    /// `None` while the process is down.
    sec: Option<Secondary>,
    connected: bool,
    /// Incremented at every connect and disconnect: packets of an old link are void.
    link: u64,
    partitioned_until: u64,
    restart_at: u64,
    ack_due: bool,
    fsync_fails: bool,
    /// Delivery tick of the last packet on each direction, for FIFO links.
    fifo: [u64; 2],
    /// Most records this member ever received (semi commits count receipt, which a
    /// crash may take back).
    max_received: u64,
}

struct Req {
    last: u64,
    issued: u64,
}

/// One simulated cluster. Scenario tests drive it tick by tick.
pub struct Sim {
    seed: u64,
    opts: SimOptions,
    rng: Rng,
    now: u64,
    mode: Mode,
    k: usize,
    settings_desc: String,
    primary: Primary,
    pdisk: Disk,
    members: Vec<Member>,
    net: Vec<Packet>,
    seq: u64,
    next_request: RequestId,
    requests: BTreeMap<RequestId, Req>,
    outcomes: BTreeMap<RequestId, Outcome>,
    /// Highest LSN the commit rule ever allowed.
    allowed: u64,
    /// Highest LSN completed as committed.
    committed_max: u64,
    trace: VecDeque<String>,
    trace_hash: u64,
    schedule: Vec<String>,
    faults: [u64; Fault::ALL.len()],
    committed: u64,
    in_doubt: u64,
    violation: Option<String>,
}

impl Sim {
    pub fn new(seed: u64, opts: SimOptions) -> Sim {
        let mut rng = Rng::new(seed);
        let settings = opts.settings.clone().unwrap_or_else(|| {
            let mode = match rng.range(0, 9) {
                0..=5 => Mode::Strong,
                6..=7 => Mode::Semi,
                _ => Mode::Async,
            };
            let sync_acks = if rng.chance(300) { Some(1) } else { None };
            StreamSettings {
                mode,
                sync_acks,
                ..StreamSettings::default()
            }
        });
        let specs = [1, 2].map(|id| MemberSpec { id, sync: true });
        let k = settings.k(specs.len());
        let mode = settings.mode;
        let settings_desc = format!("mode {mode:?}, k = {k}");
        let primary = Primary::new(settings, EPOCH, &specs, 0, 0);
        let semi = mode == Mode::Semi;
        let members = specs
            .iter()
            .map(|s| Member {
                id: s.id,
                disk: Disk::default(),
                sec: Some(Secondary::new(EPOCH, 0, 0, semi)),
                connected: false,
                link: 0,
                partitioned_until: 0,
                restart_at: 0,
                ack_due: false,
                fsync_fails: false,
                fifo: [0; 2],
                max_received: 0,
            })
            .collect();
        Sim {
            seed,
            opts,
            rng,
            now: 0,
            mode,
            k,
            settings_desc,
            primary,
            pdisk: Disk::default(),
            members,
            net: Vec::new(),
            seq: 0,
            next_request: 1,
            requests: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            allowed: 0,
            committed_max: 0,
            trace: VecDeque::new(),
            trace_hash: 0xCBF2_9CE4_8422_2325,
            schedule: Vec::new(),
            faults: [0; Fault::ALL.len()],
            committed: 0,
            in_doubt: 0,
            violation: None,
        }
    }

    /// Runs a whole seed: faults, then the quiet tail, then the liveness check.
    pub fn run_seed(seed: u64, opts: SimOptions) -> Report {
        let mut sim = Sim::new(seed, opts);
        while sim.now < sim.opts.ticks && sim.violation.is_none() {
            sim.step();
        }
        sim.check_liveness();
        sim.report()
    }

    pub fn report(&self) -> Report {
        Report {
            seed: self.seed,
            settings: self.settings_desc.clone(),
            violation: self.violation.clone(),
            trace_hash: self.trace_hash,
            trace_tail: self.trace.iter().cloned().collect(),
            schedule: self.schedule.clone(),
            faults: self.faults,
            committed: self.committed,
            in_doubt: self.in_doubt,
        }
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    pub fn primary_commit(&self) -> u64 {
        self.primary.commit_lsn()
    }

    /// The durable LSN on member `m`'s disk (1 or 2).
    pub fn member_durable(&self, m: NodeId) -> u64 {
        self.members[m as usize - 1].disk.durable as u64
    }

    pub fn member_up(&self, m: NodeId) -> bool {
        self.members[m as usize - 1].sec.is_some()
    }

    pub fn connected(&self, m: NodeId) -> bool {
        self.members[m as usize - 1].connected
    }

    /// How request `r` ended, if it did.
    pub fn outcome(&self, r: RequestId) -> Option<&Outcome> {
        self.outcomes.get(&r)
    }

    /// Acks from member `m` on the wire.
    pub fn acks_in_flight(&self, m: NodeId) -> usize {
        let i = m as usize - 1;
        self.net
            .iter()
            .filter(|p| p.member == i && matches!(p.msg, Msg::Ack { .. }))
            .count()
    }

    fn fault(&mut self, kind: Fault, what: String) {
        self.faults[Fault::ALL.iter().position(|k| *k == kind).expect("listed")] += 1;
        let line = format!("t{} {kind:?}: {what}", self.now);
        self.schedule.push(line.clone());
        self.event(line);
    }

    fn event(&mut self, s: String) {
        for b in self.now.to_le_bytes().iter().chain(s.as_bytes()) {
            self.trace_hash = (self.trace_hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01B3);
        }
        if self.trace.len() == self.opts.trace_tail {
            self.trace.pop_front();
        }
        if self.opts.trace_tail > 0 {
            self.trace.push_back(format!("t{} {s}", self.now));
        }
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.event(format!("VIOLATION {what}"));
            self.violation = Some(format!("t{}: {what}", self.now));
        }
    }

    fn quiet(&self) -> bool {
        !self.opts.faults || self.now + self.opts.quiet_ticks >= self.opts.ticks
    }

    /// A client appends `count` random records in the stream's mode.
    pub fn append(&mut self, count: u64, timeout_ticks: u64) -> RequestId {
        let request = self.next_request;
        self.next_request += 1;
        let (first, last) = self.primary.append(request, count, None, timeout_ticks);
        for _ in first..=last {
            let len = self.rng.range(1, 24) as usize;
            let payload = (0..len).map(|_| self.rng.next_u64() as u8).collect();
            self.pdisk.log.push(Rec {
                epoch: EPOCH,
                payload,
            });
        }
        self.pdisk.start_flush(self.now, &mut self.rng);
        self.requests.insert(
            request,
            Req {
                last,
                issued: self.now,
            },
        );
        self.event(format!("append r{request} {first}..={last}"));
        self.drive_primary();
        request
    }

    /// Crashes member `m`: it loses what is not durable (keeping a torn prefix of it
    /// with `torn`). It stays down until `restart`.
    pub fn crash(&mut self, m: NodeId, torn: bool) {
        let i = m as usize - 1;
        self.disconnect(i);
        let mem = &mut self.members[i];
        mem.sec = None;
        mem.restart_at = u64::MAX;
        mem.fsync_fails = false;
        mem.disk.flush = None;
        let pending = mem.disk.log.len() - mem.disk.durable;
        let keep = if torn && pending > 0 {
            self.rng.range(0, pending as u64) as usize
        } else {
            0
        };
        let mem = &mut self.members[i];
        mem.disk.log.truncate(mem.disk.durable + keep);
        mem.disk.durable = mem.disk.log.len();
        let ends = mem.disk.durable;
        self.event(format!(
            "m{m} down: log ends at {ends} ({keep} torn records kept)"
        ));
    }

    /// Restarts member `m` from its durable log.
    pub fn restart(&mut self, m: NodeId) {
        let i = m as usize - 1;
        let semi = self.mode == Mode::Semi;
        let mem = &mut self.members[i];
        let last = mem.disk.log.len() as u64;
        mem.sec = Some(Secondary::new(EPOCH, last, mem.disk.last_epoch(), semi));
        mem.ack_due = false;
        mem.restart_at = 0;
        self.event(format!("m{m} restarted at lsn {last}"));
    }

    /// Loses the acks of member `m` on the wire; the link closes, as TCP's would.
    pub fn lose_acks(&mut self, m: NodeId) -> usize {
        let i = m as usize - 1;
        let before = self.net.len();
        self.net
            .retain(|p| !(p.member == i && matches!(p.msg, Msg::Ack { .. })));
        let lost = before - self.net.len();
        self.disconnect(i);
        self.event(format!("lost {lost} acks of m{m}"));
        lost
    }

    /// Cuts member `m` off until `until`.
    pub fn partition(&mut self, m: NodeId, until: u64) {
        let i = m as usize - 1;
        self.members[i].partitioned_until = until;
        self.disconnect(i);
    }

    fn disconnect(&mut self, i: usize) {
        let mem = &mut self.members[i];
        if mem.connected {
            mem.connected = false;
            mem.link += 1;
            mem.fifo = [0; 2];
            let id = mem.id;
            self.primary.on_member_disconnected(id);
            self.event(format!("m{id} disconnected"));
        }
    }

    fn connect(&mut self, i: usize) {
        let mem = &mut self.members[i];
        let Some(sec) = &mem.sec else { return };
        let (durable, last) = (sec.durable_lsn(), sec.last_lsn());
        mem.connected = true;
        mem.link += 1;
        mem.fifo = [0; 2];
        let id = mem.id;
        self.event(format!("m{id} connected: durable {durable}, last {last}"));
        self.primary.on_member_connected(id, durable, last + 1);
    }

    fn send(&mut self, i: usize, to_member: bool, msg: Msg) {
        let faults = !self.quiet();
        if faults && self.rng.chance(4) {
            self.fault(
                Fault::Drop,
                format!("{msg:?} of m{} lost: link closes", i + 1)
                    .chars()
                    .take(120)
                    .collect(),
            );
            self.disconnect(i);
            return;
        }
        let dir = usize::from(to_member);
        let mut at = self.now + self.rng.range(1, 10);
        if faults && self.rng.chance(10) {
            self.fault(
                Fault::Reorder,
                format!("a message to/from m{} overtakes", i + 1),
            );
        } else {
            at = at.max(self.members[i].fifo[dir]);
            self.members[i].fifo[dir] = at;
        }
        let link = self.members[i].link;
        if faults && self.rng.chance(10) {
            self.fault(
                Fault::Duplicate,
                format!("a message to/from m{} twice", i + 1),
            );
            self.seq += 1;
            let later = at + self.rng.range(0, 10);
            self.net.push(Packet {
                at: later,
                seq: self.seq,
                member: i,
                to_member,
                link,
                msg: msg.clone(),
            });
        }
        self.seq += 1;
        self.net.push(Packet {
            at,
            seq: self.seq,
            member: i,
            to_member,
            link,
            msg,
        });
    }

    /// Carries out the primary's actions.
    fn drive_primary(&mut self) {
        let actions: Vec<Action> = self.primary.poll().collect();
        let commit = self.primary.commit_lsn();
        for a in actions {
            match a {
                Action::Send { member, from, to } => {
                    let i = member as usize - 1;
                    if !self.members[i].connected {
                        continue;
                    }
                    let records = self.pdisk.log[from as usize - 1..to as usize].to_vec();
                    let prev_epoch = if from > 1 {
                        self.pdisk.log[from as usize - 2].epoch
                    } else {
                        0
                    };
                    self.event(format!("send m{member} {from}..={to} commit {commit}"));
                    let msg = Msg::Replicate {
                        epoch: EPOCH,
                        prev_lsn: from - 1,
                        prev_epoch,
                        commit,
                        records,
                    };
                    self.send(i, true, msg);
                }
                Action::Heartbeat { member } => {
                    let i = member as usize - 1;
                    if self.members[i].connected {
                        let msg = Msg::Heartbeat {
                            epoch: EPOCH,
                            commit,
                        };
                        self.send(i, true, msg);
                    }
                }
                Action::Complete {
                    request,
                    first_lsn,
                    last_lsn,
                    outcome,
                } => {
                    self.event(format!(
                        "complete r{request} {first_lsn}..={last_lsn} {outcome:?}"
                    ));
                    let issued = self.requests.remove(&request).map_or(0, |r| r.issued);
                    let quiet_from = self.opts.ticks.saturating_sub(self.opts.quiet_ticks);
                    if self.opts.faults && issued > quiet_from && outcome != Outcome::Committed {
                        self.violate(format!(
                            "liveness: r{request}, appended in the quiet tail, ended {outcome:?}"
                        ));
                    }
                    if outcome == Outcome::Committed {
                        self.committed += 1;
                        self.committed_max = self.committed_max.max(last_lsn);
                        self.check_kept();
                    } else {
                        self.in_doubt += 1;
                    }
                    self.outcomes.insert(request, outcome);
                }
                Action::Event(e) => self.event(format!("primary: {e:?}")),
            }
        }
    }

    fn deliver(&mut self, p: Packet) {
        let i = p.member;
        let mem = &self.members[i];
        if !mem.connected || mem.link != p.link || mem.sec.is_none() {
            return;
        }
        let id = mem.id;
        if !p.to_member {
            match p.msg {
                Msg::Ack { received, durable } => {
                    self.event(format!("m{id} ack {received}/{durable}"));
                    self.primary.on_ack(id, received, durable);
                }
                Msg::Refuse { last_lsn } => {
                    self.event(format!("m{id} refused: ends at {last_lsn}"));
                    self.primary.on_refused(id, last_lsn);
                }
                _ => unreachable!("members send acks and refusals"),
            }
            self.drive_primary();
            return;
        }
        match p.msg {
            Msg::Replicate {
                epoch,
                prev_lsn,
                prev_epoch,
                commit,
                records,
            } => {
                let first = prev_lsn + 1;
                let last = prev_lsn + records.len() as u64;
                let last_epoch = records.last().map_or(epoch, |r| r.epoch);
                let mem = &mut self.members[i];
                let sec = mem.sec.as_mut().expect("checked");
                let verdict =
                    sec.on_replicate(epoch, prev_lsn, prev_epoch, first, last, last_epoch, commit);
                let semi = sec.ack_on_receipt();
                self.event(format!("m{id} replicate {first}..={last}: {verdict:?}"));
                match verdict {
                    Verdict::Append { skip, first, .. } => {
                        for (n, r) in records.into_iter().skip(skip).enumerate() {
                            let lsn = first + n as u64;
                            let mem = &mut self.members[i];
                            assert_eq!(mem.disk.log.len() as u64 + 1, lsn);
                            if self.pdisk.log[lsn as usize - 1] != r {
                                self.violate(format!("m{id} holds a different record at {lsn}"));
                            }
                            self.members[i].disk.log.push(r);
                        }
                        let mem = &mut self.members[i];
                        mem.disk.start_flush(self.now, &mut self.rng);
                        if semi {
                            mem.ack_due = true;
                        }
                    }
                    Verdict::Duplicate => self.members[i].ack_due = true,
                    Verdict::Refuse { last_lsn, .. } => {
                        self.send(i, false, Msg::Refuse { last_lsn });
                    }
                }
            }
            Msg::Heartbeat { epoch, commit } => {
                let sec = self.members[i].sec.as_mut().expect("checked");
                sec.on_heartbeat(epoch, commit);
            }
            _ => unreachable!("the primary sends records and heartbeats"),
        }
    }

    fn inject_faults(&mut self) {
        if self.rng.chance(3) {
            let m = self.rng.range(1, 2) as NodeId;
            if self.member_up(m) {
                let torn = self.rng.chance(500);
                let kind = if torn { Fault::TornWrite } else { Fault::Crash };
                self.fault(kind, format!("m{m} crashes"));
                self.crash(m, torn);
                let back = self.now + self.rng.range(10, 400);
                self.members[m as usize - 1].restart_at = back;
            }
        }
        if self.rng.chance(1) {
            let m = self.rng.range(1, 2) as NodeId;
            if self.member_up(m) && !self.members[m as usize - 1].fsync_fails {
                self.fault(Fault::FsyncError, format!("m{m}'s next fsync fails"));
                self.members[m as usize - 1].fsync_fails = true;
            }
        }
        if self.rng.chance(2) {
            let m = self.rng.range(1, 2) as NodeId;
            let until = self.now + self.rng.range(20, 500);
            self.fault(Fault::Partition, format!("m{m} cut off until t{until}"));
            self.partition(m, until);
        }
    }

    /// One tick.
    pub fn step(&mut self) {
        self.now += 1;
        let quiet = self.quiet();
        if !quiet {
            self.inject_faults();
        }
        for i in 0..self.members.len() {
            let id = self.members[i].id;
            if quiet && self.opts.faults {
                self.members[i].partitioned_until = 0;
                if self.members[i].sec.is_none() {
                    self.members[i].restart_at = self.now;
                }
            }
            if self.members[i].sec.is_none() && self.members[i].restart_at <= self.now {
                self.restart(id);
            }
            let m = &self.members[i];
            if m.sec.is_some()
                && !m.connected
                && m.partitioned_until <= self.now
                && (quiet || self.rng.chance(100))
            {
                self.connect(i);
            }
        }
        // Clients: no new appends in the last stretch, so the run can drain.
        let append_until = self.opts.ticks.saturating_sub(self.opts.quiet_ticks / 2);
        if self.opts.workload && self.now < append_until && self.rng.chance(150) {
            let count = self.rng.range(1, 4);
            let timeout = self.rng.range(600, 2_000);
            self.append(count, timeout);
        }
        // Disks.
        if let Some((upto, at)) = self.pdisk.flush
            && at <= self.now
        {
            self.pdisk.durable = upto;
            self.pdisk.flush = None;
            self.pdisk.start_flush(self.now, &mut self.rng);
            self.primary.on_local_durable(upto as u64);
        }
        for i in 0..self.members.len() {
            let mem = &mut self.members[i];
            let Some((upto, at)) = mem.disk.flush else {
                continue;
            };
            if at > self.now {
                continue;
            }
            if mem.fsync_fails {
                let id = mem.id;
                self.event(format!("m{id} fsync failed: the node stops"));
                self.crash(id, false);
                let back = self.now + self.rng.range(10, 400);
                self.members[i].restart_at = back;
                continue;
            }
            mem.disk.durable = upto;
            mem.disk.flush = None;
            mem.disk.start_flush(self.now, &mut self.rng);
            mem.ack_due = true;
            mem.sec.as_mut().expect("up").on_local_durable(upto as u64);
        }
        // Network.
        let now = self.now;
        let mut due: Vec<Packet> = Vec::new();
        let mut k = 0;
        while k < self.net.len() {
            if self.net[k].at <= now {
                due.push(self.net.swap_remove(k));
            } else {
                k += 1;
            }
        }
        due.sort_by_key(|p| (p.at, p.seq));
        for p in due {
            self.deliver(p);
        }
        self.primary.on_tick(now);
        self.drive_primary();
        // Members ack.
        for i in 0..self.members.len() {
            let mem = &mut self.members[i];
            if !(mem.ack_due && mem.connected) {
                continue;
            }
            mem.ack_due = false;
            let (received, mut durable) = mem.sec.as_ref().expect("connected").ack();
            if self.opts.plant == Some(Bug::AckBeforeDurable) {
                durable = received;
            }
            self.send(i, false, Msg::Ack { received, durable });
        }
        self.check();
    }

    /// Invariant 1 now: what was completed as committed is still held.
    fn check_kept(&mut self) {
        let c = self.committed_max;
        if c == 0 {
            return;
        }
        if (self.pdisk.durable as u64) < c {
            self.violate(format!(
                "lsn {c} completed as committed but the primary holds {} durably",
                self.pdisk.durable
            ));
        }
        if self.mode == Mode::Strong {
            let holding = self
                .members
                .iter()
                .filter(|m| m.disk.durable as u64 >= c)
                .count();
            if holding < self.k {
                self.violate(format!(
                    "lsn {c} completed as committed but only {holding} members hold it durably (k = {})",
                    self.k
                ));
            }
        }
    }

    fn check(&mut self) {
        // What the commit rule allows given what the nodes really hold.
        let local = self.pdisk.durable as u64;
        for m in &mut self.members {
            m.max_received = m.max_received.max(m.disk.log.len() as u64);
        }
        let held: Vec<u64> = self
            .members
            .iter()
            .map(|m| match self.mode {
                Mode::Semi => m.max_received,
                _ => m.disk.durable as u64,
            })
            .collect();
        let k = if self.mode == Mode::Async { 0 } else { self.k };
        let point = commit_point(local, &held, k, &mut Vec::new());
        self.allowed = self.allowed.max(point);
        let allowed = self.allowed;
        let commit = self.primary.commit_lsn();
        if commit > allowed {
            self.violate(format!(
                "primary commit lsn {commit} beyond what the rule allows ({allowed})"
            ));
        }
        for i in 0..self.members.len() {
            if let Some(sec) = &self.members[i].sec {
                let r = sec.readable_commit();
                if r > allowed {
                    let id = self.members[i].id;
                    self.violate(format!(
                        "m{id} reads {r} as committed, the rule allows {allowed}"
                    ));
                }
            }
        }
        self.check_kept();
    }

    /// After the quiet tail: every request appended in it completed as committed.
    fn check_liveness(&mut self) {
        if self.violation.is_some() {
            return;
        }
        let quiet_from = self.opts.ticks.saturating_sub(self.opts.quiet_ticks);
        let stuck: Vec<String> = self
            .requests
            .iter()
            .filter(|(_, r)| r.issued > quiet_from)
            .map(|(id, r)| format!("r{id} (last lsn {})", r.last))
            .take(5)
            .collect();
        if !stuck.is_empty() {
            self.violate(format!(
                "liveness: requests of the quiet tail never completed: {}",
                stuck.join(", ")
            ));
        }
    }
}
