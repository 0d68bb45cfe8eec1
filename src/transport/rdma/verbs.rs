//! The safe verbs interface the ring protocol is written against: registered regions,
//! reliable-connected queue pairs, one-sided RDMA WRITE (with or without immediate),
//! completions. Two providers implement it: the emulated one (a test double, see
//! [`super::emulated`]) and the device one ([`super::device`], libibverbs through
//! `lockstep_sys::verbs` and the `sideway` crate). The ring protocol is written against
//! these traits only, so it runs on either.
//!
//! Hardware rules live in the types:
//! - a [`RemoteRegion`] is only ever made from a peer's setup message or a local
//!   region's [`LocalRegion::remote`]: it carries the rkey and the bounds, and a write
//!   outside its bounds is refused before it is posted;
//! - a buffer handed to a queue pair ([`QueuePair::post_write`]) is owned by the queue
//!   pair until its [`WorkCompletion`] hands it back, so memory the NIC reads is never
//!   reused meanwhile;
//! - a queue pair in [`QpState::Error`] accepts no work; its outstanding work completes
//!   with an error status (flushed).

use std::os::fd::OwnedFd;
use std::sync::Arc;

/// Where a peer may write: the region's location (an address on the real path, a
/// shared-memory path under emulation), its rkey and its length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteRegion {
    location: String,
    addr: u64,
    rkey: u32,
    len: u64,
}

impl RemoteRegion {
    /// A region as a provider describes its own memory.
    pub(super) fn new(location: String, addr: u64, rkey: u32, len: u64) -> RemoteRegion {
        RemoteRegion {
            location,
            addr,
            rkey,
            len,
        }
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn addr(&self) -> u64 {
        self.addr
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

    /// Whether `len` bytes at `offset` lie inside the region.
    pub fn holds(&self, offset: u64, len: u64) -> bool {
        offset <= self.len && len <= self.len - offset
    }

    /// The descriptor sent to the peer in the setup exchange.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.addr.to_le_bytes());
        out.extend_from_slice(&self.rkey.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        put_str(out, &self.location);
    }

    pub fn decode(bytes: &mut &[u8]) -> Result<RemoteRegion, String> {
        let addr = take_u64(bytes)?;
        let rkey = take_u32(bytes)?;
        let len = take_u64(bytes)?;
        let location = take_str(bytes)?;
        Ok(RemoteRegion {
            location,
            addr,
            rkey,
            len,
        })
    }
}

/// What a peer needs to connect its queue pair to this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub qpn: u32,
    pub psn: u32,
    pub lid: u16,
    pub gid: [u8; 16],
    /// Emulated provider only: the doorbell a WRITE_WITH_IMM rings.
    pub doorbell: String,
}

impl Endpoint {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.qpn.to_le_bytes());
        out.extend_from_slice(&self.psn.to_le_bytes());
        out.extend_from_slice(&self.lid.to_le_bytes());
        out.extend_from_slice(&self.gid);
        put_str(out, &self.doorbell);
    }

    pub fn decode(bytes: &mut &[u8]) -> Result<Endpoint, String> {
        let qpn = take_u32(bytes)?;
        let psn = take_u32(bytes)?;
        let lid = u16::from_le_bytes(take(bytes, 2)?.try_into().expect("2 bytes"));
        let gid = take(bytes, 16)?.try_into().expect("16 bytes");
        let doorbell = take_str(bytes)?;
        Ok(Endpoint {
            qpn,
            psn,
            lid,
            gid,
            doorbell,
        })
    }
}

/// The states of a queue pair the protocol tells apart, how a work request ended, and
/// a finished work request with the buffer it was posted with: the device's own types
/// (`lockstep_sys::verbs`), which the emulated provider reports in too.
pub use lockstep_sys::verbs::{Completion as WorkCompletion, QpState, WcStatus};

#[derive(Debug, thiserror::Error)]
pub enum VerbsError {
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("queue pair is {0:?}")]
    State(QpState),
    #[error("{len} bytes at {offset} lie outside the remote region of {region} bytes")]
    OutOfBounds { offset: u64, len: u64, region: u64 },
    #[error("send queue full ({0} requests outstanding)")]
    SendQueueFull(usize),
    #[error("bad setup message: {0}")]
    Setup(String),
}

/// Memory registered for peers to write into.
pub trait LocalRegion {
    /// What a peer needs to write here.
    fn remote(&self) -> RemoteRegion;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies bytes at `offset` out.
    fn read(&self, offset: usize, out: &mut [u8]);
    /// Loads the 8-aligned word at `offset`; bytes placed before it are visible after.
    fn load_u64(&self, offset: usize) -> u64;
}

/// A reliable-connected queue pair and its completion queue.
pub trait QueuePair {
    fn endpoint(&self) -> Endpoint;
    /// Connects to `peer` (INIT → RTR → RTS).
    fn connect(&mut self, peer: &Endpoint) -> Result<(), VerbsError>;
    /// Posts an RDMA WRITE of `buf` to `offset` in `remote`, signalled; with `imm`, a
    /// WRITE_WITH_IMM that also wakes the peer. The buffer comes back in the request's
    /// completion; on error it comes back at once.
    fn post_write(
        &mut self,
        wr_id: u64,
        buf: Vec<u8>,
        remote: &RemoteRegion,
        offset: u64,
        imm: Option<u32>,
    ) -> Result<(), (VerbsError, Vec<u8>)>;
    /// Takes up to `max` completions.
    fn poll(&mut self, out: &mut Vec<WorkCompletion>, max: usize);
    fn state(&self) -> QpState;
    /// The descriptor that becomes readable when the peer wrote with immediate: the
    /// owner waits on it when it has nothing else to do.
    fn wakeup_fd(&self) -> &Arc<OwnedFd>;
    /// Consumes the wake-ups; returns whether there were any.
    fn take_wakeups(&mut self) -> bool;
}

/// A source of regions and queue pairs.
pub trait Provider {
    type Region: LocalRegion;
    type Qp: QueuePair;
    fn name(&self) -> &'static str;
    fn register(&mut self, len: usize) -> Result<Self::Region, VerbsError>;
    /// A queue pair that may have `send_bytes_max` bytes of writes outstanding (the
    /// device provider stages them in registered memory of that size).
    fn create_qp(&mut self, send_bytes_max: usize) -> Result<Self::Qp, VerbsError>;
}

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if bytes.len() < n {
        return Err(format!("{n} bytes expected, {} left", bytes.len()));
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

fn take_u32(bytes: &mut &[u8]) -> Result<u32, String> {
    Ok(u32::from_le_bytes(take(bytes, 4)?.try_into().expect("4")))
}

fn take_u64(bytes: &mut &[u8]) -> Result<u64, String> {
    Ok(u64::from_le_bytes(take(bytes, 8)?.try_into().expect("8")))
}

pub(super) fn take_str(bytes: &mut &[u8]) -> Result<String, String> {
    let n = u16::from_le_bytes(take(bytes, 2)?.try_into().expect("2")) as usize;
    let s = take(bytes, n)?;
    String::from_utf8(s.to_vec()).map_err(|_| "location is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_survive_their_encoding() {
        let r = RemoteRegion::new("/proc/1/fd/3".into(), 0x1000, 77, 4096);
        let e = Endpoint {
            qpn: 9,
            psn: 123,
            lid: 2,
            gid: [7; 16],
            doorbell: "/proc/1/fd/4".into(),
        };
        let mut out = Vec::new();
        r.encode(&mut out);
        e.encode(&mut out);
        let mut rest = out.as_slice();
        assert_eq!(RemoteRegion::decode(&mut rest).unwrap(), r);
        assert_eq!(Endpoint::decode(&mut rest).unwrap(), e);
        assert!(rest.is_empty());
        let mut short = &out[..10];
        assert!(RemoteRegion::decode(&mut short).is_err());
    }

    #[test]
    fn a_remote_region_holds_only_its_bounds() {
        let r = RemoteRegion::new(String::new(), 0, 1, 100);
        assert!(r.holds(0, 100));
        assert!(r.holds(100, 0));
        assert!(!r.holds(1, 100));
        assert!(!r.holds(101, 0));
        assert!(!r.holds(50, u64::MAX));
    }
}
