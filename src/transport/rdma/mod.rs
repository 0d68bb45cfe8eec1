//! The RDMA transport: the primary RDMA-WRITEs framed records into each member's ring,
//! the member writes its durable position back into its ack slot on the primary
//! (`../shared/DESIGN.md`, "Transport").
//!
//! One noun per file: [`verbs`] (the safe interface of regions, queue pairs and
//! completions), [`device`] (its provider over an RDMA device), [`emulated`] (its test
//! double over shared memory), [`ring`] (records,
//! their trailer and crc, the reader and writer), [`credits`] (room in the ring by
//! position), [`ack_slot`] (the member's positions on the primary).
//!
//! Fault model: a queue pair may fail at any write (its later writes are not placed), a
//! write may be torn (placed in part), completions may be late, a member may stop
//! polling its ring, and either process may restart. None of these loses or duplicates
//! a record: a torn record is never read (its trailer is missing), a full ring holds
//! records back, and after a failure the link falls back to TCP, whose greeting
//! (`replication::shared_prefix`) says where the member's log ends.

pub mod ack_slot;
pub mod credits;
pub mod device;
pub mod emulated;
pub mod link;
pub mod ring;
pub mod setup;
pub mod verbs;
