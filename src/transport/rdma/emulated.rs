//! Emulated verbs: a test double of an RDMA NIC for hosts without one
//! (`transport = "rdma-emu"`). Never the product: it exists so the ring protocol runs,
//! with its faults, in unit tests and between real lockstepd processes on one machine.
//!
//! What it models:
//! - registered regions: shared memory (`lockstep_sys::shm`) with a control word that
//!   holds the rkey and the length; a write is refused when the rkey does not match or
//!   the region was deregistered (the owner dropped it), and the queue pair then goes
//!   to error, as a NIC's does on a remote access error;
//! - one-sided placement in order per queue pair: a write is placed in ascending
//!   address order, word by word with release stores, at post time (so writes of one
//!   queue pair are placed in the order they were posted);
//! - completions only after placement, optionally delayed by a number of polls;
//! - queue pair error states: after an error nothing more is placed and every later post
//!   is refused;
//! - injected faults ([`Faults`]): the queue pair goes to error after N more writes; the
//!   next write is torn (only its first bytes are placed, then the queue pair fails);
//!   completions are delayed.
//!
//! WRITE_WITH_IMM rings the peer's doorbell (a pipe its owner polls), standing in for
//! the receive completion and completion channel of the real path.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use lockstep_sys::shm::{Doorbell, DoorbellSender, SharedRegion};

use super::verbs::{
    Endpoint, LocalRegion, Provider, QpState, QueuePair, RemoteRegion, VerbsError, WcStatus,
    WorkCompletion,
};

/// Bytes before a region's data: the control words (valid mark, rkey, length).
const CONTROL_BYTES: usize = 64;
const VALID: u64 = 0x4c53_454d_5552_4547; // "LSEMUREG"
/// Work requests outstanding on one queue pair at most, as a NIC's send queue depth.
pub const SEND_QUEUE_DEPTH: usize = 256;

/// Faults to inject into the queue pairs of one provider. Shared: a test keeps a handle
/// and changes it while the protocol runs.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// The queue pair that posts the write after this many more goes to error (once).
    pub error_after_writes: Option<u64>,
    /// The next write places only this many bytes, then the queue pair goes to error.
    pub tear_next_write_bytes: Option<usize>,
    /// Completions are handed out only after this many polls.
    pub delay_completions_polls: u32,
}

/// The emulated provider (a test double; see the module docs).
#[derive(Default)]
pub struct EmulatedProvider {
    faults: Arc<Mutex<Faults>>,
    next_qpn: u32,
}

impl EmulatedProvider {
    pub fn new() -> EmulatedProvider {
        EmulatedProvider::default()
    }

    /// The faults every queue pair of this provider obeys.
    pub fn faults(&self) -> Arc<Mutex<Faults>> {
        self.faults.clone()
    }
}

impl Provider for EmulatedProvider {
    type Region = EmulatedRegion;
    type Qp = EmulatedQp;

    fn name(&self) -> &'static str {
        "rdma-emu"
    }

    fn register(&mut self, len: usize) -> Result<EmulatedRegion, VerbsError> {
        let mut shm =
            SharedRegion::create("lockstep-rdma-emu", CONTROL_BYTES + len).map_err(|source| {
                VerbsError::Io {
                    op: "register an emulated region",
                    source,
                }
            })?;
        let rkey = (RandomState::new().hash_one(std::time::Instant::now()) as u32) | 1;
        shm.store_u64(8, u64::from(rkey));
        shm.store_u64(16, len as u64);
        shm.store_u64(0, VALID);
        Ok(EmulatedRegion { shm, rkey, len })
    }

    fn create_qp(&mut self, _send_bytes_max: usize) -> Result<EmulatedQp, VerbsError> {
        self.next_qpn += 1;
        let doorbell = Doorbell::new().map_err(|source| VerbsError::Io {
            op: "create an emulated completion channel",
            source,
        })?;
        Ok(EmulatedQp {
            qpn: self.next_qpn,
            psn: RandomState::new().hash_one(self.next_qpn) as u32 & 0x00ff_ffff,
            state: QpState::Init,
            doorbell,
            peer_doorbell: None,
            mapped: HashMap::new(),
            done: VecDeque::new(),
            held: VecDeque::new(),
            outstanding: 0,
            faults: self.faults.clone(),
        })
    }
}

/// A registered region of the emulated provider.
pub struct EmulatedRegion {
    shm: SharedRegion,
    rkey: u32,
    len: usize,
}

impl LocalRegion for EmulatedRegion {
    fn remote(&self) -> RemoteRegion {
        RemoteRegion::new(self.shm.path(), 0, self.rkey, self.len as u64)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn read(&self, offset: usize, out: &mut [u8]) {
        assert!(offset + out.len() <= self.len, "read past the region");
        self.shm.read(CONTROL_BYTES + offset, out);
    }

    fn load_u64(&self, offset: usize) -> u64 {
        assert!(offset + 8 <= self.len, "load past the region");
        self.shm.load_u64(CONTROL_BYTES + offset)
    }
}

impl Drop for EmulatedRegion {
    /// Deregisters: writes from peers are refused from now on.
    fn drop(&mut self) {
        self.shm.store_u64(0, 0);
    }
}

/// A queue pair of the emulated provider.
pub struct EmulatedQp {
    qpn: u32,
    psn: u32,
    state: QpState,
    doorbell: Doorbell,
    peer_doorbell: Option<DoorbellSender>,
    /// Peers' regions, opened once each.
    mapped: HashMap<String, SharedRegion>,
    done: VecDeque<WorkCompletion>,
    /// Completions held back by an injected delay: (polls left, completion).
    held: VecDeque<(u32, WorkCompletion)>,
    outstanding: usize,
    faults: Arc<Mutex<Faults>>,
}

impl EmulatedQp {
    fn fail(&mut self, wr_id: u64, status: WcStatus, buf: Vec<u8>) {
        self.state = QpState::Error;
        self.done.push_back(WorkCompletion { wr_id, status, buf });
        // Held completions are flushed in order after the failure.
        while let Some((_, mut c)) = self.held.pop_front() {
            c.status = WcStatus::Flushed;
            self.done.push_back(c);
        }
    }

    /// The peer's region, opened and checked against `remote`'s rkey and length.
    fn target(&mut self, remote: &RemoteRegion) -> Option<&mut SharedRegion> {
        let len = CONTROL_BYTES + remote.len() as usize;
        if !self.mapped.contains_key(remote.location()) {
            let shm = SharedRegion::open(remote.location(), len).ok()?;
            self.mapped.insert(remote.location().to_string(), shm);
        }
        let shm = self.mapped.get_mut(remote.location())?;
        let valid = shm.load_u64(0) == VALID;
        let rkey = shm.load_u64(8) == u64::from(remote.rkey());
        let long_enough = shm.load_u64(16) >= remote.len();
        (valid && rkey && long_enough).then_some(shm)
    }
}

impl QueuePair for EmulatedQp {
    fn endpoint(&self) -> Endpoint {
        Endpoint {
            qpn: self.qpn,
            psn: self.psn,
            lid: 0,
            gid: [0; 16],
            doorbell: self.doorbell.path(),
        }
    }

    fn connect(&mut self, peer: &Endpoint) -> Result<(), VerbsError> {
        if self.state != QpState::Init {
            return Err(VerbsError::State(self.state));
        }
        let bell = DoorbellSender::open(&peer.doorbell).map_err(|source| VerbsError::Io {
            op: "open the peer's emulated completion channel",
            source,
        })?;
        self.peer_doorbell = Some(bell);
        self.state = QpState::ReadyToSend;
        Ok(())
    }

    fn post_write(
        &mut self,
        wr_id: u64,
        buf: Vec<u8>,
        remote: &RemoteRegion,
        offset: u64,
        imm: Option<u32>,
    ) -> Result<(), (VerbsError, Vec<u8>)> {
        if self.state != QpState::ReadyToSend {
            return Err((VerbsError::State(self.state), buf));
        }
        if !remote.holds(offset, buf.len() as u64) {
            let e = VerbsError::OutOfBounds {
                offset,
                len: buf.len() as u64,
                region: remote.len(),
            };
            return Err((e, buf));
        }
        if self.outstanding >= SEND_QUEUE_DEPTH {
            return Err((VerbsError::SendQueueFull(self.outstanding), buf));
        }
        self.outstanding += 1;
        let (fail_now, tear, delay) = {
            let mut f = self.faults.lock().expect("faults lock");
            // One-shot: the fault fails one queue pair, and later ones run.
            let fail_now = f.error_after_writes == Some(0);
            if fail_now {
                f.error_after_writes = None;
            }
            if let Some(n) = f.error_after_writes.as_mut() {
                *n -= 1;
            }
            (
                fail_now,
                f.tear_next_write_bytes.take(),
                f.delay_completions_polls,
            )
        };
        if fail_now {
            self.fail(wr_id, WcStatus::Flushed, buf);
            return Ok(());
        }
        let at = CONTROL_BYTES + offset as usize;
        let Some(target) = self.target(remote) else {
            self.fail(wr_id, WcStatus::RemoteAccess, buf);
            return Ok(());
        };
        if let Some(n) = tear {
            target.write(at, &buf[..n.min(buf.len())]);
            self.fail(wr_id, WcStatus::Flushed, buf);
            return Ok(());
        }
        target.write(at, &buf);
        let c = WorkCompletion {
            wr_id,
            status: WcStatus::Success,
            buf,
        };
        if delay > 0 {
            self.held.push_back((delay, c));
        } else {
            self.done.push_back(c);
        }
        if imm.is_some()
            && let Some(bell) = self.peer_doorbell.as_mut()
            && bell.ring().is_err()
        {
            // The peer's process is gone: its queue pair would stop answering.
            self.state = QpState::Error;
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<WorkCompletion>, max: usize) {
        for h in self.held.iter_mut() {
            h.0 = h.0.saturating_sub(1);
        }
        while self.held.front().is_some_and(|h| h.0 == 0) {
            let (_, c) = self.held.pop_front().expect("front");
            self.done.push_back(c);
        }
        let mut taken = 0;
        while taken < max {
            let Some(c) = self.done.pop_front() else {
                break;
            };
            self.outstanding -= 1;
            out.push(c);
            taken += 1;
        }
    }

    fn state(&self) -> QpState {
        self.state
    }

    fn wakeup_fd(&self) -> &Arc<OwnedFd> {
        self.doorbell.fd()
    }

    fn take_wakeups(&mut self) -> bool {
        self.doorbell.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(p: &mut EmulatedProvider) -> (EmulatedQp, EmulatedQp) {
        let mut a = p.create_qp(1 << 16).unwrap();
        let mut b = p.create_qp(1 << 16).unwrap();
        a.connect(&b.endpoint()).unwrap();
        b.connect(&a.endpoint()).unwrap();
        (a, b)
    }

    fn completions(qp: &mut EmulatedQp) -> Vec<WorkCompletion> {
        let mut out = Vec::new();
        qp.poll(&mut out, 64);
        out
    }

    #[test]
    fn a_write_is_placed_before_its_completion_and_rings_the_peer() {
        let mut p = EmulatedProvider::new();
        let region = p.register(4096).unwrap();
        let (mut a, mut b) = pair(&mut p);
        a.post_write(1, vec![5; 16], &region.remote(), 64, Some(0))
            .unwrap();
        let mut got = [0u8; 16];
        region.read(64, &mut got);
        assert_eq!(got, [5; 16]);
        let c = completions(&mut a);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, WcStatus::Success);
        assert_eq!(c[0].buf, vec![5; 16]);
        assert!(b.take_wakeups());
        assert!(!b.take_wakeups());
    }

    #[test]
    fn a_wrong_rkey_is_refused_and_fails_the_queue_pair() {
        let mut p = EmulatedProvider::new();
        let region = p.register(4096).unwrap();
        let (mut a, _b) = pair(&mut p);
        let r = region.remote();
        let forged = RemoteRegion::new(r.location().into(), 0, r.rkey() ^ 2, r.len());
        a.post_write(1, vec![1; 8], &forged, 0, None).unwrap();
        assert_eq!(region.load_u64(0), 0, "nothing placed");
        assert_eq!(completions(&mut a)[0].status, WcStatus::RemoteAccess);
        assert_eq!(a.state(), QpState::Error);
        let (e, buf) = a.post_write(2, vec![1; 8], &r, 0, None).unwrap_err();
        assert!(matches!(e, VerbsError::State(QpState::Error)));
        assert_eq!(buf.len(), 8, "the buffer comes back");
    }

    #[test]
    fn a_write_outside_the_region_is_refused_before_posting() {
        let mut p = EmulatedProvider::new();
        let region = p.register(4096).unwrap();
        let (mut a, _b) = pair(&mut p);
        let (e, _) = a
            .post_write(1, vec![1; 16], &region.remote(), 4088, None)
            .unwrap_err();
        assert!(matches!(e, VerbsError::OutOfBounds { .. }));
        assert_eq!(a.state(), QpState::ReadyToSend);
    }

    #[test]
    fn a_deregistered_region_refuses_writes() {
        let mut p = EmulatedProvider::new();
        let region = p.register(4096).unwrap();
        let remote = region.remote();
        let (mut a, _b) = pair(&mut p);
        a.post_write(1, vec![1; 8], &remote, 0, None).unwrap();
        drop(region);
        a.post_write(2, vec![1; 8], &remote, 0, None).unwrap();
        let c = completions(&mut a);
        assert_eq!(c[0].status, WcStatus::Success);
        assert_eq!(c[1].status, WcStatus::RemoteAccess);
    }

    #[test]
    fn delayed_completions_come_after_the_delay_in_order() {
        let mut p = EmulatedProvider::new();
        let region = p.register(4096).unwrap();
        let (mut a, _b) = pair(&mut p);
        p.faults().lock().unwrap().delay_completions_polls = 2;
        a.post_write(1, vec![1; 8], &region.remote(), 0, None)
            .unwrap();
        a.post_write(2, vec![2; 8], &region.remote(), 8, None)
            .unwrap();
        assert_eq!(
            region.load_u64(8),
            u64::from_ne_bytes([2; 8]),
            "placed at once"
        );
        assert!(completions(&mut a).is_empty());
        let c = completions(&mut a);
        assert_eq!(c.iter().map(|c| c.wr_id).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn an_injected_error_flushes_and_places_nothing_more() {
        let mut p = EmulatedProvider::new();
        let region = p.register(4096).unwrap();
        let (mut a, _b) = pair(&mut p);
        p.faults().lock().unwrap().error_after_writes = Some(1);
        a.post_write(1, vec![1; 8], &region.remote(), 0, None)
            .unwrap();
        a.post_write(2, vec![2; 8], &region.remote(), 8, None)
            .unwrap();
        assert_eq!(region.load_u64(8), 0);
        let c = completions(&mut a);
        assert_eq!(c[0].status, WcStatus::Success);
        assert_eq!(c[1].status, WcStatus::Flushed);
        assert_eq!(a.state(), QpState::Error);
        // The fault was used up: a new queue pair runs.
        let (mut c, _d) = pair(&mut p);
        c.post_write(3, vec![3; 8], &region.remote(), 16, None)
            .unwrap();
        assert_eq!(completions(&mut c)[0].status, WcStatus::Success);
    }
}
