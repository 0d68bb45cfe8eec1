//! Pinning threads to cores.

use std::fmt;

/// Why a thread could not be pinned.
#[derive(Debug)]
pub struct PinError {
    pub core: usize,
    pub reason: &'static str,
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot pin thread to core {}: {}",
            self.core, self.reason
        )
    }
}

impl std::error::Error for PinError {}

/// Ids of the cores this process may run on, in order.
pub fn available_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_default()
}

/// Pins the calling thread to `core`.
pub fn pin_current_thread(core: usize) -> Result<(), PinError> {
    if !available_cores().contains(&core) {
        return Err(PinError {
            core,
            reason: "core is not in this process's CPU set",
        });
    }
    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        Ok(())
    } else {
        Err(PinError {
            core,
            reason: "sched_setaffinity refused",
        })
    }
}
