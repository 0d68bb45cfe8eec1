//! One proxied connection: a reader and a writer thread per direction, with a bounded
//! queue of held chunks between them.
//!
//! The reader stamps each chunk with its arrival time and a random jitter share and
//! queues it; the writer releases the head of the queue once the current faults of its
//! direction allow (not blackholed, delay and jitter elapsed). Judging held chunks by
//! the faults at release time, not at arrival, is what makes `heal` and `pass` act on
//! bytes already held.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{CHUNK_BYTES, Direction, HELD_BYTES_MAX, Shared, WAIT_MAX_MS, lock};

/// Bytes read from one side, waiting to be written to the other.
struct Chunk {
    arrived: Instant,
    /// This chunk's share, in [0, 1), of the direction's jitter.
    jitter_share: f64,
    bytes: Vec<u8>,
    /// The sender closed its side after these bytes.
    eof: bool,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    held_bytes: usize,
}

#[derive(Default)]
struct State {
    /// Set once, when the connection is cut or both directions ended; every thread of
    /// the connection then stops.
    closed: bool,
    queues: [Queue; 2],
    /// Directions whose end-of-stream was delivered.
    ended: usize,
}

pub(super) struct Conn {
    client: TcpStream,
    server: TcpStream,
    state: Mutex<State>,
    changed: Condvar,
    closed: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Conn {
    pub(super) fn new(client: TcpStream, server: TcpStream) -> io::Result<Conn> {
        // Replication frames are small and latency-bound; the proxy must not add
        // Nagle delays that the real link would not have.
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        Ok(Conn {
            client,
            server,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            closed: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        })
    }

    /// Starts the four threads of the connection.
    pub(super) fn spawn(conn: &Arc<Conn>, shared: &Arc<Shared>) -> io::Result<()> {
        for direction in Direction::BOTH {
            let (from, to) = match direction {
                Direction::Forward => (&conn.client, &conn.server),
                Direction::Backward => (&conn.server, &conn.client),
            };
            let (from, to) = (from.try_clone()?, to.try_clone()?);
            let port = conn.client.peer_addr().map_or(0, |a| a.port());
            let tag = match direction {
                Direction::Forward => "fwd",
                Direction::Backward => "back",
            };
            let (c, s) = (Arc::clone(conn), Arc::clone(shared));
            let reader = thread::Builder::new()
                .name(format!("proxy-{port}-{tag}-read"))
                .spawn(move || c.read_loop(&s, direction, from))?;
            lock(&conn.threads).push(reader);
            let (c, s) = (Arc::clone(conn), Arc::clone(shared));
            let writer = thread::Builder::new()
                .name(format!("proxy-{port}-{tag}-write"))
                .spawn(move || c.write_loop(&s, direction, to))?;
            lock(&conn.threads).push(writer);
        }
        Ok(())
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Whether every thread of the connection has ended.
    pub(super) fn is_finished(&self) -> bool {
        self.is_closed() && lock(&self.threads).iter().all(|t| t.is_finished())
    }

    pub(super) fn held_bytes(&self) -> u64 {
        let state = lock(&self.state);
        state.queues.iter().map(|q| q.held_bytes as u64).sum()
    }

    /// Wakes the writers so that they judge held chunks by new faults. Taking the lock
    /// first means a writer is either before its check (and sees the new faults) or
    /// already waiting (and gets the notification).
    pub(super) fn wake(&self) {
        drop(lock(&self.state));
        self.changed.notify_all();
    }

    /// Closes the connection: held bytes are discarded and both sockets shut down,
    /// which ends every blocked read and write of its threads. `cut` counts it as cut
    /// by a fault. Returns whether this call closed it.
    pub(super) fn close(&self, shared: &Shared, cut: bool) -> bool {
        {
            let mut state = lock(&self.state);
            if state.closed {
                return false;
            }
            state.closed = true;
            state.queues = Default::default();
        }
        // Counted before the shutdown, so that a peer that sees the close also sees the
        // count.
        if cut {
            let cuts = &shared.counters.connections_cut;
            cuts.fetch_add(1, Ordering::Relaxed);
        }
        self.closed.store(true, Ordering::SeqCst);
        self.changed.notify_all();
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
        true
    }

    /// Waits for every thread of the connection; call after `close`.
    pub(super) fn join(&self) {
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            let _ = thread.join();
        }
    }

    fn read_loop(&self, shared: &Shared, direction: Direction, mut from: TcpStream) {
        let i = direction.index();
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let room = {
                // Back-pressure: at the bound, stop reading so that the sender's socket
                // buffer fills and its writes block. Only this thread adds to the
                // queue, so the room found here is still there after the read.
                let mut state = lock(&self.state);
                while !state.closed && state.queues[i].held_bytes >= HELD_BYTES_MAX {
                    state = self.wait(state, Duration::from_millis(WAIT_MAX_MS));
                }
                if state.closed {
                    return;
                }
                HELD_BYTES_MAX - state.queues[i].held_bytes
            };
            let n = match from.read(&mut buf[..room.min(CHUNK_BYTES)]) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    // The sender reset its side; pass that on by closing both.
                    self.close(shared, false);
                    return;
                }
            };
            let faults = shared.faults().direction(direction);
            if n > 0
                && faults.drop_probability > 0.0
                && shared.random_unit() < faults.drop_probability
            {
                self.close(shared, true);
                return;
            }
            let chunk = Chunk {
                arrived: Instant::now(),
                jitter_share: shared.random_unit(),
                bytes: buf[..n].to_vec(),
                eof: n == 0,
            };
            let mut state = lock(&self.state);
            if state.closed {
                return;
            }
            state.queues[i].held_bytes += n;
            state.queues[i].chunks.push_back(chunk);
            drop(state);
            self.changed.notify_all();
            if n == 0 {
                return;
            }
        }
    }

    fn write_loop(&self, shared: &Shared, direction: Direction, mut to: TcpStream) {
        let i = direction.index();
        loop {
            let Some(chunk) = self.next_due(shared, direction) else {
                return;
            };
            if chunk.eof {
                // Pass the sender's close on as a half-close: the other direction may
                // still carry bytes (a reply after the request ended).
                let _ = to.shutdown(Shutdown::Write);
                let mut state = lock(&self.state);
                state.ended += 1;
                let both_ended = state.ended == 2;
                drop(state);
                if both_ended {
                    self.close(shared, false);
                }
                return;
            }
            // Counted before the write, so that a receiver that has the bytes also sees
            // them counted.
            let n = chunk.bytes.len() as u64;
            shared.counters.bytes[i].fetch_add(n, Ordering::Relaxed);
            if to.write_all(&chunk.bytes).is_err() {
                self.close(shared, false);
                return;
            }
        }
    }

    /// Waits until the head chunk of `direction` may be released and takes it; `None`
    /// once the connection is closed.
    fn next_due(&self, shared: &Shared, direction: Direction) -> Option<Chunk> {
        let i = direction.index();
        let mut state = lock(&self.state);
        loop {
            if state.closed {
                return None;
            }
            let faults = shared.faults().direction(direction);
            let mut wait = Duration::from_millis(WAIT_MAX_MS);
            if let Some(head) = state.queues[i].chunks.front()
                && !faults.blackhole
            {
                // A delay too long to represent holds the chunk for good, like a
                // blackhole, rather than overflowing.
                let jitter_ms = faults.jitter_ms as f64 * head.jitter_share;
                let due = Duration::from_millis(faults.delay_ms)
                    .checked_add(Duration::from_secs_f64(jitter_ms / 1_000.0))
                    .and_then(|hold| head.arrived.checked_add(hold));
                let now = Instant::now();
                match due {
                    Some(due) if now >= due => {
                        let chunk = state.queues[i].chunks.pop_front()?;
                        state.queues[i].held_bytes -= chunk.bytes.len();
                        drop(state);
                        // The reader may be waiting for room under the bound.
                        self.changed.notify_all();
                        return Some(chunk);
                    }
                    Some(due) => wait = wait.min(due - now),
                    None => {}
                }
            }
            state = self.wait(state, wait);
        }
    }

    fn wait<'a>(
        &self,
        state: std::sync::MutexGuard<'a, State>,
        timeout: Duration,
    ) -> std::sync::MutexGuard<'a, State> {
        match self.changed.wait_timeout(state, timeout) {
            Ok((state, _)) => state,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }
}
