//! The floor of a replicated commit: a loopback round trip, and a round trip whose far
//! side makes one durable write before it answers.
//!
//! A strong commit cannot cost less than this: the client's request reaches the primary
//! and the reply comes back (one round trip, `rtt`), and in between the records reach a
//! secondary, which writes them durably and acks (one round trip with a durable write
//! inside, `remote dsync`); the primary's own write runs in parallel with the second and
//! hides behind it. So the floor of one commit is `rtt + remote dsync`, both measured
//! here one after the other in the same round as the series they are compared with.
//!
//! Both round trips run between the calling thread and one far-side thread over one TCP
//! connection on loopback (TCP_NODELAY, blocking sockets, so each side sleeps in the
//! kernel while it waits, as the shards and the client do). The frames have the sizes
//! of the real ones: an `Append` of one record out and an `Appended` back for `rtt`, a
//! `Replicate` of one record out and an `Ack` back for `remote dsync`. The far side's
//! durable write is the log floor's (see [`crate::floor`]): 4 KiB, O_DIRECT + RWF_DSYNC
//! through io_uring, into a pre-zeroed file on the benchmark's filesystem. It reports
//! how long the write took in its reply, which gives `dsync` without a third series.
//!
//! Framing between the two ends (not the lockstep wire format, which the frames only
//! mimic in size): a request is `op u8, 3 zero bytes, request_bytes u32 LE, reply_bytes
//! u32 LE, 4 zero bytes`, padded to `request_bytes`; a reply is `write_ns u64 LE`
//! padded to `reply_bytes`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lockstep::wire::{Message, Payloads, RecordRef, Records, RequestId};
use lockstep_sys::uring::{Ring, RingOptions};

use crate::Error;
use crate::floor::{Floor, FloorIo};
use crate::stats::{self, Sample, Window};

/// Size of the far side's durable write: one log block, what a one-record batch costs.
pub const DSYNC_WRITE_BYTES: usize = 4096;

const HEADER_BYTES: usize = 16;
const REPLY_HEADER_BYTES: usize = 8;
/// Request: answer at once.
pub const OP_ECHO: u8 = 0;
/// Request: make one durable write, then answer.
pub const OP_DSYNC: u8 = 1;

/// Frame sizes of the two round trips, in bytes.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct FrameSizes {
    pub append: usize,
    pub appended: usize,
    pub replicate: usize,
    pub ack: usize,
}

impl FrameSizes {
    /// The sizes lockstep's wire format gives these messages for one record of
    /// `payload_bytes`.
    pub fn for_payload(payload_bytes: usize) -> FrameSizes {
        let payload = vec![0u8; payload_bytes];
        let len = |m: &Message<'_>| {
            let mut out = Vec::new();
            m.encode_into(RequestId(u64::MAX >> 1), &mut out)
                .expect("a one-record frame encodes");
            out.len()
        };
        // Large LSNs, so that any variable-length field is at its longest.
        let lsn = u64::MAX >> 8;
        let payloads = [payload.as_slice()];
        let records = [RecordRef {
            lsn,
            epoch: 1,
            payload: &payload,
        }];
        FrameSizes {
            append: len(&Message::Append {
                mode: None,
                timeout_ms: 5000,
                payloads: Payloads::new(&payloads),
            }),
            appended: len(&Message::Appended {
                first_lsn: lsn,
                count: 1,
            }),
            replicate: len(&Message::Replicate {
                epoch: 1,
                prev_lsn: lsn - 1,
                prev_epoch: 1,
                commit_lsn: lsn - 1,
                records: Records::new(&records),
            }),
            ack: len(&Message::Ack {
                epoch: 1,
                received_lsn: lsn,
                durable_lsn: lsn,
            }),
        }
    }
}

/// The remote-dsync series of one round: the round trips and the far side's writes.
#[derive(Clone, Copy, Debug)]
pub struct RemoteDsync {
    pub round_trip: Sample,
    pub write: Sample,
}

/// The near end of the floor connection; the far end runs in its own thread.
pub struct NetFloor {
    sock: TcpStream,
    far: Option<JoinHandle<Result<(), String>>>,
    sizes: FrameSizes,
    request: Vec<u8>,
    reply: Vec<u8>,
    trips: Histogram<u64>,
    writes: Histogram<u64>,
}

/// Where and how the far side writes.
pub struct FarSide {
    pub core: Option<usize>,
    pub scratch: PathBuf,
    pub scratch_bytes: u64,
    pub io: FloorIo,
    pub ring: RingOptions,
}

impl NetFloor {
    /// Starts the far side (pinned to `far.core` if given) and connects to it.
    pub fn start(far: FarSide, sizes: FrameSizes) -> Result<NetFloor, Error> {
        assert!(sizes.append >= HEADER_BYTES && sizes.replicate >= HEADER_BYTES);
        assert!(sizes.appended >= REPLY_HEADER_BYTES && sizes.ack >= REPLY_HEADER_BYTES);
        let (sock, thread) = connect_responder(far)?;
        let mut floor = NetFloor {
            sock,
            far: Some(thread),
            sizes,
            request: vec![0u8; sizes.append.max(sizes.replicate)],
            reply: vec![0u8; sizes.appended.max(sizes.ack)],
            trips: stats::latency_histogram(),
            writes: stats::latency_histogram(),
        };
        // The first round trip waits until the far side's file is ready.
        floor.trip(OP_ECHO).map_err(|e| floor.explain(e))?;
        Ok(floor)
    }

    /// Round trips of an `Append`-sized frame and an `Appended`-sized reply.
    pub fn rtt(&mut self, window: Window) -> Result<Sample, Error> {
        self.series(OP_ECHO, window).map(|r| r.round_trip)
    }

    /// Round trips of a `Replicate`-sized frame and an `Ack`-sized reply, the far side
    /// writing 4 KiB durably in between.
    pub fn remote_dsync(&mut self, window: Window) -> Result<RemoteDsync, Error> {
        self.series(OP_DSYNC, window)
    }

    fn series(&mut self, op: u8, window: Window) -> Result<RemoteDsync, Error> {
        self.trips.reset();
        self.writes.reset();
        let mut m = stats::Measure::start(window);
        while !m.done(self.trips.len()) {
            let started = Instant::now();
            let write = self.trip(op).map_err(|e| self.explain(e))?;
            let now = Instant::now();
            if m.completed(now) {
                stats::record(&mut self.trips, now - started);
                stats::record(&mut self.writes, write);
            }
        }
        let elapsed = m.elapsed();
        let n = self.trips.len();
        let write = if op == OP_DSYNC {
            Sample::new(&self.writes, n, elapsed)
        } else {
            Sample::new(&self.trips, n, elapsed)
        };
        Ok(RemoteDsync {
            round_trip: Sample::new(&self.trips, n, elapsed),
            write,
        })
    }

    /// One round trip; returns the far side's write time.
    fn trip(&mut self, op: u8) -> std::io::Result<Duration> {
        let (req, rep) = match op {
            OP_ECHO => (self.sizes.append, self.sizes.appended),
            _ => (self.sizes.replicate, self.sizes.ack),
        };
        let r = &mut self.request[..req];
        encode_request(r, op, rep);
        (&self.sock).write_all(r)?;
        (&self.sock).read_exact(&mut self.reply[..rep])?;
        let ns = u64::from_le_bytes(self.reply[..8].try_into().expect("8 bytes"));
        Ok(Duration::from_nanos(ns))
    }

    /// A failed round trip, with the far side's reason when it stopped.
    fn explain(&mut self, e: std::io::Error) -> Error {
        let _ = self.sock.shutdown(Shutdown::Both);
        let far = match self.far.take().map(JoinHandle::join) {
            Some(Ok(Err(why))) => format!(" (the far side: {why})"),
            Some(Err(_)) => " (the far side panicked)".into(),
            _ => String::new(),
        };
        format!("floor round trip: {e}{far}").into()
    }

    /// Closes the connection; the far side removes its scratch file and ends.
    pub fn finish(mut self) -> Result<(), Error> {
        let _ = self.sock.shutdown(Shutdown::Both);
        match self.far.take().map(JoinHandle::join) {
            Some(Ok(Err(why))) => Err(format!("floor far side: {why}").into()),
            Some(Err(_)) => Err("floor far side panicked".into()),
            _ => Ok(()),
        }
    }
}

/// Starts a responder (pinned to `far.core` if given) and connects to it.
pub fn connect_responder(
    far: FarSide,
) -> Result<(TcpStream, JoinHandle<Result<(), String>>), Error> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("floor: bind loopback: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("floor: listener address: {e}"))?;
    // The responder prepares its scratch file before it accepts; a failure there ends
    // the connection, and the first round trip reports the responder's reason.
    let thread = std::thread::Builder::new()
        .name("bench-floor-far".into())
        .spawn(move || responder(listener, far))
        .map_err(|e| format!("floor: start a responder: {e}"))?;
    let sock = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            let why = thread.join().map_or_else(
                |_| "it panicked".to_string(),
                |r| r.err().unwrap_or_default(),
            );
            return Err(format!("floor: connect to a responder: {e} {why}").into());
        }
    };
    sock.set_nodelay(true)
        .map_err(|e| format!("floor: TCP_NODELAY: {e}"))?;
    Ok((sock, thread))
}

/// Writes the request header into the first bytes of `request` (whose length is the
/// request's size): `op`, and the size of the reply wanted.
pub fn encode_request(request: &mut [u8], op: u8, reply_bytes: usize) {
    assert!(request.len() >= HEADER_BYTES);
    request[..HEADER_BYTES].fill(0);
    request[0] = op;
    let len = request.len() as u32;
    request[4..8].copy_from_slice(&len.to_le_bytes());
    request[8..12].copy_from_slice(&(reply_bytes as u32).to_le_bytes());
}

/// A responder: accepts one connection, answers until it closes, removes its file.
fn responder(listener: TcpListener, far: FarSide) -> Result<(), String> {
    if let Some(core) = far.core {
        lockstep_sys::cpu::pin_current_thread(core).map_err(|e| e.to_string())?;
    }
    let mut ring = Ring::new(far.ring).map_err(|e| format!("io_uring: {e}"))?;
    let mut floor = Floor::create(&far.scratch, far.scratch_bytes, far.io, &mut ring)
        .map_err(|e| e.to_string())?;
    let (mut sock, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    drop(listener);
    sock.set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let result = answer(&mut sock, &mut floor, &mut ring);
    let removed = floor.remove().map_err(|e| e.to_string());
    result.and(removed)
}

fn answer(sock: &mut TcpStream, floor: &mut Floor, ring: &mut Ring) -> Result<(), String> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match sock.read_exact(&mut buf[..HEADER_BYTES]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        }
        let field =
            |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        let (op, req, rep) = (buf[0], field(4), field(8));
        if !(HEADER_BYTES..=buf.len()).contains(&req)
            || !(REPLY_HEADER_BYTES..=buf.len()).contains(&rep)
        {
            return Err(format!("bad request: {req} bytes, reply {rep} bytes"));
        }
        sock.read_exact(&mut buf[HEADER_BYTES..req])
            .map_err(|e| format!("read: {e}"))?;
        let write_ns = if op == OP_DSYNC {
            let (started, done) = floor
                .write_once(ring, DSYNC_WRITE_BYTES)
                .map_err(|e| e.to_string())?;
            u64::try_from((done - started).as_nanos()).unwrap_or(u64::MAX)
        } else {
            0
        };
        buf[..8].copy_from_slice(&write_ns.to_le_bytes());
        buf[8..rep].fill(0);
        sock.write_all(&buf[..rep])
            .map_err(|e| format!("write: {e}"))?;
    }
}

/// The path of scratch file `name` in `dir`.
pub fn scratch_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("floor-{name}.scratch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_grow_with_the_payload() {
        let a = FrameSizes::for_payload(0);
        let b = FrameSizes::for_payload(256);
        assert_eq!(b.append - a.append, 256);
        assert_eq!(b.replicate - a.replicate, 256);
        assert_eq!(a.ack, b.ack);
        assert!(a.appended >= 24 && a.ack >= 24, "{a:?}");
    }
}
