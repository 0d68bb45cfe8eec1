//! What a front knows of the cluster's database roles, and how it asks to change them.
//!
//! The roles live in the controller's configuration ([`DbRoles`]: the database server
//! beside each member node, which one is the primary, and the term of that choice); a
//! change is a committed controller entry. The node hands its fronts, its rejoin
//! agents and its admin endpoint a [`Coordinator`] that reads the configuration as the
//! control loop last applied it and sends requests to the controller.

use std::collections::BTreeMap;

use crate::control::{ClusterConfig, DbRoles, Request};
use crate::replication::NodeId;

/// A stream's roles as one node last saw them committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbView {
    /// The stream's lockstep epoch and primary.
    pub epoch: u64,
    pub primary: NodeId,
    pub sync_set: Vec<NodeId>,
    pub db: DbRoles,
    /// node → the address its clients (and peers) reach it at.
    pub nodes: BTreeMap<NodeId, String>,
}

impl DbView {
    /// The view of `stream` in `config`, if the stream has database roles.
    pub fn of(config: &ClusterConfig, stream: &str) -> Option<DbView> {
        let roles = config.streams.get(stream)?;
        Some(DbView {
            epoch: roles.epoch,
            primary: roles.primary,
            sync_set: roles.sync_set.clone(),
            db: roles.db.clone()?,
            nodes: config.members.clone(),
        })
    }

    /// The lockstep primary's address (where the stream's position is read).
    pub fn primary_addr(&self) -> Option<&str> {
        self.nodes.get(&self.primary).map(String::as_str)
    }
}

/// The cluster as a node's fronts see it.
pub trait Coordinator: Send + Sync {
    /// The committed roles of `stream`; `None` before the controller applied its
    /// configuration, or for a stream without database roles.
    fn view(&self, stream: &str) -> Option<DbView>;

    /// Hands a request to the controller (its leader decides; a stale one is refused
    /// by every node alike). `false` if the node's controller queue is full or gone.
    fn ask(&self, request: Request) -> bool;
}
