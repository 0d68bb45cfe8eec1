//! RDMA verbs through the `sideway` crate, whose `rdma-mummy-sys` loads libibverbs at
//! run time: the same binary starts on hosts without libibverbs or without a device,
//! and [`probe`] says which in one line.
//!
//! What is here, for the ring transport (`lockstep::transport::rdma`):
//! - [`Device`]: a device opened with its protection domain, on its first active port,
//!   with the GID it sends from ([`attr::choose_gid`]);
//! - [`Region`]: memory registered for peers to write into (a member's ring, a primary's
//!   ack slots), read by copying out and by atomic word loads, never through a
//!   reference, since the NIC writes it behind Rust's back;
//! - [`Remote`]: a peer's region as its setup message described it; a write reaches it
//!   only through [`Remote::target`], which checks the bounds, and carries its rkey;
//! - [`Qp`]: a reliable-connected queue pair on the newer `ibv_wr_*` post API, with an
//!   extended completion queue for its writes and a second one, on a completion
//!   channel, for the peer's WRITE_WITH_IMM wake-ups. Connecting it runs the plan of
//!   [`attr::connect_plan`] (INIT → RTR → RTS from the peer's QPN, GID and PSN). A
//!   write's bytes are copied into the queue pair's registered send arena, and the
//!   [`arena::Span`] they occupy is held, with the caller's buffer, until the write's
//!   completion is reaped: memory the NIC reads is never reused meanwhile.
//!
//! Thread safety: a [`Device`] may be shared; a [`Qp`] and its regions belong to one
//! shard thread at a time (`Send`, not `Sync`).
//!
//! Clean-up: dropping a [`Qp`] destroys the queue pair first (the NIC stops reading its
//! arena), then its completion queues, channel and arena; dropping a [`Region`]
//! deregisters it before its memory is unmapped. Every completion event is
//! acknowledged as it is taken, so destroying a completion queue never waits.

pub mod arena;
pub mod attr;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rdma_mummy_sys::{
    ibv_ack_cq_events, ibv_cq, ibv_get_cq_event, ibv_req_notify_cq, ibv_wc_status,
};
use sideway::ibverbs::AccessFlags;
use sideway::ibverbs::address::{AddressHandleAttribute, Gid, GidType};
use sideway::ibverbs::completion::{
    CompletionChannel, CompletionQueue, ExtendedCompletionQueue, PollCompletionQueueError,
    WorkCompletionStatus,
};
use sideway::ibverbs::device::{DeviceInfo, DeviceList, GetDeviceListErrorKind};
use sideway::ibverbs::device_context::{DeviceContext, LinkLayer, Mtu, PortState};
use sideway::ibverbs::memory_region::MemoryRegion;
use sideway::ibverbs::protection_domain::ProtectionDomain;
use sideway::ibverbs::queue_pair::{
    ExtendedQueuePair, PostSendGuard, QueuePair, QueuePairAttribute, QueuePairState,
    SendOperationFlags, SetScatterGatherEntry, WorkRequestFlags,
};

use arena::{Arena, SPAN_ALIGN, Span};
use attr::{Endpoint, GidKind, LocalPort, PathMtu, Step};

/// Work requests outstanding on one queue pair's send queue at most.
pub const SEND_QUEUE_DEPTH: usize = 256;
/// Receives kept posted for the peer's WRITE_WITH_IMM wake-ups.
pub const RECV_QUEUE_DEPTH: usize = 256;
/// Completion events taken per wake-up at most (the descriptor stays readable if more).
const EVENTS_PER_WAKEUP_MAX: u32 = 64;

/// Which device and GID to use; the defaults pick the first device with an active port
/// and its GID by [`attr::choose_gid`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceChoice {
    pub name: Option<String>,
    pub gid_index: Option<u8>,
}

impl DeviceChoice {
    /// The choice an operator made in the environment: `LOCKSTEP_RDMA_DEVICE` (a device
    /// name, as `ibv_devices` lists it) and `LOCKSTEP_RDMA_GID_INDEX`.
    pub fn from_env() -> DeviceChoice {
        DeviceChoice {
            name: std::env::var("LOCKSTEP_RDMA_DEVICE")
                .ok()
                .filter(|s| !s.is_empty()),
            gid_index: std::env::var("LOCKSTEP_RDMA_GID_INDEX")
                .ok()
                .and_then(|s| s.parse().ok()),
        }
    }
}

/// A usable RDMA device of this host (named, with its port and GID), or the one-line
/// reason there is none: libibverbs is not loadable, the kernel has no RDMA support, it
/// lists no device, or no device can be opened with an active port.
pub fn probe(choice: &DeviceChoice) -> Result<String, String> {
    let names = device_names()?;
    match Device::open(choice) {
        Ok(d) => Ok(d.describe()),
        Err(why) => Err(format!("no usable device ({names}: {why})")),
    }
}

/// The names of the devices libibverbs lists, or why there are none.
fn device_names() -> Result<String, String> {
    let list = DeviceList::new().map_err(|e| {
        let os = match &e.0 {
            GetDeviceListErrorKind::Ibverbs(io) => io.raw_os_error(),
            #[allow(unreachable_patterns)] // the kind is non-exhaustive
            _ => None,
        };
        match os {
            Some(libc::EOPNOTSUPP) => {
                "no libibverbs (libibverbs.so.1 not loadable: ibv_get_device_list: EOPNOTSUPP)"
                    .to_string()
            }
            Some(n) => format!("no device (ibv_get_device_list: {})", errno_name(n)),
            None => format!("no device (ibv_get_device_list: {e})"),
        }
    })?;
    if list.is_empty() {
        return Err("no device (ibv_get_device_list: 0 devices)".into());
    }
    let names: Vec<String> = list.iter().map(|d| d.name()).collect();
    Ok(names.join(","))
}

fn errno_name(n: i32) -> String {
    match n {
        libc::ENOSYS => "ENOSYS".into(),
        libc::ENODEV => "ENODEV".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        other => std::io::Error::from_raw_os_error(other).to_string(),
    }
}

/// What went wrong, naming the operation.
#[derive(Debug)]
pub enum VerbsError {
    Io {
        op: &'static str,
        source: io::Error,
    },
    /// `len` bytes at `offset` lie outside the remote region: refused before posting.
    OutOfBounds {
        offset: u64,
        len: u64,
        region: u64,
    },
    State(QpState),
    SendQueueFull(usize),
    /// The send arena holds no room for the write until earlier writes complete.
    NoRoom {
        bytes: u64,
        in_use: u64,
    },
    Setup(String),
}

impl fmt::Display for VerbsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerbsError::Io { op, source } => write!(f, "{op}: {source}"),
            VerbsError::OutOfBounds {
                offset,
                len,
                region,
            } => write!(
                f,
                "{len} bytes at {offset} lie outside the remote region of {region} bytes"
            ),
            VerbsError::State(s) => write!(f, "queue pair is {s:?}"),
            VerbsError::SendQueueFull(n) => write!(f, "send queue full ({n} requests outstanding)"),
            VerbsError::NoRoom { bytes, in_use } => write!(
                f,
                "no room for {bytes} bytes in the send arena ({in_use} bytes in flight)"
            ),
            VerbsError::Setup(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for VerbsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VerbsError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(op: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> VerbsError {
    VerbsError::Io {
        op,
        source: io::Error::other(e),
    }
}

/// The states of a queue pair that the ring protocol tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QpState {
    /// Created, not yet connected to its peer.
    Init,
    /// Connected: work may be posted.
    ReadyToSend,
    /// Failed: nothing more is placed; outstanding work completes flushed.
    Error,
}

/// How a write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WcStatus {
    Success,
    /// The remote side refused the access (rkey or bounds): the queue pair is in error.
    RemoteAccess,
    /// The queue pair went to error before this request was placed.
    Flushed,
    /// Any other error status (retries exceeded, a bad response, ...), named as
    /// libibverbs names it: the queue pair is in error.
    Failed(String),
}

impl WcStatus {
    /// The status of a work completion, from its raw `ibv_wc_status` (a value a newer
    /// libibverbs adds is named by number, never a panic).
    pub fn of(status: u32) -> WcStatus {
        match status {
            ibv_wc_status::IBV_WC_SUCCESS => WcStatus::Success,
            ibv_wc_status::IBV_WC_REM_ACCESS_ERR => WcStatus::RemoteAccess,
            ibv_wc_status::IBV_WC_WR_FLUSH_ERR => WcStatus::Flushed,
            n if n <= ibv_wc_status::IBV_WC_TM_RNDV_INCOMPLETE => {
                WcStatus::Failed(format!("{:?}", WorkCompletionStatus::from(n)))
            }
            n => WcStatus::Failed(format!("ibv_wc_status {n}")),
        }
    }
}

/// A finished write, with the buffer it was posted with.
#[derive(Debug)]
pub struct Completion {
    pub wr_id: u64,
    pub status: WcStatus,
    pub buf: Vec<u8>,
}

/// An opened device: its context, protection domain and the port it runs on.
pub struct Device {
    name: String,
    // Dropped in this order: the protection domain before the context it belongs to
    // (each also keeps the other alive through sideway's reference counts).
    pd: Arc<ProtectionDomain>,
    ctx: Arc<DeviceContext>,
    port: LocalPort,
}

impl Device {
    /// Opens the chosen device (or the first one with an active port), allocates its
    /// protection domain and picks the GID it sends from.
    pub fn open(choice: &DeviceChoice) -> Result<Device, String> {
        let list = DeviceList::new().map_err(|e| format!("ibv_get_device_list: {e}"))?;
        let mut why = Vec::new();
        for dev in list.iter() {
            let name = dev.name();
            if choice.name.as_ref().is_some_and(|want| *want != name) {
                continue;
            }
            let ctx = match dev.open() {
                Ok(c) => c,
                Err(e) => {
                    why.push(format!("{name}: ibv_open_device: {e}"));
                    continue;
                }
            };
            match active_port(&ctx, choice.gid_index) {
                Ok(port) => {
                    let pd = ctx
                        .alloc_pd()
                        .map_err(|e| format!("{name}: ibv_alloc_pd: {e}"))?;
                    return Ok(Device {
                        name,
                        pd,
                        ctx,
                        port,
                    });
                }
                Err(e) => why.push(format!("{name}: {e}")),
            }
        }
        if why.is_empty() {
            let want = choice.name.as_deref().unwrap_or("any");
            return Err(format!("device {want} not listed"));
        }
        Err(why.join("; "))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> &LocalPort {
        &self.port
    }

    /// One line: the device, its port, the link and the GID index.
    pub fn describe(&self) -> String {
        let p = &self.port;
        let link = if p.roce { "RoCE" } else { "InfiniBand" };
        format!(
            "{} port {} ({link}, gid index {}, mtu {})",
            self.name,
            p.port,
            p.gid_index,
            p.mtu.bytes()
        )
    }

    /// Registers `len` zeroed bytes (rounded up to a page) for peers to write into.
    pub fn register(&self, len: usize) -> Result<Region, VerbsError> {
        let mem = Mapping::new(len).map_err(|source| VerbsError::Io {
            op: "map memory to register",
            source,
        })?;
        let access = AccessFlags::LocalWrite | AccessFlags::RemoteWrite;
        // SAFETY: the mapping is valid for `mem.len` bytes and lives as long as the
        // region: `Region` drops the registration before the mapping (field order).
        let mr = unsafe { self.pd.reg_mr(mem.ptr.as_ptr() as usize, mem.len, access) }
            .map_err(|e| io_err("ibv_reg_mr", e))?;
        Ok(Region { mr, mem })
    }

    /// A reliable-connected queue pair that may have `send_bytes_max` bytes of writes in
    /// flight (its send arena), in INIT-ready state (RESET until [`Qp::connect`]).
    pub fn create_qp(&self, send_bytes_max: usize) -> Result<Qp, VerbsError> {
        let channel = self
            .ctx
            .create_comp_channel()
            .map_err(|e| io_err("ibv_create_comp_channel", e))?;
        channel
            .set_nonblocking(true)
            .map_err(|source| VerbsError::Io {
                op: "make the completion channel non-blocking",
                source,
            })?;
        // SAFETY: the channel's descriptor is open for as long as `channel` lives, and
        // it is borrowed only to duplicate it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(channel.as_raw_fd()) };
        let wake = borrowed
            .try_clone_to_owned()
            .map_err(|source| VerbsError::Io {
                op: "duplicate the completion channel's descriptor",
                source,
            })?;
        let send_cq = self
            .ctx
            .create_cq_builder()
            .setup_cqe(2 * SEND_QUEUE_DEPTH as u32)
            .build_ex()
            .map_err(|e| io_err("ibv_create_cq_ex (send)", e))?;
        let recv_cq = self
            .ctx
            .create_cq_builder()
            .setup_cqe(2 * RECV_QUEUE_DEPTH as u32)
            .setup_comp_channel(&channel, 0)
            .build_ex()
            .map_err(|e| io_err("ibv_create_cq_ex (receive)", e))?;
        let qp = self
            .pd
            .create_qp_builder()
            .setup_max_send_wr(SEND_QUEUE_DEPTH as u32)
            .setup_max_recv_wr(RECV_QUEUE_DEPTH as u32)
            .setup_max_send_sge(1)
            .setup_max_recv_sge(1)
            .setup_send_ops_flags(
                SendOperationFlags::Write | SendOperationFlags::WriteWithImmediate,
            )
            .setup_send_cq(send_cq.clone())
            .setup_recv_cq(recv_cq.clone())
            .build_ex()
            .map_err(|e| io_err("ibv_create_qp_ex", e))?;
        let arena_bytes = (send_bytes_max as u64)
            .max(SPAN_ALIGN)
            .next_multiple_of(4096);
        let arena_mem = self.register(arena_bytes as usize)?;
        Ok(Qp {
            qp,
            send_cq,
            recv_cq,
            channel,
            wake: Arc::new(wake),
            arena: Arena::new(arena_mem.len() as u64),
            arena_mem,
            in_flight: VecDeque::new(),
            polled: Vec::new(),
            state: QpState::Init,
            psn: random_psn(),
            port: self.port.clone(),
        })
    }
}

/// The first active port of `ctx`, its address and the GID it sends from.
fn active_port(ctx: &Arc<DeviceContext>, gid_index: Option<u8>) -> Result<LocalPort, String> {
    let dev = ctx
        .query_device()
        .map_err(|e| format!("ibv_query_device: {e}"))?;
    let mut states = Vec::new();
    for port in 1..=dev.phys_port_cnt() {
        let attr = ctx
            .query_port(port)
            .map_err(|e| format!("ibv_query_port {port}: {e}"))?;
        if attr.port_state() != PortState::Active {
            states.push(format!("port {port} {:?}", attr.port_state()));
            continue;
        }
        let roce = attr.link_layer() == LinkLayer::Ethernet;
        let table = ctx
            .query_gid_table()
            .map_err(|e| format!("ibv_query_gid_table: {e}"))?;
        let entries: Vec<(u8, [u8; 16], GidKind)> = table
            .iter()
            .filter(|e| e.port_num() == u32::from(port) && e.gid_index() <= u32::from(u8::MAX))
            .map(|e| {
                let kind = match e.gid_type() {
                    GidType::InfiniBand => GidKind::InfiniBand,
                    GidType::RoceV1 => GidKind::RoceV1,
                    GidType::RoceV2 => GidKind::RoceV2,
                };
                (e.gid_index() as u8, e.gid().raw, kind)
            })
            .collect();
        let index = match gid_index {
            Some(i) => i,
            None => attr::choose_gid(&entries, roce)
                .ok_or_else(|| format!("port {port} has no usable GID"))?,
        };
        let gid = entries
            .iter()
            .find(|e| e.0 == index)
            .map(|e| e.1)
            .ok_or_else(|| format!("port {port} has no GID at index {index}"))?;
        return Ok(LocalPort {
            port,
            lid: attr.lid(),
            gid,
            gid_index: index,
            mtu: path_mtu(attr.active_mtu()),
            roce,
        });
    }
    Err(format!("no active port ({})", states.join(", ")))
}

fn path_mtu(mtu: Mtu) -> PathMtu {
    match mtu {
        Mtu::Mtu256 => PathMtu::Mtu256,
        Mtu::Mtu512 => PathMtu::Mtu512,
        Mtu::Mtu1024 => PathMtu::Mtu1024,
        Mtu::Mtu2048 => PathMtu::Mtu2048,
        Mtu::Mtu4096 => PathMtu::Mtu4096,
    }
}

fn verbs_mtu(mtu: PathMtu) -> Mtu {
    match mtu {
        PathMtu::Mtu256 => Mtu::Mtu256,
        PathMtu::Mtu512 => Mtu::Mtu512,
        PathMtu::Mtu1024 => Mtu::Mtu1024,
        PathMtu::Mtu2048 => Mtu::Mtu2048,
        PathMtu::Mtu4096 => Mtu::Mtu4096,
    }
}

/// A fresh 24-bit PSN: a new queue pair never starts where an old one of the same
/// peer stopped.
fn random_psn() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now()) as u32 & attr::PSN_MASK
}

/// Anonymous memory mapped for registration: page-aligned and zeroed.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        let len = len.max(1).next_multiple_of(4096);
        // SAFETY: an anonymous private mapping of a non-zero length at an address the
        // kernel picks; no file descriptor or existing memory is involved.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(raw.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `Mapping::new` with this length and is
        // deregistered by now (see `Region`'s field order).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Memory registered with the device: peers write into it (with its rkey), this side
/// reads it, and a queue pair's arena is read by the NIC from it.
///
/// Memory model: the NIC writes it outside Rust's memory model, so it is only ever
/// copied in or out through raw pointers, or loaded a word at a time with `Acquire`,
/// never borrowed as a slice.
pub struct Region {
    // Dropped first: the NIC stops writing before the memory goes.
    mr: Arc<MemoryRegion>,
    mem: Mapping,
}

// SAFETY: the region owns its mapping and registration like a Vec owns its buffer; the
// registration is `Send` (sideway), and nothing in it is bound to a thread.
unsafe impl Send for Region {}

impl Region {
    /// The address a peer's write names (`addr` + offset).
    pub fn addr(&self) -> u64 {
        self.mem.ptr.as_ptr() as u64
    }

    pub fn rkey(&self) -> u32 {
        self.mr.rkey()
    }

    pub fn lkey(&self) -> u32 {
        self.mr.lkey()
    }

    pub fn len(&self) -> usize {
        self.mem.len
    }

    pub fn is_empty(&self) -> bool {
        self.mem.len == 0
    }

    /// What a peer needs to write here.
    pub fn remote(&self) -> Remote {
        Remote::new(self.addr(), self.rkey(), self.len() as u64)
    }

    /// Copies `out.len()` bytes at `offset` out.
    ///
    /// # Panics
    /// If the bytes lie outside the region.
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        assert!(offset <= self.mem.len, "read past the region");
        assert!(out.len() <= self.mem.len - offset, "read past the region");
        // SAFETY: the source lies inside the mapping (asserted); `out` is a distinct
        // Rust buffer; a byte copy never creates a reference into NIC-written memory.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.mem.ptr.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            );
        }
    }

    /// Loads the 8-aligned word at `offset`; bytes placed before it are visible after.
    ///
    /// # Panics
    /// If the word lies outside the region or is not 8-aligned.
    pub fn load_u64(&self, offset: usize) -> u64 {
        assert!(offset.is_multiple_of(8), "unaligned word");
        assert!(offset + 8 <= self.mem.len, "load past the region");
        // SAFETY: the word lies inside the page-aligned mapping and is 8-aligned
        // (asserted); it is only ever accessed atomically or by byte copies.
        let word = unsafe { AtomicU64::from_ptr(self.mem.ptr.as_ptr().add(offset).cast()) };
        word.load(Ordering::Acquire)
    }

    /// Copies `bytes` in at `offset` (a queue pair's arena, before the NIC reads it).
    fn write(&mut self, offset: usize, bytes: &[u8]) {
        assert!(offset <= self.mem.len, "write past the region");
        assert!(
            bytes.len() <= self.mem.len - offset,
            "write past the region"
        );
        // SAFETY: the destination lies inside the mapping (asserted), and the caller
        // holds the arena span covering it, which no posted write still reads.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.mem.ptr.as_ptr().add(offset),
                bytes.len(),
            );
        }
    }
}

/// A peer's registered region, as its setup message described it: usable only through
/// [`Remote::target`], which keeps every write inside its bounds and carries its rkey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    addr: u64,
    rkey: u32,
    len: u64,
}

impl Remote {
    pub fn new(addr: u64, rkey: u32, len: u64) -> Remote {
        Remote { addr, rkey, len }
    }

    pub fn rkey(&self) -> u32 {
        self.rkey
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The remote address of `len` bytes at `offset`, if they lie inside the region.
    pub fn target(&self, offset: u64, len: u64) -> Result<u64, VerbsError> {
        let inside = offset <= self.len && len <= self.len - offset;
        let addr = self.addr.checked_add(offset).filter(|_| inside);
        addr.ok_or(VerbsError::OutOfBounds {
            offset,
            len,
            region: self.len,
        })
    }
}

/// A write the NIC may still be reading: its arena span and the caller's buffer, held
/// until its completion.
struct InFlight {
    wr_id: u64,
    span: Span,
    buf: Vec<u8>,
}

/// A reliable-connected queue pair (see the module docs).
pub struct Qp {
    // Dropped first: destroying the queue pair ends every read of the arena and flushes
    // its work; the completion queues it uses are kept alive by it until then.
    qp: ExtendedQueuePair,
    send_cq: Arc<ExtendedCompletionQueue>,
    recv_cq: Arc<ExtendedCompletionQueue>,
    channel: Arc<CompletionChannel>,
    wake: Arc<OwnedFd>,
    arena: Arena,
    arena_mem: Region,
    in_flight: VecDeque<InFlight>,
    /// Completions taken from the queue in one poll: (wr_id, status).
    polled: Vec<(u64, u32)>,
    state: QpState,
    psn: u32,
    port: LocalPort,
}

impl Qp {
    /// What the peer needs to connect to this queue pair.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            qpn: self.qp.qp_number(),
            psn: self.psn,
            lid: self.port.lid,
            gid: self.port.gid,
        }
    }

    /// Connects to `peer`: INIT (remote writes allowed), receives posted for the
    /// peer's wake-ups, RTR, RTS.
    pub fn connect(&mut self, peer: &Endpoint) -> Result<(), VerbsError> {
        if self.state != QpState::Init {
            return Err(VerbsError::State(self.state));
        }
        let plan = attr::connect_plan(&self.port, self.psn, peer).map_err(VerbsError::Setup)?;
        let result = self.run_plan(&plan);
        if result.is_err() {
            self.state = QpState::Error;
        }
        result
    }

    fn run_plan(&mut self, plan: &[Step; 3]) -> Result<(), VerbsError> {
        for step in plan {
            let (attr, op) = qp_attribute(step);
            self.qp.modify(&attr).map_err(|e| io_err(op, e))?;
            if let Step::Init { .. } = step {
                self.post_receives(RECV_QUEUE_DEPTH)?;
                self.arm()?;
            }
        }
        self.state = QpState::ReadyToSend;
        Ok(())
    }

    /// Posts `n` receives without buffers: a WRITE_WITH_IMM consumes one and
    /// completes it on the receive queue, which is what wakes this side.
    fn post_receives(&mut self, n: usize) -> Result<(), VerbsError> {
        if n == 0 {
            return Ok(());
        }
        let mut guard = self.qp.start_post_recv();
        for i in 0..n {
            let _ = guard.construct_wr(i as u64);
        }
        guard.post().map_err(|e| io_err("ibv_post_recv", e))
    }

    /// Asks for an event on the channel at the next receive completion.
    fn arm(&mut self) -> Result<(), VerbsError> {
        let cq = recv_cq_ptr(&self.recv_cq);
        // SAFETY: `cq` is this queue pair's live receive completion queue.
        let r = unsafe { ibv_req_notify_cq(cq.as_ptr(), 0) };
        if r != 0 {
            return Err(VerbsError::Io {
                op: "ibv_req_notify_cq",
                source: io::Error::from_raw_os_error(r),
            });
        }
        Ok(())
    }

    /// Posts an RDMA WRITE of `buf` to `offset` in `remote`, signalled; with `imm`, a
    /// WRITE_WITH_IMM that also wakes the peer. The bytes are copied into the send
    /// arena, whose span is held with `buf` until the completion hands `buf` back; on
    /// error `buf` comes back at once.
    pub fn post_write(
        &mut self,
        wr_id: u64,
        buf: Vec<u8>,
        remote: &Remote,
        offset: u64,
        imm: Option<u32>,
    ) -> Result<(), (VerbsError, Vec<u8>)> {
        if self.state != QpState::ReadyToSend {
            return Err((VerbsError::State(self.state), buf));
        }
        let len = buf.len() as u64;
        let target = match remote.target(offset, len) {
            Ok(t) => t,
            Err(e) => return Err((e, buf)),
        };
        if u32::try_from(len).is_err() {
            let e = VerbsError::Setup(format!("a write of {len} bytes is over 4 GiB"));
            return Err((e, buf));
        }
        if self.in_flight.len() >= SEND_QUEUE_DEPTH {
            return Err((VerbsError::SendQueueFull(self.in_flight.len()), buf));
        }
        let Some(span) = self.arena.take(len) else {
            let e = VerbsError::NoRoom {
                bytes: len,
                in_use: self.arena.in_use(),
            };
            return Err((e, buf));
        };
        self.arena_mem.write(span.offset as usize, &buf);
        let local = self.arena_mem.addr() + span.offset;
        let lkey = self.arena_mem.lkey();
        let mut guard = self.qp.start_post_send();
        let wr = guard.construct_wr(wr_id, WorkRequestFlags::Signaled);
        let handle = match imm {
            Some(imm) => wr.setup_write_imm(remote.rkey(), target, imm),
            None => wr.setup_write(remote.rkey(), target),
        };
        // SAFETY: `local..local + len` lies in the arena's registered memory (`lkey`),
        // inside `span`, which is kept in `in_flight` until this request's completion
        // is reaped (or the queue pair, dropped before the arena, is destroyed).
        unsafe { handle.setup_sge(lkey, local, len as u32) };
        match guard.post() {
            Ok(()) => {
                self.in_flight.push_back(InFlight { wr_id, span, buf });
                Ok(())
            }
            Err(e) => {
                // Not posted: the NIC never saw the span.
                self.arena.give_back(span);
                Err((io_err("post an RDMA write (ibv_wr_complete)", e), buf))
            }
        }
    }

    /// Takes up to `max` completions of writes; each hands its buffer back and frees
    /// its arena span. A failed one puts the queue pair in error.
    pub fn poll(&mut self, out: &mut Vec<Completion>, max: usize) {
        self.polled.clear();
        match self.send_cq.start_poll() {
            Ok(poller) => {
                for wc in poller.take(max) {
                    self.polled.push((wc.wr_id(), wc.status()));
                }
            }
            Err(PollCompletionQueueError::CompletionQueueEmpty) => {}
            Err(_) => self.state = QpState::Error,
        }
        for i in 0..self.polled.len() {
            let (wr_id, status) = self.polled[i];
            let status = WcStatus::of(status);
            let Some(at) = self.in_flight.iter().position(|f| f.wr_id == wr_id) else {
                continue;
            };
            let done = self.in_flight.remove(at).expect("position found");
            self.arena.give_back(done.span);
            if status != WcStatus::Success {
                self.state = QpState::Error;
            }
            out.push(Completion {
                wr_id,
                status,
                buf: done.buf,
            });
        }
    }

    pub fn state(&self) -> QpState {
        self.state
    }

    /// The descriptor that becomes readable when the peer wrote with immediate: the
    /// owner polls it (through its io_uring) when it has nothing else to do.
    pub fn wakeup_fd(&self) -> &Arc<OwnedFd> {
        &self.wake
    }

    /// Takes the channel's events, arms it again, takes the receive completions and
    /// posts as many receives; returns whether there were any.
    pub fn take_wakeups(&mut self) -> bool {
        let mut events = 0u32;
        while events < EVENTS_PER_WAKEUP_MAX {
            let mut cq: *mut ibv_cq = std::ptr::null_mut();
            let mut context: *mut libc::c_void = std::ptr::null_mut();
            // SAFETY: the channel lives as long as `self`; the out-pointers are locals.
            // The channel is non-blocking: with no event this returns -1 (EAGAIN).
            let r = unsafe {
                ibv_get_cq_event(self.channel.comp_channel().as_ptr(), &mut cq, &mut context)
            };
            if r != 0 {
                break;
            }
            events += 1;
        }
        if events > 0 {
            let cq = recv_cq_ptr(&self.recv_cq);
            // SAFETY: every event counted above was taken from this channel, whose only
            // completion queue is `cq`; acknowledging them lets it be destroyed later.
            unsafe { ibv_ack_cq_events(cq.as_ptr(), events) };
        }
        if self.arm().is_err() {
            self.state = QpState::Error;
        }
        let mut received = 0;
        match self.recv_cq.start_poll() {
            Ok(poller) => {
                for wc in poller.take(RECV_QUEUE_DEPTH) {
                    received += 1;
                    if wc.status() != ibv_wc_status::IBV_WC_SUCCESS {
                        self.state = QpState::Error;
                    }
                }
            }
            Err(PollCompletionQueueError::CompletionQueueEmpty) => {}
            Err(_) => self.state = QpState::Error,
        }
        if self.state != QpState::Error && self.post_receives(received).is_err() {
            self.state = QpState::Error;
        }
        events > 0 || received > 0
    }
}

/// The receive completion queue as the plain `ibv_cq` that notification takes.
fn recv_cq_ptr(cq: &ExtendedCompletionQueue) -> NonNull<ibv_cq> {
    // SAFETY: the pointer is used only while `cq` lives (callers hold it); an extended
    // completion queue begins with the plain one, as `ibv_cq_ex_to_cq` casts it.
    unsafe { cq.cq() }
}

/// The attribute of one transition, and the verb that applies it (for errors).
fn qp_attribute(step: &Step) -> (QueuePairAttribute, &'static str) {
    let mut a = QueuePairAttribute::new();
    match step {
        Step::Init { port, pkey_index } => {
            a.setup_state(QueuePairState::Init)
                .setup_pkey_index(*pkey_index)
                .setup_port(*port)
                .setup_access_flags(AccessFlags::LocalWrite | AccessFlags::RemoteWrite);
            (a, "ibv_modify_qp to INIT")
        }
        Step::Rtr {
            mtu,
            dest_qpn,
            rq_psn,
            dest_lid,
            port,
            grh,
            max_dest_rd_atomic,
            min_rnr_timer,
        } => {
            let mut ah = AddressHandleAttribute::new();
            ah.setup_dest_lid(*dest_lid)
                .setup_port(*port)
                .setup_service_level(0);
            if let Some(g) = grh {
                ah.setup_grh(&Gid { raw: g.dgid }, 0, g.sgid_index, g.hop_limit, 0);
            }
            a.setup_state(QueuePairState::ReadyToReceive)
                .setup_path_mtu(verbs_mtu(*mtu))
                .setup_dest_qp_num(*dest_qpn)
                .setup_rq_psn(*rq_psn)
                .setup_max_dest_read_atomic(*max_dest_rd_atomic)
                .setup_min_rnr_timer(*min_rnr_timer)
                .setup_address_vector(&ah);
            (a, "ibv_modify_qp to RTR")
        }
        Step::Rts {
            sq_psn,
            timeout,
            retry_cnt,
            rnr_retry,
            max_rd_atomic,
        } => {
            a.setup_state(QueuePairState::ReadyToSend)
                .setup_sq_psn(*sq_psn)
                .setup_timeout(*timeout)
                .setup_retry_cnt(*retry_cnt)
                .setup_rnr_retry(*rnr_retry)
                .setup_max_read_atomic(*max_rd_atomic);
            (a, "ibv_modify_qp to RTS")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a host with a usable device the probe names it; on one without, it says why
    /// in one line. Which one this host is comes from /sys, independently of
    /// libibverbs.
    #[test]
    fn the_probe_agrees_with_the_kernels_device_list() {
        let kernel_has_devices = std::fs::read_dir("/sys/class/infiniband")
            .map(|d| d.count() > 0)
            .unwrap_or(false);
        match probe(&DeviceChoice::default()) {
            Ok(name) => {
                assert!(
                    kernel_has_devices,
                    "device {name} without /sys/class/infiniband"
                );
                assert!(name.contains(" port "), "{name}");
            }
            Err(why) => {
                assert!(!why.contains('\n'), "one line: {why}");
                if kernel_has_devices {
                    assert!(why.starts_with("no usable device ("), "{why}");
                } else {
                    assert!(
                        why.starts_with("no device (") || why.starts_with("no libibverbs ("),
                        "{why}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_remote_region_is_reached_only_inside_its_bounds() {
        let r = Remote::new(0x10_000, 7, 4096);
        assert_eq!(r.target(0, 4096).unwrap(), 0x10_000);
        assert_eq!(r.target(4032, 64).unwrap(), 0x10_000 + 4032);
        assert_eq!(r.target(4096, 0).unwrap(), 0x10_000 + 4096);
        for (offset, len) in [(4033, 64), (0, 4097), (4097, 0), (8, u64::MAX)] {
            let e = r.target(offset, len).unwrap_err();
            assert!(
                matches!(e, VerbsError::OutOfBounds { region: 4096, .. }),
                "{offset}+{len}: {e}"
            );
        }
        // An address that would wrap is refused too.
        let high = Remote::new(u64::MAX - 8, 7, 64);
        assert!(high.target(16, 8).is_err());
    }

    #[test]
    fn completion_statuses_keep_the_ones_the_protocol_tells_apart() {
        assert_eq!(
            WcStatus::of(ibv_wc_status::IBV_WC_SUCCESS),
            WcStatus::Success
        );
        assert_eq!(
            WcStatus::of(ibv_wc_status::IBV_WC_REM_ACCESS_ERR),
            WcStatus::RemoteAccess
        );
        assert_eq!(
            WcStatus::of(ibv_wc_status::IBV_WC_WR_FLUSH_ERR),
            WcStatus::Flushed
        );
        assert_eq!(
            WcStatus::of(ibv_wc_status::IBV_WC_RETRY_EXC_ERR),
            WcStatus::Failed("RetryCounterExceededError".into())
        );
        assert_eq!(
            WcStatus::of(999),
            WcStatus::Failed("ibv_wc_status 999".into())
        );
    }

    /// Two queue pairs of one device, connected to each other (loopback), as a ring's
    /// primary and member would be.
    fn loopback(device: &Device) -> (Qp, Qp) {
        let mut a = device.create_qp(1 << 16).expect("create a queue pair");
        let mut b = device.create_qp(1 << 16).expect("create a queue pair");
        let (ea, eb) = (a.endpoint(), b.endpoint());
        a.connect(&eb).expect("connect a to b");
        b.connect(&ea).expect("connect b to a");
        (a, b)
    }

    /// Waits (bounded) for `n` completions of `qp`.
    fn completions(qp: &mut Qp, n: usize) -> Vec<Completion> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            qp.poll(&mut out, 64);
            if out.len() >= n {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        out
    }

    /// Hardware test: needs an RDMA device (a NIC, or soft-RoCE: `tools/soft-roce-rig`);
    /// `LOCKSTEP_RDMA_DEVICE` picks one. Skips with the probe's reason without one.
    #[test]
    fn a_write_with_immediate_lands_in_the_peers_region_and_wakes_it() {
        let choice = DeviceChoice::from_env();
        if let Err(why) = probe(&choice) {
            eprintln!("skipped: rdma: {why}");
            return;
        }
        let device = Device::open(&choice).expect("the probe opened it");
        let region = device.register(4096).unwrap();
        let (mut a, mut b) = loopback(&device);
        let body: Vec<u8> = (0..200u8).collect();
        a.post_write(7, body.clone(), &region.remote(), 64, Some(0))
            .unwrap();
        let done = completions(&mut a, 1);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].wr_id, 7);
        assert_eq!(done[0].status, WcStatus::Success);
        assert_eq!(done[0].buf, body, "the buffer comes back");
        let mut got = vec![0u8; 200];
        region.read(64, &mut got);
        assert_eq!(got, body);
        let mut woken = false;
        for _ in 0..10_000 {
            woken |= b.take_wakeups();
            if woken {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        assert!(woken, "the immediate reached the peer's receive queue");
        // Outside the bounds: refused before posting, the queue pair still runs.
        let (e, _) = a
            .post_write(8, vec![1; 64], &region.remote(), 4090, None)
            .unwrap_err();
        assert!(matches!(e, VerbsError::OutOfBounds { .. }));
        assert_eq!(a.state(), QpState::ReadyToSend);
        // A forged rkey: the NIC refuses it and the queue pair fails.
        let forged = Remote::new(region.addr(), region.rkey() ^ 0x100, 4096);
        a.post_write(9, vec![1; 64], &forged, 0, None).unwrap();
        let done = completions(&mut a, 1);
        assert_ne!(done[0].status, WcStatus::Success);
        assert_eq!(a.state(), QpState::Error);
        drop(b);
    }
}
