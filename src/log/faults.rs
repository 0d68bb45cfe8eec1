//! Fault injection points of the log, for tests of the error paths that real disks reach
//! rarely: a full disk when a segment is prepared, an I/O error on a durable write, a
//! crash in the middle of starting the log over.
//!
//! A `Faults` handle is shared between the test and the log through `LogOptions`; each
//! point is a counter of how many upcoming operations fail. The cost when unused is one
//! relaxed atomic load per write.

use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, Default)]
pub struct Faults {
    enospc_prepare: AtomicU32,
    enospc_rollover: AtomicU32,
    eio_write: AtomicU32,
    /// Deletions the next reset makes before it stops, plus one (0: off).
    reset_stop: AtomicU32,
}

impl Faults {
    /// The next `n` segment preparations fail with ENOSPC.
    pub fn fail_prepare_enospc(&self, n: u32) {
        self.enospc_prepare.store(n, Ordering::SeqCst);
    }

    /// The next `n` rollovers to a new segment fail with ENOSPC, as if the prepared
    /// segment could not be had (it is discarded and prepared again on the next try).
    pub fn fail_rollover_enospc(&self, n: u32) {
        self.enospc_rollover.store(n, Ordering::SeqCst);
    }

    /// The next `n` durable writes complete with EIO.
    pub fn fail_write_eio(&self, n: u32) {
        self.eio_write.store(n, Ordering::SeqCst);
    }

    /// The next reset ([`crate::log::Log::reset`]) stops after deleting `deletions`
    /// segments, as a crash there would leave the directory, and the log stops.
    pub fn stop_reset_after(&self, deletions: u32) {
        self.reset_stop.store(deletions + 1, Ordering::SeqCst);
    }

    pub(crate) fn take_reset_stop(&self) -> Option<usize> {
        let v = self.reset_stop.swap(0, Ordering::SeqCst);
        (v > 0).then(|| v as usize - 1)
    }

    pub(crate) fn take_prepare_enospc(&self) -> bool {
        take(&self.enospc_prepare)
    }

    pub(crate) fn take_rollover_enospc(&self) -> bool {
        take(&self.enospc_rollover)
    }

    pub(crate) fn take_write_eio(&self) -> bool {
        take(&self.eio_write)
    }
}

fn take(c: &AtomicU32) -> bool {
    c.load(Ordering::Relaxed) > 0
        && c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
            .is_ok()
}
