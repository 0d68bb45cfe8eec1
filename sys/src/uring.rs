//! One io_uring instance per thread.
//!
//! Ownership rule: every operation takes the buffer and the file it uses **by value**
//! (`AlignedBuf`, `Arc<impl AsRawFd>`) and keeps them in its in-flight slot until the kernel has
//! posted the completion; [`Ring::reap`] hands them back. The caller therefore cannot free,
//! reuse or close what the kernel is still using, and building a request needs no
//! `unsafe` outside this module.
//!
//! Bounds: at most `entries` operations are in flight; a submission beyond that is
//! refused with [`SubmitError::Busy`] and the buffer is returned.
//!
//! Fault model: the kernel may fail any operation; the result is reported as an
//! `io::Error` in the [`Completion`]. A linked write + fdatasync reports the first error
//! of the pair (the fdatasync is cancelled by the kernel if the write fails).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use io_uring::{IoUring, opcode, squeue, types};

use crate::mem::AlignedBuf;

/// Ring set-up.
#[derive(Clone, Copy, Debug)]
pub struct RingOptions {
    /// Submission queue size, and the bound on operations in flight.
    pub entries: u32,
    /// Kernel submission polling with this idle time. Off by default: measured harmful on
    /// machines with few cores, where the polling thread competes with the shard threads.
    pub sqpoll_idle_ms: Option<u32>,
    /// Number of registered-buffer slots (0 disables registered buffers).
    pub fixed_buffer_slots: u16,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            entries: 256,
            sqpoll_idle_ms: None,
            fixed_buffer_slots: 64,
        }
    }
}

/// How a write is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteSync {
    /// No durability requested.
    None,
    /// `RWF_DSYNC` on the write itself: one operation, durable when it completes.
    Dsync,
    /// The write followed by a linked `fdatasync`, for files where RWF_DSYNC is not
    /// honoured (buffered fallback).
    LinkedFdatasync,
}

/// A submission that could not be queued; the buffer comes back to the caller.
#[derive(Debug)]
pub enum SubmitError {
    /// All in-flight slots are taken.
    Busy(Option<AlignedBuf>),
    /// The request is malformed (length beyond the buffer or beyond `u32`).
    Invalid(Option<AlignedBuf>, &'static str),
    /// The kernel refused to take submissions.
    Io(Option<AlignedBuf>, io::Error),
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Busy(_) => write!(f, "io_uring: all in-flight slots are taken"),
            SubmitError::Invalid(_, why) => write!(f, "io_uring: invalid request: {why}"),
            SubmitError::Io(_, e) => write!(f, "io_uring: submit failed: {e}"),
        }
    }
}

impl std::error::Error for SubmitError {}

impl SubmitError {
    /// The buffer that was passed in, if any.
    pub fn into_buf(self) -> Option<AlignedBuf> {
        match self {
            SubmitError::Busy(b) | SubmitError::Invalid(b, _) | SubmitError::Io(b, _) => b,
        }
    }
}

/// A finished operation.
#[derive(Debug)]
pub struct Completion {
    /// The caller's tag, as given at submission.
    pub user_data: u64,
    /// Bytes transferred (0 for fsync and fallocate), or the error.
    pub result: io::Result<usize>,
    /// The buffer passed in, handed back.
    pub buf: Option<AlignedBuf>,
}

struct InFlight {
    user_data: u64,
    buf: Option<AlignedBuf>,
    // Held only to keep the descriptor open until the kernel is done with it.
    _fd: Arc<dyn AsRawFd + Send + Sync>,
    parts_left: u8,
    bytes: usize,
    error: Option<io::Error>,
}

static NEXT_RING_ID: AtomicU32 = AtomicU32::new(1);

/// One io_uring instance with its in-flight table. See the module docs.
pub struct Ring {
    ring: IoUring,
    id: u32,
    slots: Vec<Option<InFlight>>,
    free: Vec<u32>,
    in_flight: usize,
    fixed_slots: u16,
    fixed_used: u16,
}

// Part tag in the low bit of the kernel-side user_data: 0 = the only or first SQE of an
// operation, 1 = the linked fdatasync.
const PART_BITS: u32 = 1;

impl Ring {
    /// Creates a ring.
    pub fn new(opts: RingOptions) -> io::Result<Ring> {
        assert!(opts.entries >= 2);
        let mut b = IoUring::builder();
        if let Some(idle) = opts.sqpoll_idle_ms {
            b.setup_sqpoll(idle);
        }
        // Twice the entries in the submission queue: a linked write + fdatasync is two SQEs.
        let ring = b.build(opts.entries * 2)?;
        if opts.fixed_buffer_slots > 0 {
            ring.submitter()
                .register_buffers_sparse(u32::from(opts.fixed_buffer_slots))?;
        }
        let n = opts.entries as usize;
        Ok(Ring {
            ring,
            id: NEXT_RING_ID.fetch_add(1, Ordering::Relaxed),
            slots: (0..n).map(|_| None).collect(),
            free: (0..n as u32).rev().collect(),
            in_flight: 0,
            fixed_slots: opts.fixed_buffer_slots,
            fixed_used: 0,
        })
    }

    /// Registers `buf` in the next free registered-buffer slot, so writes from it use
    /// `WRITE_FIXED` (no per-I/O page pinning). Returns false when all slots are used or
    /// registration is off; the buffer then still works, unregistered.
    ///
    /// A registered buffer that is dropped leaves its slot unused until the ring closes;
    /// slots are never reassigned, so a slot index always names the same live memory.
    pub fn register(&mut self, buf: &mut AlignedBuf) -> io::Result<bool> {
        if buf.is_registered() || self.fixed_used >= self.fixed_slots {
            return Ok(false);
        }
        let index = self.fixed_used;
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.capacity(),
        };
        // SAFETY: the iovec describes memory owned by `buf`. The kernel pins those pages
        // for as long as the registration lasts, so a later free of `buf` cannot make the
        // kernel touch unmapped memory; and the slot is only ever used through `buf`
        // itself (the index is stored in it together with this ring's id and slots are
        // never reassigned), so no fixed operation can reach memory `buf` no longer owns.
        unsafe {
            self.ring
                .submitter()
                .register_buffers_update(u32::from(index), &[iov], None)?;
        }
        self.fixed_used += 1;
        buf.set_fixed(self.id, index);
        Ok(true)
    }

    /// Operations submitted and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues a write of `buf[..len]` at `offset`.
    pub fn write(
        &mut self,
        file: &Arc<impl AsRawFd + Send + Sync + 'static>,
        buf: AlignedBuf,
        offset: u64,
        len: usize,
        sync: WriteSync,
        user_data: u64,
    ) -> Result<(), SubmitError> {
        let Ok(len32) = u32::try_from(len) else {
            return Err(SubmitError::Invalid(Some(buf), "length beyond u32"));
        };
        if len > buf.capacity() {
            return Err(SubmitError::Invalid(Some(buf), "length beyond buffer"));
        }
        let fd = types::Fd(file.as_raw_fd());
        let rw_flags = if sync == WriteSync::Dsync {
            libc::RWF_DSYNC
        } else {
            0
        };
        let write = match self.own_fixed_index(&buf) {
            Some(index) => opcode::WriteFixed::new(fd, buf.as_ptr(), len32, index)
                .offset(offset)
                .rw_flags(rw_flags)
                .build(),
            None => opcode::Write::new(fd, buf.as_ptr(), len32)
                .offset(offset)
                .rw_flags(rw_flags)
                .build(),
        };
        if sync == WriteSync::LinkedFdatasync {
            let fsync = opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build();
            self.push(
                write.flags(squeue::Flags::IO_LINK),
                Some(fsync),
                Some(buf),
                file,
                user_data,
            )
        } else {
            self.push(write, None, Some(buf), file, user_data)
        }
    }

    /// Queues a read into `buf[..len]` from `offset`.
    pub fn read(
        &mut self,
        file: &Arc<impl AsRawFd + Send + Sync + 'static>,
        mut buf: AlignedBuf,
        offset: u64,
        len: usize,
        user_data: u64,
    ) -> Result<(), SubmitError> {
        let Ok(len32) = u32::try_from(len) else {
            return Err(SubmitError::Invalid(Some(buf), "length beyond u32"));
        };
        if len > buf.capacity() {
            return Err(SubmitError::Invalid(Some(buf), "length beyond buffer"));
        }
        let fd = types::Fd(file.as_raw_fd());
        let sqe = match self.own_fixed_index(&buf) {
            Some(index) => opcode::ReadFixed::new(fd, buf.as_mut_ptr(), len32, index)
                .offset(offset)
                .build(),
            None => opcode::Read::new(fd, buf.as_mut_ptr(), len32)
                .offset(offset)
                .build(),
        };
        self.push(sqe, None, Some(buf), file, user_data)
    }

    /// Queues `fdatasync(file)`.
    pub fn fdatasync(
        &mut self,
        file: &Arc<impl AsRawFd + Send + Sync + 'static>,
        user_data: u64,
    ) -> Result<(), SubmitError> {
        let fd = types::Fd(file.as_raw_fd());
        let sqe = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        self.push(sqe, None, None, file, user_data)
    }

    /// Queues `fallocate(file, 0, offset, len)`.
    pub fn fallocate(
        &mut self,
        file: &Arc<impl AsRawFd + Send + Sync + 'static>,
        offset: u64,
        len: u64,
        user_data: u64,
    ) -> Result<(), SubmitError> {
        let fd = types::Fd(file.as_raw_fd());
        let sqe = opcode::Fallocate::new(fd, len).offset(offset).build();
        self.push(sqe, None, None, file, user_data)
    }

    /// Queues a one-shot readiness poll of `fd` for `events` (`libc::POLLIN`, ...); the
    /// completion's result is the ready event mask.
    pub fn poll(
        &mut self,
        fd: &Arc<impl AsRawFd + Send + Sync + 'static>,
        events: i16,
        user_data: u64,
    ) -> Result<(), SubmitError> {
        let sqe = opcode::PollAdd::new(types::Fd(fd.as_raw_fd()), events as u16 as u32).build();
        self.push(sqe, None, None, fd, user_data)
    }

    /// Hands queued submissions to the kernel and waits until at least `want`
    /// completions are ready or `timeout` passed. Returns whether the wait timed out.
    pub fn submit_and_wait_timeout(
        &mut self,
        want: usize,
        timeout: std::time::Duration,
    ) -> io::Result<bool> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match retry_eintr(|| self.ring.submitter().submit_with_args(want, &args)) {
            // The kernel reports the submitted count even when the wait timed out, so
            // the completion queue tells.
            Ok(_) => Ok(self.ring.completion().is_empty()),
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Hands queued submissions to the kernel without waiting.
    pub fn submit(&mut self) -> io::Result<usize> {
        retry_eintr(|| self.ring.submit())
    }

    /// Hands queued submissions to the kernel and waits until at least `want`
    /// completions are ready to reap.
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<usize> {
        retry_eintr(|| self.ring.submit_and_wait(want))
    }

    /// Moves every finished operation into `out`. Returns how many were added.
    pub fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        let before = out.len();
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let slot = (cqe.user_data() >> PART_BITS) as usize;
            let part = cqe.user_data() & 1;
            let op = self.slots[slot]
                .as_mut()
                .expect("completion for an empty slot");
            let res = cqe.result();
            if res < 0 {
                if op.error.is_none() {
                    op.error = Some(io::Error::from_raw_os_error(-res));
                }
            } else if part == 0 {
                op.bytes = res as usize;
            }
            op.parts_left -= 1;
            if op.parts_left == 0 {
                let op = self.slots[slot].take().expect("slot checked above");
                self.free.push(slot as u32);
                self.in_flight -= 1;
                out.push(Completion {
                    user_data: op.user_data,
                    result: op.error.map_or(Ok(op.bytes), Err),
                    buf: op.buf,
                });
            }
        }
        out.len() - before
    }

    fn own_fixed_index(&self, buf: &AlignedBuf) -> Option<u16> {
        let (ring, index) = buf.fixed()?;
        (ring == self.id).then_some(index)
    }

    fn push(
        &mut self,
        first: squeue::Entry,
        linked: Option<squeue::Entry>,
        buf: Option<AlignedBuf>,
        file: &Arc<impl AsRawFd + Send + Sync + 'static>,
        user_data: u64,
    ) -> Result<(), SubmitError> {
        let Some(slot) = self.free.pop() else {
            return Err(SubmitError::Busy(buf));
        };
        // Make room in the submission queue first; it holds twice the slot count, so after
        // one submit there is always room for an operation's (at most two) entries.
        let parts = 1 + u8::from(linked.is_some());
        let room = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if room < usize::from(parts)
            && let Err(e) = self.submit()
        {
            self.free.push(slot);
            return Err(SubmitError::Io(buf, e));
        }
        self.slots[slot as usize] = Some(InFlight {
            user_data,
            buf,
            _fd: Arc::clone(file) as Arc<dyn AsRawFd + Send + Sync>,
            parts_left: parts,
            bytes: 0,
            error: None,
        });
        self.in_flight += 1;
        let mut sq = self.ring.submission();
        for (part, sqe) in std::iter::once(first).chain(linked).enumerate() {
            let sqe = sqe.user_data((u64::from(slot) << PART_BITS) | part as u64);
            // SAFETY: every pointer in the entry (buffer, fd) refers to memory or a
            // descriptor now owned by the in-flight slot above, which keeps them alive
            // until reap() sees the completion; the space check above guarantees room.
            unsafe { sq.push(&sqe).expect("submission queue has room") };
        }
        Ok(())
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // The kernel may still be reading or writing the buffers of in-flight operations:
        // wait for them before their memory is freed. Socket polls may never complete by
        // themselves, so everything is cancelled first (writes already with the device
        // finish anyway). The wait is bounded; what is still in flight after it is
        // leaked rather than freed while the kernel may touch it.
        if self.in_flight == 0 {
            return;
        }
        let timeout = types::Timespec::new().sec(1);
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(Some(timeout), types::CancelBuilder::any());
        let mut done = Vec::new();
        for _ in 0..DROP_WAIT_TURNS {
            if self.in_flight == 0 {
                return;
            }
            if self
                .submit_and_wait_timeout(1, std::time::Duration::from_millis(10))
                .is_err()
            {
                break;
            }
            self.reap(&mut done);
            done.clear();
        }
        for op in self.slots.iter_mut().filter_map(Option::take) {
            std::mem::forget(op);
        }
    }
}

/// Turns of 10 ms a dropped ring waits for its operations to finish.
const DROP_WAIT_TURNS: u32 = 500;

fn retry_eintr(mut f: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    // Bounded: a signal storm long enough to interrupt this many times is an error.
    let mut last = None;
    for _ in 0..1000 {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => last = Some(e),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
            other => return other,
        }
    }
    Err(last.expect("loop ran"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn ring() -> Option<Ring> {
        match Ring::new(RingOptions::default()) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("skipped: io_uring unavailable: {e}");
                None
            }
        }
    }

    #[test]
    fn write_read_roundtrip_with_fixed_buffer() {
        let Some(mut r) = ring() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file =
            Arc::new(crate::file::open_rw(&path, crate::file::Access::Buffered, true).unwrap());
        let mut buf = AlignedBuf::new(4096);
        assert!(r.register(&mut buf).unwrap());
        buf[..5].copy_from_slice(b"hello");
        r.write(&file, buf, 4096, 4096, WriteSync::LinkedFdatasync, 7)
            .unwrap();
        r.submit_and_wait(1).unwrap();
        let mut out = Vec::new();
        while out.is_empty() {
            r.submit_and_wait(1).unwrap();
            r.reap(&mut out);
        }
        assert_eq!(out[0].user_data, 7);
        assert_eq!(out[0].result.as_ref().unwrap(), &4096);
        let buf = out.pop().unwrap().buf.unwrap();
        assert!(buf.is_registered());
        let mut s = Vec::new();
        std::fs::File::open(&path)
            .unwrap()
            .read_to_end(&mut s)
            .unwrap();
        assert_eq!(s.len(), 8192);
        assert_eq!(&s[4096..4101], b"hello");

        r.read(&file, buf, 4096, 4096, 9).unwrap();
        let mut out = Vec::new();
        while out.is_empty() {
            r.submit_and_wait(1).unwrap();
            r.reap(&mut out);
        }
        assert_eq!(&out[0].buf.as_ref().unwrap()[..5], b"hello");
    }

    #[test]
    fn errors_are_reported_and_slots_bounded() {
        let Some(mut r) = Ring::new(RingOptions {
            entries: 2,
            ..Default::default()
        })
        .ok() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        // A read-only descriptor: writes fail with EBADF.
        std::fs::write(dir.path().join("ro"), b"x").unwrap();
        let ro = Arc::new(std::fs::File::open(dir.path().join("ro")).unwrap());
        r.write(&ro, AlignedBuf::new(4096), 0, 4096, WriteSync::Dsync, 1)
            .unwrap();
        r.write(&ro, AlignedBuf::new(4096), 0, 4096, WriteSync::Dsync, 2)
            .unwrap();
        match r.write(&ro, AlignedBuf::new(4096), 0, 4096, WriteSync::Dsync, 3) {
            Err(SubmitError::Busy(Some(b))) => assert_eq!(b.capacity(), 4096),
            other => panic!("expected Busy, got {other:?}"),
        }
        let mut out = Vec::new();
        while out.len() < 2 {
            r.submit_and_wait(1).unwrap();
            r.reap(&mut out);
        }
        for c in &out {
            assert_eq!(
                c.result.as_ref().unwrap_err().raw_os_error(),
                Some(libc::EBADF)
            );
        }
        assert_eq!(r.in_flight(), 0);
    }
}

#[cfg(test)]
mod socket_tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[test]
    fn poll_reports_readiness_and_waits_time_out() {
        let Ok(mut r) = Ring::new(RingOptions::default()) else {
            return;
        };
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let b = Arc::new(b);
        r.poll(&b, libc::POLLIN, 5).unwrap();
        let mut out = Vec::new();
        assert!(
            r.submit_and_wait_timeout(1, Duration::from_millis(20))
                .unwrap(),
            "nothing to read yet"
        );
        assert_eq!(r.reap(&mut out), 0);
        (&a).write_all(b"x").unwrap();
        assert!(
            !r.submit_and_wait_timeout(1, Duration::from_secs(5))
                .unwrap()
        );
        r.reap(&mut out);
        assert_eq!(out[0].user_data, 5);
        assert!(*out[0].result.as_ref().unwrap() as i16 & libc::POLLIN != 0);
    }
}
