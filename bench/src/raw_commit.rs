//! A strong commit made of bare parts, on the same cores and the same disk as the
//! cluster: what lockstep would cost if it added nothing.
//!
//! The floor (`rtt + remote dsync`, see [`crate::net_floor`]) is the cost of one commit
//! on an idle machine where each node has its own disk. On one machine the three nodes
//! share the disk: the primary's write and both secondaries' writes are in the device at
//! once, and three concurrent durable writes take longer than one alone. They also share
//! the cores with the client. This series pays exactly that and nothing of lockstep:
//!
//! - the client (the calling thread) sends an `Append`-sized frame to a relay thread
//!   (the primary, on the primary's core) and waits for an `Appended`-sized reply;
//! - the relay queues its own 4 KiB O_DIRECT + RWF_DSYNC write through io_uring,
//!   submits it, sends a `Replicate`-sized frame to each responder (the secondaries, on
//!   the secondaries' core), reads their `Ack`-sized replies, waits for its own write
//!   and replies: the local write runs in parallel with the remote ones, as in
//!   lockstep;
//! - each responder makes the same durable write before it answers (see
//!   [`crate::net_floor`]).
//!
//! Every thread blocks in the kernel while it waits, as the shards and the client do.
//! Each writer overwrites its own pre-zeroed scratch file.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Instant;

use hdrhistogram::Histogram;
use lockstep_sys::uring::{Ring, RingOptions};

use crate::Error;
use crate::floor::{Floor, FloorIo};
use crate::net_floor::{self, DSYNC_WRITE_BYTES, FarSide, FrameSizes, OP_DSYNC};
use crate::stats::{self, Sample, Window};

/// Where the parts run and write.
pub struct Sides {
    pub primary_core: Option<usize>,
    pub secondary_core: Option<usize>,
    /// Scratch files: the primary's first, then one per secondary.
    pub scratch: Vec<PathBuf>,
    pub scratch_bytes: u64,
    pub io: FloorIo,
    pub ring: RingOptions,
}

/// The client's end of the raw commit.
pub struct RawCommit {
    sock: TcpStream,
    threads: Vec<JoinHandle<Result<(), String>>>,
    sizes: FrameSizes,
    request: Vec<u8>,
    reply: Vec<u8>,
    hist: Histogram<u64>,
}

impl RawCommit {
    /// Starts the responders and the relay and connects to the relay.
    pub fn start(sides: Sides, sizes: FrameSizes) -> Result<RawCommit, Error> {
        assert!(
            sides.scratch.len() >= 2,
            "a primary and at least one secondary"
        );
        let mut threads = Vec::new();
        let mut members = Vec::new();
        for path in &sides.scratch[1..] {
            let (sock, t) = net_floor::connect_responder(FarSide {
                core: sides.secondary_core,
                scratch: path.clone(),
                scratch_bytes: sides.scratch_bytes,
                io: sides.io,
                ring: sides.ring,
            })?;
            members.push(sock);
            threads.push(t);
        }
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("raw commit: bind loopback: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("raw commit: listener address: {e}"))?;
        let relay = Relay {
            core: sides.primary_core,
            scratch: sides.scratch[0].clone(),
            scratch_bytes: sides.scratch_bytes,
            io: sides.io,
            ring: sides.ring,
            sizes,
        };
        threads.push(
            std::thread::Builder::new()
                .name("bench-raw-primary".into())
                .spawn(move || relay.run(listener, members))
                .map_err(|e| format!("raw commit: start the relay: {e}"))?,
        );
        let sock =
            TcpStream::connect(addr).map_err(|e| format!("raw commit: connect to the relay: {e}"));
        let mut raw = RawCommit {
            sock: match sock {
                Ok(s) => s,
                Err(e) => {
                    let why = join_all(&mut threads).err().unwrap_or_default();
                    return Err(format!("{e} {why}").into());
                }
            },
            threads,
            sizes,
            request: vec![0x5a; sizes.append],
            reply: vec![0; sizes.appended],
            hist: stats::latency_histogram(),
        };
        raw.sock
            .set_nodelay(true)
            .map_err(|e| format!("raw commit: TCP_NODELAY: {e}"))?;
        // The first commit waits until every scratch file is ready.
        raw.commit().map_err(|e| raw.explain(e))?;
        Ok(raw)
    }

    /// Commits one at a time for `window`.
    pub fn run(&mut self, window: Window) -> Result<Sample, Error> {
        self.hist.reset();
        let mut m = stats::Measure::start(window);
        while !m.done(self.hist.len()) {
            let started = Instant::now();
            self.commit().map_err(|e| self.explain(e))?;
            let now = Instant::now();
            if m.completed(now) {
                stats::record(&mut self.hist, now - started);
            }
        }
        Ok(Sample::new(&self.hist, self.hist.len(), m.elapsed()))
    }

    fn commit(&mut self) -> std::io::Result<()> {
        (&self.sock).write_all(&self.request)?;
        (&self.sock).read_exact(&mut self.reply[..self.sizes.appended])
    }

    fn explain(&mut self, e: std::io::Error) -> Error {
        let _ = self.sock.shutdown(Shutdown::Both);
        let why = join_all(&mut self.threads).err().unwrap_or_default();
        format!("raw commit: {e} {why}").into()
    }

    /// Closes the connection; every part removes its scratch file and ends.
    pub fn finish(mut self) -> Result<(), Error> {
        let _ = self.sock.shutdown(Shutdown::Both);
        join_all(&mut self.threads).map_err(|e| format!("raw commit: {e}").into())
    }
}

/// Joins every thread; the first failure, if any.
fn join_all(threads: &mut Vec<JoinHandle<Result<(), String>>>) -> Result<(), String> {
    let mut first = Ok(());
    for t in threads.drain(..).rev() {
        let r = t.join().unwrap_or_else(|_| Err("a thread panicked".into()));
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// The primary's part.
struct Relay {
    core: Option<usize>,
    scratch: PathBuf,
    scratch_bytes: u64,
    io: FloorIo,
    ring: RingOptions,
    sizes: FrameSizes,
}

impl Relay {
    fn run(self, listener: TcpListener, members: Vec<TcpStream>) -> Result<(), String> {
        if let Some(core) = self.core {
            lockstep_sys::cpu::pin_current_thread(core).map_err(|e| e.to_string())?;
        }
        let mut ring = Ring::new(self.ring).map_err(|e| format!("io_uring: {e}"))?;
        let mut floor = Floor::create(&self.scratch, self.scratch_bytes, self.io, &mut ring)
            .map_err(|e| e.to_string())?;
        let (client, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        drop(listener);
        client
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let result = self.serve(&client, &members, &mut floor, &mut ring);
        // Closing the members' connections ends the responders.
        for m in &members {
            let _ = m.shutdown(Shutdown::Both);
        }
        let removed = floor.remove().map_err(|e| e.to_string());
        result.and(removed)
    }

    fn serve(
        &self,
        mut client: &TcpStream,
        members: &[TcpStream],
        floor: &mut Floor,
        ring: &mut Ring,
    ) -> Result<(), String> {
        let s = self.sizes;
        let mut request = vec![0u8; s.append];
        let mut replicate = vec![0x5a; s.replicate];
        net_floor::encode_request(&mut replicate, OP_DSYNC, s.ack);
        let mut ack = vec![0u8; s.ack];
        let reply = vec![0u8; s.appended];
        loop {
            match client.read_exact(&mut request) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(format!("read a request: {e}")),
            }
            // The local write leaves first, then the sends: both in flight together.
            floor
                .start_write(ring, DSYNC_WRITE_BYTES)
                .map_err(|e| e.to_string())?;
            ring.submit().map_err(|e| format!("io_uring submit: {e}"))?;
            for mut m in members {
                m.write_all(&replicate)
                    .map_err(|e| format!("send to a responder: {e}"))?;
            }
            for mut m in members {
                m.read_exact(&mut ack)
                    .map_err(|e| format!("read an ack: {e}"))?;
            }
            floor
                .finish_write(ring, DSYNC_WRITE_BYTES)
                .map_err(|e| e.to_string())?;
            client
                .write_all(&reply)
                .map_err(|e| format!("reply: {e}"))?;
        }
    }
}
