//! Cluster control: the configuration of every stream (epoch, primary, sync set,
//! learners) kept by an embedded raft group of the voting nodes, and the decisions
//! that change it — failover by fencing, removal and restore of members, switchover.
//!
//! Everything here is sans-I/O: [`Controller`] takes messages, statuses and time, and
//! returns messages to send, state to persist and configurations to apply. The node's
//! control loop and the simulator drive it alike.

pub mod cluster_config;
pub mod controller;
mod error;
pub mod fence;
pub mod message;
pub mod raft_wire;
pub mod storage;

pub use cluster_config::{ClusterConfig, Command, DbRoles, Policy, StreamRoles};
pub use controller::{Controller, ControllerSettings, Output};
pub use error::{ControlError, Refusal};
pub use message::{ControlMsg, NodeStatus, Request, StreamStatus};
pub use raft_wire::elements as raft_elements;
pub use storage::ControlLog;
