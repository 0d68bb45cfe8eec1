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

/// Cores the calling thread may run on now (its own affinity, which a pinned thread
/// passes on to the threads it starts).
pub fn current_thread_cores() -> Vec<usize> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the size passed is the size of `set`, which the kernel fills.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET only reads the set, with indices below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Online cores of the machine, from /sys (all cores, whatever any thread's affinity).
pub fn online_cores() -> Vec<usize> {
    let Ok(text) = std::fs::read_to_string("/sys/devices/system/cpu/online") else {
        return available_cores();
    };
    let mut v = Vec::new();
    for part in text.trim().split(',') {
        let mut ends = part.split('-').map(|x| x.parse::<usize>());
        match (ends.next(), ends.next()) {
            (Some(Ok(a)), Some(Ok(b))) => v.extend(a..=b),
            (Some(Ok(a)), None) => v.push(a),
            _ => return available_cores(),
        }
    }
    v
}

/// Lets the calling thread run on exactly `cores`.
pub fn set_current_thread_cores(cores: &[usize]) -> Result<(), PinError> {
    let first = cores.first().copied().unwrap_or(0);
    if cores.is_empty() || cores.iter().any(|&c| c >= libc::CPU_SETSIZE as usize) {
        return Err(PinError {
            core: first,
            reason: "empty or out-of-range core list",
        });
    }
    // SAFETY: as in current_thread_cores.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cores {
        // SAFETY: c < CPU_SETSIZE (checked above), so the write stays inside `set`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: the kernel reads size_of::<cpu_set_t>() bytes from `set`.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(PinError {
            core: first,
            reason: "sched_setaffinity refused",
        })
    }
}

/// Moves a helper thread off the cores its (pinned) parent runs on, so background work
/// does not take time from a shard. `parent` is the parent's affinity, read before the
/// thread was started. When the parent may run anywhere, nothing changes.
pub fn keep_off(parent: &[usize]) {
    let online = online_cores();
    let others: Vec<usize> = online
        .iter()
        .copied()
        .filter(|c| !parent.contains(c))
        .collect();
    if !others.is_empty() && parent.len() < online.len() {
        // Best effort: if it fails, the helper shares the parent's core, which is
        // slower but correct.
        let _ = set_current_thread_cores(&others);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_roundtrip() {
        let online = online_cores();
        assert!(!online.is_empty());
        let h = std::thread::spawn(move || {
            let before = current_thread_cores();
            assert!(!before.is_empty());
            set_current_thread_cores(&online[..1]).unwrap();
            assert_eq!(current_thread_cores(), vec![online[0]]);
            if online.len() > 1 {
                let parent = current_thread_cores();
                std::thread::spawn(move || {
                    keep_off(&parent);
                    let now = current_thread_cores();
                    assert!(!now.contains(&parent[0]), "{now:?}");
                })
                .join()
                .unwrap();
            }
        });
        h.join().unwrap();
        assert!(set_current_thread_cores(&[]).is_err());
    }
}
