//! The spare segment: the next segment file is allocated, zeroed and made durable on
//! a short thread of its own, off the shard's core, while the current one fills, so a
//! rollover only renames it into place. Steady-state writes overwrite zeroed blocks
//! (measurably faster than first writes into unwritten extents). Without a thread, the
//! segment is prepared in line at the rollover.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use lockstep_sys::file::{self as sysfile, Access};
use lockstep_sys::mem::AlignedBuf;

use super::writer::{Sealed, Tail};
use crate::constants::ZERO_CHUNK_BYTES;
use crate::log::segment;
use crate::log::{Faults, Log, LogError};

pub(super) enum Spare {
    Idle,
    Preparing(JoinHandle<Result<(), LogError>>),
}

impl Log {
    pub(super) fn start_spare(&mut self) {
        if !matches!(self.spare, Spare::Idle) {
            return;
        }
        let path = self.dir.join(segment::SPARE_NAME);
        let (len, access, faults) = (
            self.opts.segment_bytes,
            self.access,
            self.opts.faults.clone(),
        );
        // A thread inherits its parent's CPU affinity: keep the preparation off the
        // shard's core, where it would delay appends.
        let parent_cores = lockstep_sys::cpu::current_thread_cores();
        let spawned = std::thread::Builder::new()
            .name("lockstep-segment-prep".into())
            .spawn(move || {
                lockstep_sys::cpu::keep_off(&parent_cores);
                prepare_segment(&path, len, access, faults.as_deref())
            });
        // If no thread can be started now, the segment is prepared in line at rollover.
        if let Ok(h) = spawned {
            self.spare = Spare::Preparing(h);
        }
    }

    /// The spare segment, prepared (waiting for its preparation, or preparing it here
    /// if none was started); returns its path.
    pub(super) fn ready_spare(&mut self) -> Result<PathBuf, LogError> {
        let spare_path = self.dir.join(segment::SPARE_NAME);
        match std::mem::replace(&mut self.spare, Spare::Idle) {
            Spare::Preparing(h) => h.join().expect("segment preparation panicked")?,
            Spare::Idle => prepare_segment(
                &spare_path,
                self.opts.segment_bytes,
                self.access,
                self.opts.faults.as_deref(),
            )?,
        }
        Ok(spare_path)
    }

    /// Installs the prepared spare as the segment starting at `first_lsn`: the new tail.
    pub(super) fn install_spare(
        &self,
        spare_path: &Path,
        first_lsn: u64,
    ) -> Result<Tail, LogError> {
        let path = self.dir.join(segment::file_name(first_lsn));
        install(spare_path, &path, &self.dir)?;
        let file = sysfile::open_rw(&path, self.access, false)
            .map_err(|e| LogError::io("open segment", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| LogError::io("stat segment", &path, e))?
            .len();
        Ok(Tail {
            first_lsn,
            path,
            file: Arc::new(file),
            len,
            index: Vec::new(),
        })
    }

    pub(super) fn roll_over(&mut self) -> Result<(), LogError> {
        assert!(self.in_flight.is_none());
        assert_eq!(self.pending.count, 0);
        let spare_path = self.ready_spare()?;
        if self
            .opts
            .faults
            .as_ref()
            .is_some_and(|f| f.take_rollover_enospc())
        {
            let _ = std::fs::remove_file(&spare_path);
            let source = io::Error::from_raw_os_error(libc::ENOSPC);
            return Err(LogError::NoSpace {
                path: self.dir.clone(),
                source,
            });
        }
        let tail = self.install_spare(&spare_path, self.next_lsn)?;
        let old = std::mem::replace(&mut self.tail, tail);
        self.sealed.insert(
            old.first_lsn,
            Sealed {
                path: old.path,
                index: Some(old.index),
            },
        );
        self.write_off = 0;
        self.start_spare();
        Ok(())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Spare::Preparing(h) = std::mem::replace(&mut self.spare, Spare::Idle) {
            let _ = h.join();
        }
    }
}

/// Creates `path` as a fully allocated, zeroed, durable file of `len` bytes.
pub(super) fn prepare_segment(
    path: &Path,
    len: u64,
    access: Access,
    faults: Option<&Faults>,
) -> Result<(), LogError> {
    let dir = path.parent().expect("segment path has a directory");
    let result = (|| -> io::Result<()> {
        if faults.is_some_and(Faults::take_prepare_enospc) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let file = sysfile::open_rw(path, access, true)?;
        file.set_len(0)?;
        sysfile::fallocate(&file, 0, len)?;
        // Writing zeros turns the allocated extents into written ones, so steady-state
        // appends overwrite in place (measurably faster than first writes into
        // unwritten extents, which also commit extent conversions to the journal).
        let zeros = AlignedBuf::new(ZERO_CHUNK_BYTES);
        let mut off = 0;
        while off < len {
            let n = (len - off).min(ZERO_CHUNK_BYTES as u64) as usize;
            file.write_all_at(&zeros[..n], off)?;
            off += n as u64;
        }
        file.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(path);
        LogError::io("prepare segment", dir, e)
    })
}

/// Renames a prepared file into place and makes the name durable.
pub(super) fn install(from: &Path, to: &Path, dir: &Path) -> Result<(), LogError> {
    std::fs::rename(from, to).map_err(|e| LogError::io("install segment", to, e))?;
    sysfile::sync_dir(dir).map_err(|e| LogError::io("sync directory", dir, e))
}
