//! Transports: how frames travel between nodes and clients.
//!
//! One trait, several implementations (see `../shared/DESIGN.md`, "Transport"): the
//! stream driver sends through [`Links`] and receives frames from its host, so the one
//! driver runs over the node's TCP links ([`tcp`]) and over the simulator's network of
//! encoded frames (`sim::host::SimLinks`). Peer links may run on RDMA rings instead
//! ([`rdma`]: on a device's queue pairs, or on emulated verbs between processes of one
//! host), still behind [`Links`].

pub mod rdma;
pub mod tcp;

use crate::wire::{Message, RequestId};

/// A connection of a shard: to a client, a member, or the primary.
pub type LinkId = usize;

/// Why a link failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("link {link} to {peer}: {source}")]
    Io {
        link: LinkId,
        peer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("link {link} to {peer}: {message}")]
    Protocol {
        link: LinkId,
        peer: String,
        message: String,
    },
    #[error("link {0} is closed")]
    Closed(LinkId),
}

/// The sending side of a shard's links. Frames are queued and leave at the end of the
/// shard's turn (one write per link per turn), or earlier when a queue grows large.
pub trait Links {
    /// Queues one frame on `link`.
    fn send(
        &mut self,
        link: LinkId,
        id: RequestId,
        message: &Message<'_>,
    ) -> Result<(), TransportError>;
    /// Closes `link`, saying why in the node's log.
    fn close(&mut self, link: LinkId, why: &str);
    /// Whether `link` is open.
    fn is_open(&self, link: LinkId) -> bool;
}
