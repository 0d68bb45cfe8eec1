//! The device provider: the safe verbs interface ([`super::verbs`]) over an RDMA device
//! (a NIC, or soft-RoCE), through `lockstep_sys::verbs`, which holds every unsafe
//! call. The ring protocol runs on it unchanged; only this file knows the device.
//!
//! What it maps:
//! - a region is registered memory; its [`RemoteRegion`] carries the address, rkey and
//!   length a peer writes with (no location: the address is the peer's to name);
//! - a queue pair is a reliable-connected one; its [`Endpoint`] carries QPN, PSN, LID
//!   and GID (no doorbell: WRITE_WITH_IMM wakes the peer through its completion
//!   channel, whose descriptor [`QueuePair::wakeup_fd`] hands out);
//! - a write is bounds-checked twice (here against the [`RemoteRegion`], and in
//!   `lockstep_sys::verbs::Remote::target` where it is posted), and its buffer comes
//!   back only with its completion.
//!
//! Fault model: every error status of a completion puts the queue pair in error, and
//! the link falls back to TCP as on emulated verbs. Which device and GID: the first
//! device with an active port, or `LOCKSTEP_RDMA_DEVICE` / `LOCKSTEP_RDMA_GID_INDEX`
//! (see `lockstep_sys::verbs::DeviceChoice`).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use lockstep_sys::verbs as sys;

use super::verbs::{
    Endpoint, LocalRegion, Provider, QpState, QueuePair, RemoteRegion, VerbsError, WorkCompletion,
};

/// The device provider of one shard: its own device context and protection domain.
pub struct DeviceProvider {
    device: sys::Device,
}

impl DeviceProvider {
    /// Opens the device `choice` names (or the first usable one).
    pub fn open(choice: &sys::DeviceChoice) -> Result<DeviceProvider, String> {
        Ok(DeviceProvider {
            device: sys::Device::open(choice)?,
        })
    }

    /// The device, its port and GID, in one line.
    pub fn describe(&self) -> String {
        self.device.describe()
    }
}

impl Provider for DeviceProvider {
    type Region = DeviceRegion;
    type Qp = DeviceQp;

    fn name(&self) -> &'static str {
        "rdma"
    }

    fn register(&mut self, len: usize) -> Result<DeviceRegion, VerbsError> {
        let region = self.device.register(len).map_err(from_sys)?;
        Ok(DeviceRegion { region })
    }

    fn create_qp(&mut self, send_bytes_max: usize) -> Result<DeviceQp, VerbsError> {
        let qp = self.device.create_qp(send_bytes_max).map_err(from_sys)?;
        Ok(DeviceQp { qp })
    }
}

/// Memory of this node registered for a peer to write into.
pub struct DeviceRegion {
    region: sys::Region,
}

impl LocalRegion for DeviceRegion {
    fn remote(&self) -> RemoteRegion {
        let r = &self.region;
        RemoteRegion::new(String::new(), r.addr(), r.rkey(), r.len() as u64)
    }

    fn len(&self) -> usize {
        self.region.len()
    }

    fn read(&self, offset: usize, out: &mut [u8]) {
        self.region.read(offset, out);
    }

    fn load_u64(&self, offset: usize) -> u64 {
        self.region.load_u64(offset)
    }
}

/// A reliable-connected queue pair on the device.
pub struct DeviceQp {
    qp: sys::Qp,
}

impl QueuePair for DeviceQp {
    fn endpoint(&self) -> Endpoint {
        let e = self.qp.endpoint();
        Endpoint {
            qpn: e.qpn,
            psn: e.psn,
            lid: e.lid,
            gid: e.gid,
            doorbell: String::new(),
        }
    }

    fn connect(&mut self, peer: &Endpoint) -> Result<(), VerbsError> {
        let peer = sys::attr::Endpoint {
            qpn: peer.qpn,
            psn: peer.psn,
            lid: peer.lid,
            gid: peer.gid,
        };
        self.qp.connect(&peer).map_err(from_sys)
    }

    fn post_write(
        &mut self,
        wr_id: u64,
        buf: Vec<u8>,
        remote: &RemoteRegion,
        offset: u64,
        imm: Option<u32>,
    ) -> Result<(), (VerbsError, Vec<u8>)> {
        // The bounds are checked where the write is posted (`sys::Remote::target`).
        let target = sys::Remote::new(remote.addr(), remote.rkey(), remote.len());
        self.qp
            .post_write(wr_id, buf, &target, offset, imm)
            .map_err(|(e, buf)| (from_sys(e), buf))
    }

    fn poll(&mut self, out: &mut Vec<WorkCompletion>, max: usize) {
        self.qp.poll(out, max);
    }

    fn state(&self) -> QpState {
        self.qp.state()
    }

    fn wakeup_fd(&self) -> &Arc<OwnedFd> {
        self.qp.wakeup_fd()
    }

    fn take_wakeups(&mut self) -> bool {
        self.qp.take_wakeups()
    }
}

fn from_sys(e: sys::VerbsError) -> VerbsError {
    match e {
        sys::VerbsError::Io { op, source } => VerbsError::Io { op, source },
        sys::VerbsError::OutOfBounds {
            offset,
            len,
            region,
        } => VerbsError::OutOfBounds {
            offset,
            len,
            region,
        },
        sys::VerbsError::State(s) => VerbsError::State(s),
        sys::VerbsError::SendQueueFull(n) => VerbsError::SendQueueFull(n),
        e @ (sys::VerbsError::NoRoom { .. } | sys::VerbsError::Setup(_)) => {
            VerbsError::Setup(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_devices_errors_keep_their_meaning() {
        let e = from_sys(sys::VerbsError::OutOfBounds {
            offset: 8,
            len: 16,
            region: 16,
        });
        assert!(matches!(
            e,
            VerbsError::OutOfBounds {
                offset: 8,
                len: 16,
                region: 16
            }
        ));
        assert!(matches!(
            from_sys(sys::VerbsError::State(sys::QpState::Error)),
            VerbsError::State(QpState::Error)
        ));
        let room = from_sys(sys::VerbsError::NoRoom {
            bytes: 64,
            in_use: 128,
        });
        assert!(room.to_string().contains("no room for 64 bytes"), "{room}");
    }
}
