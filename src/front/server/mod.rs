//! The binlog server: every lockstep node serves a front's stream to stock MariaDB
//! replicas, as if it were their primary, with the stream's committed transactions
//! only.
//!
//! A replica beside each lockstep node runs `CHANGE MASTER TO MASTER_HOST = <node>,
//! MASTER_PORT = <listen port>, MASTER_USER = ..., MASTER_PASSWORD = ...,
//! MASTER_USE_GTID = slave_pos; START SLAVE`. The server authenticates it
//! (`mysql_native_password`, one account per stream), answers its setup statements and
//! streams the transactions after its GTID position ([`replica`]). It reads through the
//! node's client port, so it never sends beyond the commit point that node knows: on a
//! secondary that is the primary's commit point as last reported to it.
//!
//! Resources: one accepting thread, one thread per replica (at most
//! [`REPLICAS_MAX`]), each with one client connection to the node.

pub mod conn;
pub mod replica;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Replicas served at once; more are refused with MariaDB's "too many connections".
pub const REPLICAS_MAX: usize = 64;

/// How long a replica has to answer the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The version the server announces: MariaDB's replicas check for "MariaDB" in it.
pub const VERSION: &str = "10.11.99-MariaDB-lockstep";

/// A stream's binlog server (`[[streams]] binlog_server = { ... }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub user: String,
    pub password: Vec<u8>,
    /// The server id replicas see (distinct from theirs and the primary's).
    pub server_id: u32,
    /// Filled in by the node: the stream and the node's client address.
    pub stream: String,
    pub node: String,
    pub version: String,
}

/// A running binlog server; stopped when dropped.
pub struct BinlogServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    replicas: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl BinlogServer {
    /// Binds `settings.listen` and starts serving.
    pub fn start(settings: ServerSettings) -> std::io::Result<BinlogServer> {
        let listener = TcpListener::bind(settings.listen)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let replicas = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (Arc::clone(&stop), Arc::clone(&replicas));
        let thread = std::thread::Builder::new()
            .name(format!("lockstep-binlog-{}", settings.stream))
            .spawn(move || accept(&listener, &settings, &s, &r))?;
        Ok(BinlogServer {
            addr,
            stop,
            replicas,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.replicas.lock().expect("replicas").drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        // Wake the accepting thread.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BinlogServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept(
    listener: &TcpListener,
    settings: &ServerSettings,
    stop: &Arc<AtomicBool>,
    replicas: &Arc<Mutex<Vec<TcpStream>>>,
) {
    let connections = Arc::new(AtomicUsize::new(0));
    let next_id = AtomicU32::new(1);
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for sock in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(sock) = sock else { continue };
        threads.retain(|t| !t.is_finished());
        let _ = sock.set_nodelay(true);
        if connections.load(Ordering::SeqCst) >= REPLICAS_MAX {
            tracing::warn!(
                "binlog server of stream {}: more than {REPLICAS_MAX} replicas; refusing {}",
                settings.stream,
                sock.peer_addr()
                    .map_or_else(|_| "a replica".to_owned(), |a| a.to_string())
            );
            continue;
        }
        if let Ok(s) = sock.try_clone() {
            replicas.lock().expect("replicas").push(s);
        }
        connections.fetch_add(1, Ordering::SeqCst);
        let (own, stop, count) = (settings.clone(), Arc::clone(stop), Arc::clone(&connections));
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name(format!("lockstep-replica-{id}"))
            .spawn(move || {
                serve_one(sock, &own, id, &stop);
                count.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                connections.fetch_sub(1, Ordering::SeqCst);
                tracing::error!(
                    "binlog server of stream {}: start a replica thread: {e}",
                    settings.stream
                );
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

fn serve_one(sock: TcpStream, settings: &ServerSettings, id: u32, stop: &AtomicBool) {
    let _ = sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let conn = match conn::ServerConn::accept(
        sock,
        &settings.version,
        id,
        &settings.user,
        &settings.password,
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(
                "binlog server of stream {}: refused a replica: {e}",
                settings.stream
            );
            return;
        }
    };
    // A replica may be idle for long between its commands and during the dump; its
    // own heartbeat period and net timeout govern the connection from now on.
    let _ = conn.socket().set_read_timeout(None);
    let peer = conn.peer().to_owned();
    tracing::info!(
        "binlog server of stream {}: replica {peer} connected",
        settings.stream
    );
    match replica::serve(conn, settings, stop) {
        Ok(()) => {}
        Err(replica::ReplicaError::Conn(conn::ConnError::Closed { .. })) => {}
        // A stop closes the replicas' connections: not a failure to report.
        Err(_) if stop.load(Ordering::Relaxed) => {}
        Err(e) => tracing::warn!(
            "binlog server of stream {}: replica {peer}: {e}",
            settings.stream
        ),
    }
}
