//! A fault-injecting TCP proxy for fault runs of real `lockstepd` processes.
//!
//! Fault runs put one [`Proxy`] between every pair of nodes on loopback. This machine
//! class has no netem qdisc, so delay, one-way partitions and connection loss are
//! injected here, in user space, by threads that copy bytes between the two sockets of
//! each proxied connection. The proxy never looks inside the bytes: it does not know the
//! lockstep wire format and cannot corrupt, reorder or duplicate a frame.
//!
//! # Fault model
//!
//! Faults are set per direction through a [`FaultControl`] handle at any time, from any
//! thread, and apply at once to every current connection, including bytes already held.
//! "Forward" is client to upstream, "backward" is upstream to client.
//!
//! - **pass**: bytes are copied as they arrive.
//! - **delay** (`delay_ms`, optional `jitter_ms`): a chunk is released no earlier than
//!   its arrival time plus the delay plus its share of the jitter. Chunks are released
//!   strictly in arrival order (a chunk with little jitter waits behind one with much),
//!   because TCP never reorders bytes and a proxy that did would test the wrong thing.
//! - **blackhole**: bytes are read from the sender and held, not delivered, while the
//!   other direction keeps flowing (a one-way partition). The proxy keeps reading rather
//!   than leaving bytes in the sender's kernel buffer so that healing delivers exactly
//!   what was withheld, in order, and [`ProxyStats::held_bytes`] shows how much that is.
//!   Once [`HELD_BYTES_MAX`] bytes are held in one direction of one connection the proxy
//!   stops reading, so the sender's socket buffer fills and its writes block, as they
//!   would behind a real partition (only later).
//! - **heal** ([`FaultControl::heal`]): every fault is lifted and withheld bytes are
//!   delivered, which is what a short partition of a live TCP connection looks like.
//!   A long partition usually ends with a timeout closing the connection instead;
//!   [`FaultControl::reset_all`] is that ending.
//! - **drop** (`drop_probability`): each chunk read in that direction cuts the whole
//!   connection with this probability. Sustained loss on a real link ends the same way
//!   (retransmission timeouts, then a reset), and loss that TCP recovers from is only a
//!   delay, which `delay` models.
//! - **refuse**: new connections are accepted and closed at once, and every current
//!   connection is cut. A **partition** is both directions blackholed plus new
//!   connections refused, with current connections kept alive (and their bytes held).
//!
//! Cutting a connection shuts down both of its sockets: each peer reads end-of-stream,
//! and a later write by a peer draws a reset. The standard library cannot set
//! `SO_LINGER` to zero, so the proxy does not send a reset itself; to lockstep a cut
//! looks like a peer that closed, which its transport treats like any broken link.
//!
//! # Invariants
//!
//! - Bytes of one direction are delivered in order, never duplicated, never altered; a
//!   connection either delivers a prefix of what was sent or is cut.
//! - End-of-stream travels in order behind the data, under the same delay and
//!   blackhole as the data, and is passed on as a half-close (`shutdown(Write)`).
//! - Every queue is bounded: at most [`HELD_BYTES_MAX`] bytes per direction per
//!   connection, at most [`CONNECTIONS_MAX`] connections at once (more are refused).
//!
//! # Threads and clean-up
//!
//! One accept thread per proxy, and four threads per connection (a reader and a writer
//! per direction), all plain `std` threads. Dropping the [`Proxy`] stops the accept
//! thread, cuts every connection and joins every thread; each wait in those threads is
//! either a socket operation that the shutdown ends or a condition-variable wait with a
//! bounded timeout, so the drop finishes promptly. [`FaultControl`] handles may outlive
//! the proxy; they then control nothing.
//!
//! # Control commands
//!
//! The `lockstep-proxy` binary drives a proxy from a line-based TCP control port; the
//! commands are listed in [`command`].

pub mod command;
mod control;
mod pump;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use control::{Direction, DirectionFaults, FaultControl, Faults, ProxyStats};
use pump::Conn;

/// Most bytes held (under delay or blackhole) in one direction of one connection. At
/// this bound the proxy stops reading from the sender: back-pressure, not loss.
pub const HELD_BYTES_MAX: usize = 64 << 20;

/// Bytes read from a socket at once; the unit to which `drop_probability` applies.
pub const CHUNK_BYTES: usize = 64 << 10;

/// Most connections proxied at once; further ones are closed at accept time.
pub const CONNECTIONS_MAX: usize = 1024;

/// How long the proxy waits to connect to its upstream before it gives up on a new
/// connection (and closes the client side).
pub const UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 1_000;

/// Longest single condition-variable wait of a proxy thread. Waits are woken by
/// notification; this bound only keeps a missed wake-up from becoming a hang.
const WAIT_MAX_MS: u64 = 100;

/// Longest wait for the wake-up connection with which a dropped proxy stops its
/// accept thread.
const WAKE_CONNECT_TIMEOUT_MS: u64 = 1_000;

const _: () = assert!(CHUNK_BYTES <= HELD_BYTES_MAX);
const _: () = assert!(CONNECTIONS_MAX > 0);

#[derive(Default)]
struct Counters {
    bytes: [AtomicU64; 2],
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    connections_cut: AtomicU64,
    upstream_failures: AtomicU64,
}

/// State shared by a proxy's threads and its control handles.
struct Shared {
    faults: Mutex<Faults>,
    /// Connections that may still have running threads. The accept thread prunes
    /// finished ones before adding a new one.
    conns: Mutex<Vec<Arc<Conn>>>,
    counters: Counters,
    /// State of a splitmix64 generator, used for jitter and drops. Randomness here only
    /// shapes faults; no assertion depends on the sequence.
    rng: AtomicU64,
    /// Counts calls of `reset_all`, so that a connection admitted during one is cut.
    reset_generation: AtomicU64,
    stopping: AtomicBool,
}

impl Shared {
    fn faults(&self) -> Faults {
        *lock(&self.faults)
    }

    /// A uniformly distributed number in [0, 1).
    fn random_unit(&self) -> f64 {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut z = self
            .rng
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn conns(&self) -> Vec<Arc<Conn>> {
        lock(&self.conns).clone()
    }
}

/// Locks a mutex, ignoring poisoning: every critical section in the proxy leaves its
/// data consistent before any call that could panic, so a panicked holder leaves
/// nothing half-done.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running proxy. Dropping it stops it: see the module docs.
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    control: FaultControl,
    accept_thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `listen` (port 0 picks a free port) and forwards every accepted
    /// connection to `upstream`, both ways, with no faults.
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(addr.port()).rotate_left(48);
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            conns: Mutex::new(Vec::new()),
            counters: Counters::default(),
            rng: AtomicU64::new(seed),
            reset_generation: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("proxy-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, upstream, accept_shared))?;
        Ok(Proxy {
            addr,
            upstream,
            control: FaultControl { shared },
            accept_thread: Some(accept_thread),
        })
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address every connection is forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// A handle that changes faults and reads counters.
    pub fn control(&self) -> FaultControl {
        self.control.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let shared = &self.control.shared;
        shared.stopping.store(true, Ordering::SeqCst);
        // The accept thread blocks in accept(); a connection of our own wakes it to see
        // the stop flag. If even that fails the thread is left blocked rather than
        // making the drop hang; it holds only the listener and ends with the process.
        let timeout = Duration::from_millis(WAKE_CONNECT_TIMEOUT_MS);
        let woke = TcpStream::connect_timeout(&wake_addr(self.addr), timeout).is_ok();
        if let Some(handle) = self.accept_thread.take()
            && woke
        {
            let _ = handle.join();
        }
        let conns = std::mem::take(&mut *lock(&shared.conns));
        for conn in &conns {
            conn.close(shared, false);
        }
        for conn in &conns {
            conn.join();
        }
    }
}

/// The address to connect to in order to reach a listener bound to `addr`: loopback
/// when the listener is bound to every address.
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((client, _)) => admit(client, upstream, &shared),
            // A failed accept (out of file descriptors, a connection reset before it
            // was accepted) concerns one connection; a short pause keeps a persistent
            // failure from spinning this thread.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Connects an accepted client to the upstream and starts its threads, unless new
/// connections are refused.
fn admit(client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) {
    let counters = &shared.counters;
    // Read before the refuse check: a reset that starts after this point may miss the
    // connection in its walk (it is not registered yet), and is caught below instead.
    let generation = shared.reset_generation.load(Ordering::SeqCst);
    if shared.faults().refuse_new {
        counters.connections_refused.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let timeout = Duration::from_millis(UPSTREAM_CONNECT_TIMEOUT_MS);
    let server = match TcpStream::connect_timeout(&upstream, timeout) {
        Ok(server) => server,
        Err(_) => {
            counters.upstream_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let conn = match Conn::new(client, server) {
        Ok(conn) => Arc::new(conn),
        Err(_) => {
            counters.upstream_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    {
        let mut conns = lock(&shared.conns);
        conns.retain(|c| !c.is_finished());
        if conns.len() >= CONNECTIONS_MAX {
            counters.connections_refused.fetch_add(1, Ordering::Relaxed);
            conn.close(shared, false);
            return;
        }
        conns.push(Arc::clone(&conn));
    }
    counters
        .connections_accepted
        .fetch_add(1, Ordering::Relaxed);
    // A connection accepted before a `reset_all` (or `refuse`) is cut by it, even if
    // the reset's walk ran while the connection was being admitted.
    if shared.reset_generation.load(Ordering::SeqCst) != generation {
        conn.close(shared, true);
        return;
    }
    if Conn::spawn(&conn, shared).is_err() {
        conn.close(shared, false);
    }
}
