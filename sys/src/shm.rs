//! Memory shared between processes on one machine, and a doorbell to wake its reader.
//!
//! This is what the emulated verbs provider (a test double of RDMA, see
//! `lockstep::transport::rdma::emulated`) stands on: a [`SharedRegion`] is a `memfd`
//! mapped `MAP_SHARED` by the process that owns it and by every process that opens it
//! through its `/proc/<pid>/fd/<fd>` path, so a write by one is a placement into the
//! other's memory, as a one-sided RDMA WRITE is. A [`Doorbell`] is a non-blocking pipe
//! whose read end the owner polls (through its io_uring) when it has nothing to do, and
//! whose write end a peer opens by path: the emulated completion channel.
//!
//! Memory model: the other process is outside Rust's memory model, so every access to
//! the mapping is either a byte copy in or out (never a reference into it) or an atomic
//! 64-bit load or store through a pointer into the mapping. A writer that wants its bytes seen before a word (a
//! record before its trailer) copies them, then stores the word with `Release`; the
//! reader loads the word with `Acquire`, then copies the bytes. Nothing here is
//! `Sync`-shared within one process; a region belongs to one thread.
//!
//! Clean-up: dropping a region unmaps it and closes its file; the memory is freed by the
//! kernel once no process maps it. Dropping a doorbell closes its pipe ends.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A mapping of a shared memory file, owned (created here) or opened by path.
pub struct SharedRegion {
    ptr: NonNull<u8>,
    len: usize,
    file: File,
}

// SAFETY: the region owns its mapping and file like a Vec owns its buffer; it has no
// thread-bound state, so moving it to another thread is sound.
unsafe impl Send for SharedRegion {}

impl SharedRegion {
    /// Creates a zeroed region of `len` bytes (rounded up to a page) that other
    /// processes of the same user can open by [`SharedRegion::path`].
    pub fn create(name: &str, len: usize) -> io::Result<SharedRegion> {
        let cname = CString::new(name).map_err(|_| io::Error::other("NUL in region name"))?;
        // SAFETY: `cname` is a valid NUL-terminated string; the flags are plain bits.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        let len = len.max(1).next_multiple_of(page_bytes());
        file.set_len(len as u64)?;
        SharedRegion::map(file, len)
    }

    /// Opens a region another process created, by its path, expecting `len` bytes.
    pub fn open(path: &str, len: usize) -> io::Result<SharedRegion> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        let have = file.metadata()?.len();
        if have < len as u64 {
            return Err(io::Error::other(format!(
                "shared region {path} holds {have} bytes, {len} expected"
            )));
        }
        SharedRegion::map(file, len)
    }

    fn map(file: File, len: usize) -> io::Result<SharedRegion> {
        // SAFETY: a fresh shared mapping of `len` bytes of an open file; the kernel
        // picks the address, and nothing else refers to it yet.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(raw.cast::<u8>()).expect("mmap returned a null mapping");
        Ok(SharedRegion { ptr, len, file })
    }

    /// The path another process of this user opens the region by.
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: usize, len: usize) {
        assert!(offset <= self.len, "offset {offset} past the region");
        assert!(
            len <= self.len - offset,
            "{len} bytes at {offset} past the region"
        );
    }

    /// Places `bytes` into the region at `offset`, in ascending address order: every
    /// aligned 8-byte word is stored with `Release`, so a reader that loads a word with
    /// `Acquire` sees every byte placed before it (the order a record and then its
    /// trailer need). Unaligned head and tail bytes are stored one by one.
    ///
    /// # Panics
    /// If the bytes do not lie inside the region (callers check bounds first: a remote
    /// region's bounds are part of its key).
    pub fn write(&mut self, offset: usize, bytes: &[u8]) {
        self.check(offset, bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let at = offset + i;
            if at.is_multiple_of(8) && bytes.len() - i >= 8 {
                let word = u64::from_ne_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
                self.word(at).store(word, Ordering::Release);
                i += 8;
            } else {
                // SAFETY: `at` is inside the mapping (checked above), which lives as
                // long as `self`; a volatile byte store is a valid access to memory
                // another process may read meanwhile.
                unsafe { self.ptr.as_ptr().add(at).write_volatile(bytes[i]) };
                i += 1;
            }
        }
    }

    /// Copies bytes at `offset` out of the region.
    ///
    /// # Panics
    /// If the bytes do not lie inside the region.
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        self.check(offset, out.len());
        // SAFETY: inside the mapping (checked above) and not overlapping `out` (the
        // mapping is never handed out as a slice). Bytes another process is writing
        // meanwhile may be copied torn; callers check them (trailer, crc) before use.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        };
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8);
        assert!(offset.is_multiple_of(8), "unaligned word at {offset}");
        // SAFETY: the 8 bytes are inside the mapping (checked), 8-aligned (the mapping
        // is page-aligned and the offset a multiple of 8), and only ever accessed
        // atomically or by copies, never through a `&mut`.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// Loads the word at `offset` (8-aligned) with `Acquire`: bytes stored before its
    /// `Release` store are visible after it.
    pub fn load_u64(&self, offset: usize) -> u64 {
        self.word(offset).load(Ordering::Acquire)
    }

    /// Stores the word at `offset` (8-aligned) with `Release`, after every byte written
    /// before it.
    pub fn store_u64(&mut self, offset: usize, value: u64) {
        self.word(offset).store(value, Ordering::Release);
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `map` with this address and length and is
        // unmapped only here; no reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn page_bytes() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

/// The receiving side of a doorbell: a non-blocking pipe. Peers open its write end by
/// [`Doorbell::path`] and ring it with [`DoorbellSender::ring`].
pub struct Doorbell {
    read: Arc<OwnedFd>,
    write: OwnedFd,
}

impl Doorbell {
    pub fn new() -> io::Result<Doorbell> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 returns.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both descriptors are fresh and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Doorbell {
            read: Arc::new(read),
            write,
        })
    }

    /// The path a peer opens the write end by.
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.write.as_raw_fd())
    }

    /// The read end, for a readiness poll.
    pub fn fd(&self) -> &Arc<OwnedFd> {
        &self.read
    }

    /// Empties the pipe; returns whether it was rung since the last drain.
    pub fn drain(&self) -> bool {
        let mut rung = false;
        let mut buf = [0u8; 256];
        let mut file = File::from(self.read.try_clone().expect("dup of a doorbell"));
        // Bounded: a pipe holds at most 64 KiB.
        for _ in 0..512 {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => rung = true,
                Err(_) => break,
            }
        }
        rung
    }
}

/// The sending side of a peer's doorbell.
pub struct DoorbellSender {
    file: File,
}

impl DoorbellSender {
    /// Opens the doorbell at `path` (see [`Doorbell::path`]).
    pub fn open(path: &str) -> io::Result<DoorbellSender> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        Ok(DoorbellSender { file })
    }

    /// Rings: one byte into the pipe. A full pipe has been rung already and not yet
    /// drained, which is as good.
    pub fn ring(&mut self) -> io::Result<()> {
        match self.file.write(&[1]) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_opened_by_path_sees_the_owners_writes() {
        let mut owner = SharedRegion::create("lockstep-test", 8192).unwrap();
        let mut peer = SharedRegion::open(&owner.path(), 8192).unwrap();
        peer.write(100, b"placed");
        peer.store_u64(200, 7);
        assert_eq!(owner.load_u64(200), 7);
        let mut got = [0u8; 6];
        owner.read(100, &mut got);
        assert_eq!(&got, b"placed");
        owner.store_u64(0, 9);
        assert_eq!(peer.load_u64(0), 9);
    }

    #[test]
    fn a_region_shorter_than_expected_is_refused() {
        let owner = SharedRegion::create("lockstep-test", 4096).unwrap();
        assert!(SharedRegion::open(&owner.path(), 1 << 20).is_err());
    }

    #[test]
    fn a_doorbell_rung_by_path_is_seen_once() {
        let bell = Doorbell::new().unwrap();
        let mut sender = DoorbellSender::open(&bell.path()).unwrap();
        assert!(!bell.drain());
        sender.ring().unwrap();
        sender.ring().unwrap();
        assert!(bell.drain());
        assert!(!bell.drain());
    }
}
