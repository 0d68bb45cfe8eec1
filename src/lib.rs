//! lockstep: strong-synchronous replication of database transaction logs.
//!
//! This crate holds the log engine ([`log`]) and the limits shared by every layer
//! ([`constants`]). All unsafe code lives in the `lockstep-sys` crate.
#![forbid(unsafe_code)]

pub mod client;
pub mod constants;
pub mod control;
pub mod demo;
pub mod inspect;
pub mod log;
pub mod profile;
pub mod proxy;
pub mod replication;
pub mod server;
pub mod sim;
pub mod stream;
pub mod transport;
pub mod wire;
