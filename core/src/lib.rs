//! The sans-I/O core of lockstep: the state machines of replication
//! ([`replication`]) and of cluster control ([`control`]), and the types every layer
//! shares ([`types`]).
//!
//! Nothing here reads a clock, touches a file or a socket, or spawns a thread: inputs
//! are messages, I/O completions and ticks, outputs are actions for a driver to carry
//! out (the node's stream driver and control loop, and the simulator, which runs the
//! same driver). The crate depends on nothing that does I/O; the compiler keeps it so.
//!
//! Thread safety: every state machine is owned by one thread and is `Send`.
#![forbid(unsafe_code)]

pub mod control;
pub mod replication;
pub mod types;

pub use types::{Epoch, Lsn, Mode, NodeId, ParseNameError, Record};
