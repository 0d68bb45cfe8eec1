//! lockstep: strong-synchronous replication of database transaction logs.
//!
//! Layers, from the core out:
//! - [`replication`] and [`control`]: the sans-I/O state machines, in the crate
//!   `lockstep-core`, which depends on nothing that does I/O;
//! - [`wire`] (the framed protocol), [`log`] (the stream's log on disk),
//!   [`transport`] (links);
//! - [`stream`]: the one stream driver, generic over its log, links and time, run by the
//!   node and by the simulator;
//! - [`server`]: the node (shards, acceptor, dialers, control loop, metrics), and
//!   [`client`];
//! - [`sim`]: the deterministic simulator, which runs the stream driver and the
//!   controller under faults;
//! - tools that are not the node: [`demo`], [`proxy`] (a fault-injecting TCP proxy),
//!   [`inspect`] (read-only log inspection), and [`kit`], which sets up loopback
//!   clusters for the tests, the benchmarks and the demo.
//!
//! Limits shared by every layer are in [`constants`]. All unsafe code lives in the
//! `lockstep-sys` crate.
#![forbid(unsafe_code)]

/// The sans-I/O core, a crate of its own (`lockstep-core`) so that it depends on
/// nothing that does I/O.
pub use lockstep_core::{control, replication};

pub mod client;
pub mod constants;
pub mod demo;
pub mod front;
pub mod inspect;
pub mod kit;
pub mod log;
pub mod profile;
pub mod proxy;
pub mod server;
pub mod sim;
pub mod stream;
pub mod transport;
pub mod wire;
