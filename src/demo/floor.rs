//! The floor this machine sets for a strong-synchronous commit, measured in the same run
//! as the cluster: one TCP round trip on loopback and one durable 4 KiB write on the
//! filesystem that holds the logs.
//!
//! A strong commit cannot be faster than the primary's message reaching a secondary,
//! the secondary's durable write, and its ack coming back (the primary's own write runs
//! in parallel with the send). So the floor is RTT + one durable write, each measured
//! bare, with nothing of lockstep in between.
//!
//! The durable write is done as the log does it: O_DIRECT with RWF_DSYNC through
//! io_uring from a registered buffer, overwriting a pre-allocated, pre-zeroed file
//! block after block (writing into fresh space would add filesystem journal work the
//! log never pays, and flatter the log). Where the filesystem refuses O_DIRECT or
//! RWF_DSYNC, the floor falls back exactly as the log does and is labelled so.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use lockstep_sys::file::{self as sysfile, Access};
use lockstep_sys::mem::AlignedBuf;
use lockstep_sys::probe::StorageProbe;
use lockstep_sys::uring::{Ring, RingOptions, WriteSync};

use super::{Latency, Window, latency_histogram, record_latency};
use crate::constants::IO_ALIGN;

/// Bytes of one ping or pong: a small message, like an ack.
const PING_BYTES: usize = 8;

/// Bytes of one floor write: one block, what a single small record costs on disk.
pub const WRITE_BYTES: usize = IO_ALIGN;

/// Size of the pre-zeroed scratch file the floor writes round-robin.
const SCRATCH_BYTES: u64 = 8 << 20;

/// `user_data` of the floor's writes.
const TAG: u64 = 1;

#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct FloorError {
    op: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl FloorError {
    fn new(op: &'static str, path: &Path, source: io::Error) -> FloorError {
        FloorError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Round trips of a small message between two threads over a loopback TCP connection
/// with TCP_NODELAY, one at a time.
pub fn tcp_round_trip(window: Window) -> Result<Latency, FloorError> {
    let loopback = Path::new("127.0.0.1");
    let err = |op| move |e| FloorError::new(op, loopback, e);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(err("listen on"))?;
    let addr = listener.local_addr().map_err(err("listen on"))?;
    // Connected before the echo thread starts, so no failure here can leave it waiting.
    let mut sock = TcpStream::connect(addr).map_err(err("connect to"))?;
    let (mut peer, _) = listener.accept().map_err(err("accept on"))?;
    sock.set_nodelay(true).map_err(err("connect to"))?;
    peer.set_nodelay(true).map_err(err("accept on"))?;
    let echo = std::thread::Builder::new()
        .name("lockstep-demo-echo".into())
        .spawn(move || -> io::Result<()> {
            let mut buf = [0u8; PING_BYTES];
            // Ends when the other side closes the connection.
            while peer.read_exact(&mut buf).is_ok() {
                peer.write_all(&buf)?;
            }
            Ok(())
        })
        .map_err(err("start the echo thread for"))?;
    let mut hist = latency_histogram();
    let mut ping = [0u8; PING_BYTES];
    let start = Instant::now();
    let measure_from = start + window.warm_up;
    let stop = measure_from + window.measure;
    let mut n = 0u64;
    loop {
        ping.copy_from_slice(&n.to_le_bytes());
        let sent = Instant::now();
        sock.write_all(&ping).map_err(err("ping"))?;
        let mut pong = [0u8; PING_BYTES];
        sock.read_exact(&mut pong).map_err(err("pong"))?;
        let now = Instant::now();
        assert_eq!(pong, ping, "the echo returns what was sent");
        if sent >= measure_from {
            record_latency(&mut hist, now - sent);
        }
        if now >= stop && !hist.is_empty() {
            break;
        }
        n += 1;
    }
    drop(sock);
    match echo.join() {
        Ok(result) => result.map_err(err("echo on"))?,
        Err(_) => panic!("the echo thread panicked"),
    }
    Ok(Latency::of(&hist))
}

/// How the floor (and the log) write durably on a filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurableIo {
    pub access: Access,
    pub sync: WriteSync,
}

impl DurableIo {
    /// What the log chooses where `probe` was taken, and the one-line reason when that
    /// is not O_DIRECT + RWF_DSYNC.
    pub fn choose(probe: &StorageProbe) -> (DurableIo, Option<String>) {
        match (&probe.direct, &probe.rwf_dsync) {
            (Ok(()), Ok(())) => (
                DurableIo {
                    access: Access::Direct,
                    sync: WriteSync::Dsync,
                },
                None,
            ),
            (Ok(()), Err(why)) => (
                DurableIo {
                    access: Access::Direct,
                    sync: WriteSync::LinkedFdatasync,
                },
                Some(format!(
                    "RWF_DSYNC is unusable here ({why}): durable writes are followed by fdatasync"
                )),
            ),
            (Err(why), _) => (
                DurableIo {
                    access: Access::Buffered,
                    sync: WriteSync::LinkedFdatasync,
                },
                Some(format!(
                    "no O_DIRECT here ({why}): the logs and the floor use buffered writes + fdatasync"
                )),
            ),
        }
    }

    pub fn label(self) -> &'static str {
        match (self.access, self.sync) {
            (Access::Direct, WriteSync::Dsync) => "O_DIRECT + RWF_DSYNC",
            (Access::Direct, _) => "O_DIRECT + fdatasync",
            (Access::Buffered, _) => "buffered + fdatasync",
        }
    }
}

/// One durable write of [`WRITE_BYTES`] at a time into a pre-zeroed scratch file in
/// `dir`, which is removed afterwards. Each latency runs from just before the
/// submission to just after the completion is reaped.
pub fn durable_write(dir: &Path, io: DurableIo, window: Window) -> Result<Latency, FloorError> {
    let path = dir.join("floor.scratch");
    let result = write_scratch(&path, io, window);
    let removed = std::fs::remove_file(&path);
    let latency = result?;
    removed.map_err(|e| FloorError::new("remove", &path, e))?;
    Ok(latency)
}

fn write_scratch(path: &Path, io: DurableIo, window: Window) -> Result<Latency, FloorError> {
    let err = |op| move |e| FloorError::new(op, path, e);
    let file = prepare_scratch(path, io.access)?;
    let file = Arc::new(file);
    let mut ring = Ring::new(RingOptions {
        entries: 4,
        sqpoll_idle_ms: None,
        fixed_buffer_slots: 1,
    })
    .map_err(err("io_uring for"))?;
    // Non-zero contents, like records: a device may treat writes of zeros specially.
    let mut buf = AlignedBuf::new(WRITE_BYTES);
    buf.fill(0x5a);
    // Registered, like the log's batch buffers, so both use WRITE_FIXED.
    ring.register(&mut buf)
        .map_err(err("register a buffer for"))?;
    let mut buf = Some(buf);
    let mut done = Vec::with_capacity(1);
    let mut hist = latency_histogram();
    let start = Instant::now();
    let measure_from = start + window.warm_up;
    let stop = measure_from + window.measure;
    let mut offset = 0u64;
    loop {
        if offset + WRITE_BYTES as u64 > SCRATCH_BYTES {
            offset = 0;
        }
        let b = buf.take().expect("the floor buffer is not in flight");
        let submitted = Instant::now();
        ring.write(&file, b, offset, WRITE_BYTES, io.sync, TAG)
            .map_err(|e| FloorError::new("write", path, io::Error::other(e.to_string())))?;
        ring.submit_and_wait(1)
            .map_err(err("wait for a write to"))?;
        ring.reap(&mut done);
        let now = Instant::now();
        let c = done
            .pop()
            .expect("submit_and_wait(1) returned a completion");
        assert!(done.is_empty());
        assert_eq!(c.user_data, TAG);
        buf = c.buf;
        match c.result {
            Ok(n) if n == WRITE_BYTES => {}
            Ok(n) => {
                let e = io::Error::other(format!("short write: {n} of {WRITE_BYTES} bytes"));
                return Err(FloorError::new("write", path, e));
            }
            Err(e) => return Err(FloorError::new("write", path, e)),
        }
        if submitted >= measure_from {
            record_latency(&mut hist, now - submitted);
        }
        if now >= stop && !hist.is_empty() {
            break;
        }
        offset += WRITE_BYTES as u64;
    }
    Ok(Latency::of(&hist))
}

/// The scratch file as the log prepares a segment: allocated, zeroed and durable.
fn prepare_scratch(path: &Path, access: Access) -> Result<File, FloorError> {
    let err = |op| move |e| FloorError::new(op, path, e);
    let file = sysfile::open_rw(path, access, true).map_err(err("create"))?;
    file.set_len(0).map_err(err("truncate"))?;
    sysfile::fallocate(&file, 0, SCRATCH_BYTES).map_err(err("fallocate"))?;
    let zeros = AlignedBuf::new(1 << 20);
    let mut offset = 0;
    while offset < SCRATCH_BYTES {
        let n = (SCRATCH_BYTES - offset).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], offset)
            .map_err(err("zero"))?;
        offset += n as u64;
    }
    file.sync_all().map_err(err("fsync"))?;
    Ok(file)
}
