//! Kernel feature probes. Each answers `Ok(())` or the one-line reason a feature is
//! missing, so the caller can say clearly what it falls back to and why.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::file::{Access, open_rw};
use crate::mem::AlignedBuf;
use crate::uring::{Completion, Ring, RingOptions, WriteSync};

/// Whether io_uring can be used by this process.
pub fn io_uring() -> Result<(), String> {
    if let Ok(v) = fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        match v.trim() {
            "0" => {}
            "2" => {
                return Err(
                    "io_uring is disabled by /proc/sys/kernel/io_uring_disabled = 2".into(),
                );
            }
            other => {
                // 1: only processes in kernel.io_uring_group may create rings; try it.
                if let Err(e) = Ring::new(RingOptions {
                    entries: 2,
                    ..Default::default()
                }) {
                    return Err(format!(
                        "io_uring is restricted by /proc/sys/kernel/io_uring_disabled = {other}: {e}"
                    ));
                }
            }
        }
    }
    Ring::new(RingOptions {
        entries: 2,
        fixed_buffer_slots: 0,
        sqpoll_idle_ms: None,
    })
    .map(drop)
    .map_err(|e| format!("io_uring_setup failed: {e}"))
}

/// What the filesystem under a directory accepts.
#[derive(Clone, Debug)]
pub struct StorageProbe {
    /// O_DIRECT open and an aligned direct write work.
    pub direct: Result<(), String>,
    /// A write with RWF_DSYNC through io_uring works (only meaningful with `direct`).
    pub rwf_dsync: Result<(), String>,
}

/// Probes `dir` with a scratch file that is removed afterwards.
pub fn storage(dir: &Path) -> io::Result<StorageProbe> {
    let path = dir.join(format!(".lockstep-probe-{}", std::process::id()));
    let result = probe_at(&path);
    let _ = fs::remove_file(&path);
    result
}

fn probe_at(path: &Path) -> io::Result<StorageProbe> {
    let direct = match open_rw(path, Access::Direct, true) {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            Err(format!("the filesystem refuses O_DIRECT ({e}); tmpfs does"))
        }
        Err(e) => return Err(e),
    };
    let file = match direct {
        Ok(f) => Arc::new(f),
        Err(why) => {
            return Ok(StorageProbe {
                direct: Err(why),
                rwf_dsync: Err("no O_DIRECT".into()),
            });
        }
    };
    let mut ring = match Ring::new(RingOptions {
        entries: 2,
        fixed_buffer_slots: 0,
        sqpoll_idle_ms: None,
    }) {
        Ok(r) => r,
        Err(e) => {
            let why = format!("io_uring unavailable: {e}");
            return Ok(StorageProbe {
                direct: Ok(()),
                rwf_dsync: Err(why),
            });
        }
    };
    let done = write_once(&mut ring, &file, WriteSync::Dsync)?;
    let rwf_dsync = match done.result {
        Ok(4096) => Ok(()),
        Ok(n) => Err(format!("RWF_DSYNC write wrote {n} of 4096 bytes")),
        Err(e) => Err(format!("RWF_DSYNC write through io_uring failed: {e}")),
    };
    let direct = match rwf_dsync {
        Ok(()) => Ok(()),
        // RWF_DSYNC refused: check that a plain direct write works at all.
        Err(_) => match write_once(&mut ring, &file, WriteSync::LinkedFdatasync)?.result {
            Ok(4096) => Ok(()),
            Ok(n) => Err(format!("O_DIRECT write wrote {n} of 4096 bytes")),
            Err(e) => Err(format!("O_DIRECT write failed: {e}")),
        },
    };
    Ok(StorageProbe { direct, rwf_dsync })
}

fn write_once(
    ring: &mut Ring,
    file: &Arc<std::fs::File>,
    sync: WriteSync,
) -> io::Result<Completion> {
    ring.write(file, AlignedBuf::new(4096), 0, 4096, sync, 0)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut out = Vec::new();
    // Bounded: one operation in flight, each wait returns at least one completion.
    for _ in 0..100 {
        ring.submit_and_wait(1)?;
        ring.reap(&mut out);
        if let Some(c) = out.pop() {
            return Ok(c);
        }
    }
    Err(io::Error::other("probe write never completed"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn probes_answer() {
        // Either answer is legitimate on some machine; what must hold is that a refusal
        // carries a reason and that the probe file is cleaned up.
        if let Err(why) = super::io_uring() {
            assert!(!why.is_empty());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = super::storage(dir.path()).unwrap();
        if let Err(why) = &p.direct {
            assert!(why.contains("O_DIRECT"));
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
