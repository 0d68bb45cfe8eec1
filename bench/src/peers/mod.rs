//! The systems lockstep is compared with, each started by the benchmark itself in a
//! temporary directory on loopback and torn down at the end (see [`process`]):
//! PostgreSQL with a synchronous standby ([`postgres`]), MariaDB with lossless
//! semi-sync ([`mariadb`]) and a 3-member etcd ([`etcd`]), each driven through a
//! client of its own protocol ([`pg_wire`]; for MariaDB the front's
//! `lockstep::front::connection`; [`http`]).
//! Missing packages are installed by [`install`] when the benchmark may.

pub mod etcd;
pub mod http;
pub use lockstep::demo::install;
pub mod mariadb;
pub mod pg_wire;
pub mod postgres;
pub use lockstep::demo::process;

use std::io::BufReader;
use std::net::TcpStream;
use std::time::Duration;

use crate::Error;

/// Bound on any one reply of a peer.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A client connection to `addr` as the peers' clients use it: TCP_NODELAY, a read
/// timeout, a buffered reader and a writer on the same socket.
pub fn connect(addr: &str) -> Result<(BufReader<TcpStream>, TcpStream), Error> {
    let sock = TcpStream::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    sock.set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY to {addr}: {e}"))?;
    sock.set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| format!("socket timeout to {addr}: {e}"))?;
    let writer = sock
        .try_clone()
        .map_err(|e| format!("clone the socket to {addr}: {e}"))?;
    Ok((BufReader::with_capacity(64 << 10, sock), writer))
}
