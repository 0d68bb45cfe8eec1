//! The raw floor: one durable write at a time through io_uring, with nothing of lockstep
//! in between.
//!
//! This is the best a log can do for a single writer on this device: a record is
//! acknowledged only after a durable write, and no write can be faster than a bare one of
//! the same size. The scratch file is prepared exactly as the log prepares a segment
//! (fallocate, zeros written, fsync) and the writes overwrite it round-robin, block after
//! block, as the log's appends overwrite a pre-zeroed segment. Without that, the floor
//! would pay for unwritten-extent conversions in the filesystem journal that the log
//! never pays, and the comparison would flatter the log.
//!
//! The I/O mode follows what the filesystem accepts, as the log's does: O_DIRECT with
//! RWF_DSYNC where possible, otherwise a write with a linked fdatasync (labelled so).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use lockstep::constants::IO_ALIGN;
use lockstep_sys::file::{self as sysfile, Access};
use lockstep_sys::mem::AlignedBuf;
use lockstep_sys::probe::StorageProbe;
use lockstep_sys::uring::{Completion, Ring, WriteSync};

use crate::Error;
use crate::stats::{self, Sample, Window};

/// `user_data` of the floor's writes.
const TAG: u64 = 2;

/// Largest floor write.
pub const WRITE_BYTES_MAX: usize = 2 * IO_ALIGN;

/// Chunk used when zeroing the scratch file.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// How the floor writes durably.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloorIo {
    pub access: Access,
    pub sync: WriteSync,
}

impl FloorIo {
    /// The mode the log would choose under the probed directory, and the one-line reason
    /// when it is not O_DIRECT + RWF_DSYNC.
    pub fn choose(probe: &StorageProbe) -> (FloorIo, Option<String>) {
        match (&probe.direct, &probe.rwf_dsync) {
            (Ok(()), Ok(())) => (
                FloorIo {
                    access: Access::Direct,
                    sync: WriteSync::Dsync,
                },
                None,
            ),
            (Ok(()), Err(why)) => (
                FloorIo {
                    access: Access::Direct,
                    sync: WriteSync::LinkedFdatasync,
                },
                Some(format!(
                    "RWF_DSYNC unusable ({why}): floor uses write + fdatasync"
                )),
            ),
            (Err(why), _) => (
                FloorIo {
                    access: Access::Buffered,
                    sync: WriteSync::LinkedFdatasync,
                },
                Some(format!(
                    "no O_DIRECT here ({why}): floor and log use buffered writes + fdatasync"
                )),
            ),
        }
    }

    pub fn label(&self) -> &'static str {
        match (self.access, self.sync) {
            (Access::Direct, WriteSync::Dsync) => "O_DIRECT + RWF_DSYNC",
            (Access::Direct, _) => "O_DIRECT + fdatasync",
            (Access::Buffered, _) => "buffered + fdatasync",
        }
    }
}

/// A pre-zeroed scratch file and the state of the round-robin writes into it.
pub struct Floor {
    path: PathBuf,
    file: Arc<File>,
    file_bytes: u64,
    io: FloorIo,
    buf: Option<AlignedBuf>,
    next_offset: u64,
    hist: Histogram<u64>,
    done: Vec<Completion>,
}

impl Floor {
    /// Creates the scratch file at `path`: `file_bytes` allocated, zeroed and durable.
    pub fn create(
        path: &Path,
        file_bytes: u64,
        io: FloorIo,
        ring: &mut Ring,
    ) -> Result<Floor, Error> {
        assert!(file_bytes >= WRITE_BYTES_MAX as u64);
        assert!(file_bytes.is_multiple_of(IO_ALIGN as u64));
        let ctx = |op: &str, e: std::io::Error| format!("{op} {}: {e}", path.display());
        let file = sysfile::open_rw(path, io.access, true).map_err(|e| ctx("create", e))?;
        file.set_len(0).map_err(|e| ctx("truncate", e))?;
        sysfile::fallocate(&file, 0, file_bytes).map_err(|e| ctx("fallocate", e))?;
        let zeros = AlignedBuf::new(ZERO_CHUNK_BYTES);
        let mut off = 0;
        while off < file_bytes {
            let n = (file_bytes - off).min(ZERO_CHUNK_BYTES as u64) as usize;
            file.write_all_at(&zeros[..n], off)
                .map_err(|e| ctx("zero", e))?;
            off += n as u64;
        }
        file.sync_all().map_err(|e| ctx("fsync", e))?;
        // Non-zero contents, like records: a device may treat writes of zeros specially.
        let mut buf = AlignedBuf::new(WRITE_BYTES_MAX);
        buf.fill(0x5a);
        // Registered like the log's batch buffers, so both use WRITE_FIXED.
        ring.register(&mut buf)
            .map_err(|e| ctx("register buffer for", e))?;
        Ok(Floor {
            path: path.to_path_buf(),
            file: Arc::new(file),
            file_bytes,
            io,
            buf: Some(buf),
            next_offset: 0,
            hist: stats::latency_histogram(),
            done: Vec::with_capacity(1),
        })
    }

    pub fn io(&self) -> FloorIo {
        self.io
    }

    /// Writes `write_bytes` at a time, one write in flight, for `window`. Each latency
    /// runs from just before the submission to just after the completion is reaped.
    pub fn run(
        &mut self,
        ring: &mut Ring,
        write_bytes: usize,
        window: Window,
    ) -> Result<Sample, Error> {
        self.hist.reset();
        let mut m = stats::Measure::start(window);
        while !m.done(self.hist.len()) {
            let (started, now) = self.write_once(ring, write_bytes)?;
            if m.completed(now) {
                stats::record(&mut self.hist, now - started);
            }
        }
        Ok(Sample::new(&self.hist, self.hist.len(), m.elapsed()))
    }

    /// One durable write of `write_bytes` at the next offset, waited for. Returns the
    /// instants just before the submission and just after the completion was reaped.
    pub fn write_once(
        &mut self,
        ring: &mut Ring,
        write_bytes: usize,
    ) -> Result<(Instant, Instant), Error> {
        let started = self.start_write(ring, write_bytes)?;
        ring.submit_and_wait(1)
            .map_err(|e| format!("io_uring wait for {}: {e}", self.path.display()))?;
        let done = self.finish_write(ring, write_bytes)?;
        Ok((started, done))
    }

    /// Queues one durable write of `write_bytes` at the next offset; the caller submits
    /// it (`ring.submit*`) and then calls [`Floor::finish_write`]. Returns the instant
    /// just before it was queued.
    pub fn start_write(&mut self, ring: &mut Ring, write_bytes: usize) -> Result<Instant, Error> {
        assert!(write_bytes > 0);
        assert!(write_bytes <= WRITE_BYTES_MAX);
        assert!(write_bytes.is_multiple_of(IO_ALIGN));
        assert_eq!(ring.in_flight(), 0);
        if self.next_offset + write_bytes as u64 > self.file_bytes {
            self.next_offset = 0;
        }
        let buf = self.buf.take().expect("the floor buffer is not in flight");
        let started = Instant::now();
        ring.write(
            &self.file,
            buf,
            self.next_offset,
            write_bytes,
            self.io.sync,
            TAG,
        )
        .map_err(|e| format!("floor write to {}: {e}", self.path.display()))?;
        Ok(started)
    }

    /// Waits for the write [`Floor::start_write`] queued and checks it. Returns the
    /// instant just after its completion was reaped.
    pub fn finish_write(&mut self, ring: &mut Ring, write_bytes: usize) -> Result<Instant, Error> {
        while ring.reap(&mut self.done) == 0 {
            ring.submit_and_wait(1)
                .map_err(|e| format!("io_uring wait for {}: {e}", self.path.display()))?;
        }
        let now = Instant::now();
        let c = self.done.pop().expect("a completion was reaped");
        assert!(self.done.is_empty());
        assert_eq!(c.user_data, TAG);
        self.buf = c.buf;
        match c.result {
            Ok(n) if n == write_bytes => {}
            Ok(n) => {
                return Err(format!("short floor write: {n} of {write_bytes} bytes").into());
            }
            Err(e) => return Err(format!("floor write to {}: {e}", self.path.display()).into()),
        }
        self.next_offset += write_bytes as u64;
        Ok(now)
    }

    /// Removes the scratch file.
    pub fn remove(self) -> Result<(), Error> {
        let path = self.path.clone();
        drop(self);
        std::fs::remove_file(&path).map_err(|e| format!("remove {}: {e}", path.display()).into())
    }
}
