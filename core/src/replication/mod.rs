//! The replication core: sans-I/O state machines for a stream's primary and
//! secondaries, and the commit rule they share.
//!
//! Nothing here reads the clock, a file or a socket. Inputs are messages, I/O
//! completions and ticks; outputs are actions for the shard driver (or the simulator)
//! to carry out. See `../shared/DESIGN.md`, "Commit rule" and "Data path".

pub mod commit_rule;
pub mod primary;
pub mod secondary;
pub mod settings;
pub mod shared_prefix;

pub use primary::{Action, Event, MemberSpec, NodeId, Outcome, Primary, RequestId};
pub use secondary::{Secondary, Verdict};
pub use settings::{Mode, OnInsufficient, SettingsError, StreamSettings};
