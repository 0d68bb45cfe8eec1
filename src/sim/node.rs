//! One simulated node as a process: up or down, its disk (which outlives the
//! process), its incarnation, the configuration it starts from, and the bugs planted in
//! it. While up it runs the node's own stream driver ([`crate::stream`]) with what the
//! node does around it ([`host`](crate::sim::host)).
//!
//! A start recovers the disk and opens the driver as production's `server::open_stream`
//! does: a primary without a controller takes a new epoch (stored first); under the
//! controller every start is a new incarnation that begins as a secondary, and the
//! configuration applies through the driver's `set_roles`. A crash loses what is not
//! durable (but a torn prefix) and every connection; requests vanish unanswered.

use crate::control::StreamStatus;
use crate::replication::Mode;
use crate::replication::{NodeId, StreamSettings};
use crate::sim::disk::{Disk, Retention};
use crate::sim::event::NodeEvent;
use crate::sim::host::{Ctx, Out, Process, STREAM, addr_of};
use crate::sim::network::{ConnId, Network};
use crate::sim::{Bug, Rec};
use crate::stream::{Handled, Options, Plant, StreamDriver, StreamSpec, start_epoch};
use crate::transport::rdma::emulated::EmulatedProvider;
use crate::transport::rdma::link::Rings;
use crate::transport::rdma::setup::Chosen;

/// Records per Replicate frame: small, so that a batch spans several frames and frames
/// can be lost, duplicated and reordered one by one.
const REPLICATE_RECORDS_MAX: usize = 8;

/// Records the primary keeps for sending: few, so that members catching up are served
/// from the log too.
const CACHE_RECORDS: usize = 16;

/// Ticks between two looks of retention at the log.
const RETAIN_EVERY_TICKS: u64 = 20;
/// Ticks before a ring is offered again to a member whose ring failed or was declined:
/// shorter than the node's second, so a run sees rings fail and come back many times.
const RING_RETRY_TICKS: u64 = 50;

/// A stream configuration, as the controller commits it.
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

enum State {
    Down(Box<Disk>),
    Up(Box<Process>),
}

pub struct Node {
    pub id: NodeId,
    config: Config,
    settings: StreamSettings,
    state: State,
    /// Tick of the next restart while down (`None`: stays down until told).
    pub restart_at: Option<u64>,
    plant: Option<Bug>,
    /// This process, as the controller knows it (a restart is a new incarnation).
    pub incarnation: u64,
    retention: Option<Retention>,
    /// Peer links on RDMA rings: the seed of this node's queue pair faults.
    rdma: Option<u64>,
    /// Starts so far (each process draws its own queue pair faults).
    starts: u64,
}

impl Node {
    /// A node that is down; [`Node::start`] brings it up.
    pub fn new(
        id: NodeId,
        settings: StreamSettings,
        config: Config,
        plant: Option<Bug>,
        retention: Option<Retention>,
        rdma: Option<u64>,
    ) -> Node {
        let mut disk = Disk::default();
        if let Some(r) = retention {
            disk.segment_records = r.segment_records;
        }
        Node {
            id,
            config,
            settings,
            state: State::Down(Box::new(disk)),
            restart_at: None,
            plant,
            incarnation: 0,
            retention,
            rdma,
            starts: 0,
        }
    }

    pub fn disk(&self) -> &Disk {
        match &self.state {
            State::Down(d) => d,
            State::Up(p) => p.driver.log(),
        }
    }

    pub fn disk_mut(&mut self) -> &mut Disk {
        match &mut self.state {
            State::Down(d) => d,
            State::Up(p) => p.driver.log_mut(),
        }
    }

    fn driver(&self) -> Option<&StreamDriver<Disk>> {
        match &self.state {
            State::Up(p) => Some(&p.driver),
            State::Down(_) => None,
        }
    }

    pub fn up(&self) -> bool {
        self.driver().is_some()
    }

    pub fn is_primary(&self) -> bool {
        self.driver().is_some_and(StreamDriver::is_primary)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The epoch this node is in: its own as primary, the newest it has seen as
    /// secondary.
    pub fn epoch(&self) -> Option<u64> {
        self.driver().map(StreamDriver::epoch)
    }

    /// Highest LSN a reader may see here as committed.
    pub fn readable_commit(&self) -> Option<u64> {
        self.driver().map(StreamDriver::commit_lsn)
    }

    /// Requests waiting for their commit (primary only).
    pub fn waiting(&self) -> usize {
        self.driver().map_or(0, StreamDriver::waiting)
    }

    /// Members the primary counts (greeted, their logs agreeing).
    pub fn connected_members(&self) -> Vec<NodeId> {
        self.driver()
            .map_or_else(Vec::new, StreamDriver::connected_members)
    }

    /// Whether the driver's retention looks at the log in its turn at `now`.
    pub fn retention_due(&self, now: u64) -> bool {
        self.driver()
            .is_some_and(|d| d.retention_due(crate::stream::Time::from_ticks(now)))
    }

    /// The stream's state as the controller sees it.
    pub fn status(&self) -> Option<StreamStatus> {
        self.driver().map(StreamDriver::status)
    }

    /// The process and what surrounds an input to it, if it is up.
    fn process<'a>(
        &'a mut self,
        now: u64,
        net: &'a Network,
        out: &'a mut Out,
    ) -> Option<(&'a mut Process, Ctx<'a>)> {
        let State::Up(p) = &mut self.state else {
            return None;
        };
        let cx = Ctx {
            node: self.id,
            incarnation: self.incarnation,
            now,
            net,
            out,
            settings: &self.settings,
        };
        Some((p, cx))
    }

    /// Runs `f` on the process, if it is up.
    pub fn with<T>(
        &mut self,
        now: u64,
        net: &Network,
        out: &mut Out,
        f: impl FnOnce(&mut Process, &mut Ctx<'_>) -> T,
    ) -> Option<T> {
        let (p, mut cx) = self.process(now, net, out)?;
        Some(f(p, &mut cx))
    }

    /// A process's rings: on TCP only, or on emulated verbs whose queue pairs fail at
    /// moments drawn from the seed (one failure per process at most, in most of them).
    fn rings(&self) -> Rings<EmulatedProvider> {
        let Some(seed) = self.rdma else {
            return Rings::new(EmulatedProvider::new(), Chosen::Tcp);
        };
        let provider = EmulatedProvider::new();
        let mut r = crate::sim::rng::Rng::new(seed ^ self.starts.wrapping_mul(0x9e37_79b9));
        if r.chance(700) {
            provider
                .faults()
                .lock()
                .expect("faults lock")
                .error_after_writes = Some(r.range(0, 400));
        }
        let mut rings = Rings::new(provider, Chosen::RdmaEmu);
        rings.plant_ack_before_durable = self.plant == Some(Bug::AckSlotBeforeDurable);
        rings
    }

    /// The driver's settings: a planted bug may change them behind the checker's back.
    fn driver_settings(&self) -> StreamSettings {
        let mut s = self.settings.clone();
        if self.plant == Some(Bug::CommitOnKMinusOne) {
            let k = s.k(self.config.sync_set.len());
            if k >= 2 {
                s.sync_acks = Some(k - 1);
            }
        }
        s
    }

    /// Starts the process from the durable log, in the role of its configuration.
    pub fn start(&mut self, now: u64, net: &Network, out: &mut Out) {
        let State::Down(disk) = &mut self.state else {
            panic!("n{} starts while up", self.id);
        };
        assert!(disk.settled(), "a node starts from a durable log");
        let mut disk = std::mem::take(&mut **disk);
        disk.recover();
        self.restart_at = None;
        let c = &self.config;
        let controlled = c.incarnation.is_some();
        let new_primary = c.primary == self.id && !controlled;
        let last_epoch = crate::stream::LogStore::last_epoch(&disk).unwrap_or(0);
        let epoch = start_epoch(new_primary, c.epoch, last_epoch, disk.epoch_file);
        if new_primary {
            disk.epoch_file = epoch;
        }
        let members = c
            .sync_set
            .iter()
            .chain(&c.learners)
            .filter(|&&m| m != self.id)
            .map(|&m| (m, addr_of(m)))
            .collect();
        let spec = StreamSpec {
            name: STREAM.into(),
            primary: c.primary,
            members: StreamSpec::members_of(&c.sync_set, &c.learners),
            settings: self.driver_settings(),
            request_timeout_ms: 1000,
            retain_segments: self.retention.map(|r| r.keep_segments),
        };
        let options = Options {
            replicate_records_max: REPLICATE_RECORDS_MAX,
            cache_bytes: 64 << 10,
            cache_records: CACHE_RECORDS,
            retain_every_ticks: RETAIN_EVERY_TICKS,
            ring_retry_ticks: RING_RETRY_TICKS,
            trace: true,
            latency: false,
            plant: self.plant.and_then(Bug::plant),
            ..Options::default()
        };
        let stored = disk.epoch_file;
        let incarnation = controlled.then_some(self.incarnation);
        let primary_addr = Some(addr_of(c.primary));
        let driver = StreamDriver::new(
            spec,
            self.id,
            disk,
            epoch,
            stored,
            incarnation,
            members,
            primary_addr,
            options,
        );
        self.starts += 1;
        let rings = self.rings();
        self.state = State::Up(Box::new(Process::new(driver, rings)));
        let config = self.config.clone();
        self.with(now, net, out, |p, cx| {
            p.carry_out(cx);
            if controlled {
                p.apply(cx, &config);
            }
        });
    }

    /// The process dies: requests vanish unanswered, the disk keeps its durable part
    /// and `torn_keep` records of the pending one. The caller closes the connections.
    pub fn crash(&mut self, torn_keep: usize, out: &mut Out) {
        if !self.up() {
            return;
        }
        let State::Up(p) = std::mem::replace(&mut self.state, State::Down(Box::default())) else {
            unreachable!("checked above");
        };
        if p.driver.is_primary() {
            out.events.push(NodeEvent::StoppedPrimary {
                node: self.id,
                epoch: p.driver.epoch(),
            });
        }
        let mut disk = p.driver.into_log();
        disk.interrupted = false;
        let lost = disk.crash(torn_keep);
        out.trace.push(format!(
            "n{} down: log ends at {} ({lost} pending records lost)",
            self.id,
            disk.last_lsn()
        ));
        self.state = State::Down(Box::new(disk));
    }

    /// Why the process must stop now, if it must: its stream failed (production stops
    /// serving it until a restart, which the simulator makes at once), or it died in
    /// the middle of a cleanup of its log (`true`: nothing more runs).
    pub fn stop(&self) -> Option<(String, bool)> {
        let why = self.driver()?.failure()?;
        Some((why.to_string(), self.disk().interrupted))
    }

    /// A new configuration: applied now if the process is up (a change of role waits
    /// for the log to settle and the epoch to be stored), used at the next start if
    /// not.
    pub fn apply_config(&mut self, config: Config, now: u64, net: &Network, out: &mut Out) {
        out.trace.push(format!(
            "n{} configured: epoch {}, primary n{}, sync set {:?}, learners {:?}",
            self.id, config.epoch, config.primary, config.sync_set, config.learners
        ));
        self.config = config.clone();
        self.with(now, net, out, |p, cx| p.apply(cx, &config));
    }

    /// Starts a write of everything pending (group commit), unless one is in flight.
    pub fn start_flush(&mut self, now: u64, latency: u64) {
        if let State::Up(p) = &mut self.state
            && p.driver.log_mut().start_flush(now, latency)
        {
            p.driver
                .on_write_issued(crate::stream::Time::from_ticks(now));
        }
    }

    /// Members to dial now (primary only).
    pub fn to_dial(&mut self, now: u64) -> Vec<NodeId> {
        match &mut self.state {
            State::Up(p) => p.to_dial(now),
            State::Down(_) => Vec::new(),
        }
    }

    /// A connection of this node closed.
    pub fn on_conn_closed(&mut self, conn: ConnId, now: u64, net: &Network, out: &mut Out) {
        self.with(now, net, out, |p, cx| p.on_conn_closed(cx, conn));
    }

    /// The disk made the log durable up to `lsn`.
    pub fn on_durable(&mut self, lsn: u64, now: u64) {
        if let State::Up(p) = &mut self.state {
            p.on_durable(lsn, now);
        }
    }

    /// A frame from the network on `conn`.
    pub fn on_frame(
        &mut self,
        now: u64,
        conn: ConnId,
        frame: &[u8],
        net: &Network,
        out: &mut Out,
    ) -> Handled {
        self.with(now, net, out, |p, cx| p.on_frame(cx, conn, frame))
            .unwrap_or(Handled::Done)
    }

    /// A client's read: (commit LSN, records from `from`), as the node answers it.
    pub fn read(
        &mut self,
        now: u64,
        from: u64,
        records_max: u64,
        net: &Network,
    ) -> Option<(u64, Vec<(u64, Rec)>)> {
        let mut out = Out::default();
        self.with(now, net, &mut out, |p, cx| p.read(cx, from, records_max))?
    }

    /// A client's append.
    #[allow(clippy::too_many_arguments)]
    pub fn client_append(
        &mut self,
        now: u64,
        client: (usize, u64),
        mode: Option<Mode>,
        timeout_ticks: u64,
        payloads: &[Vec<u8>],
        net: &Network,
        out: &mut Out,
    ) {
        self.with(now, net, out, |p, cx| {
            p.client_append(cx, client, mode, timeout_ticks, payloads)
        });
    }
}

impl Bug {
    /// The bug as planted in the stream driver, if it lives there.
    fn plant(self) -> Option<Plant> {
        match self {
            Bug::AckBeforeDurable => Some(Plant::AckBeforeDurable),
            Bug::RetainAboveCommit => Some(Plant::RetainAboveCommit),
            Bug::CountAcksWhileTruncating => Some(Plant::CountAcksWhileTruncating),
            // The ack slot is written by the process's rings, not the driver.
            Bug::AckSlotBeforeDurable => None,
            Bug::CommitOnKMinusOne | Bug::FenceShort => None,
        }
    }
}
