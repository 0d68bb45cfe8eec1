//! Limits and sizes of lockstep, with compile-time checks of the relations between them.

/// Alignment of every log write: offsets, lengths and buffers.
pub const IO_ALIGN: usize = lockstep_sys::mem::IO_ALIGN;

/// Bytes of a record header on disk.
pub const RECORD_HEADER_BYTES: usize = 32;

/// Largest write the log ever issues (one group-commit batch). This is part of the
/// on-disk format: recovery treats at most this many bytes after the last complete batch
/// as a possibly torn write. Configurations may use smaller batches, never larger.
pub const BATCH_BYTES_MAX: usize = 1 << 20;

/// Largest payload of one record: a record always fits in one batch.
pub const PAYLOAD_BYTES_MAX: usize = BATCH_BYTES_MAX - RECORD_HEADER_BYTES;

/// Default size of a segment file.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;

/// Smallest segment size accepted: room for two maximal batches.
pub const SEGMENT_BYTES_MIN: u64 = 2 * BATCH_BYTES_MAX as u64;

/// Largest segment size accepted.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 34;

/// Default batch size of the log.
pub const BATCH_BYTES_DEFAULT: usize = BATCH_BYTES_MAX;

/// Smallest configurable batch: one block.
pub const BATCH_BYTES_MIN: usize = IO_ALIGN;

/// Granularity of the in-memory read index: one entry per this many bytes of a segment.
pub const INDEX_STRIDE_BYTES: u64 = 64 << 10;

/// Chunk used when zeroing a new segment.
pub const ZERO_CHUNK_BYTES: usize = 1 << 20;

const _: () = assert!(RECORD_HEADER_BYTES.is_multiple_of(8));
const _: () = assert!(BATCH_BYTES_MAX.is_multiple_of(IO_ALIGN));
const _: () =
    assert!(BATCH_BYTES_MIN <= BATCH_BYTES_DEFAULT && BATCH_BYTES_DEFAULT <= BATCH_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_MIN.is_multiple_of(IO_ALIGN as u64));
const _: () = assert!(SEGMENT_BYTES_DEFAULT >= SEGMENT_BYTES_MIN);
const _: () = assert!(SEGMENT_BYTES_DEFAULT.is_multiple_of(ZERO_CHUNK_BYTES as u64));
const _: () = assert!(ZERO_CHUNK_BYTES.is_multiple_of(IO_ALIGN));
const _: () = assert!(INDEX_STRIDE_BYTES.is_multiple_of(IO_ALIGN as u64));
const _: () = assert!(PAYLOAD_BYTES_MAX <= u32::MAX as usize);

// Time

/// Milliseconds per tick: the replication core counts time in ticks, and a shard's
/// turn waits at most one tick when nothing happens.
pub const TICK_MS: u64 = 1;

const _: () = assert!(TICK_MS >= 1);
// A second is a whole number of ticks: the driver's periods (retention every second)
// are counted in ticks without rounding.
const _: () = assert!(1000u64.is_multiple_of(TICK_MS));

// Wire protocol

/// Bytes of a frame header on the wire (see [`crate::wire`]).
pub const FRAME_HEADER_BYTES: usize = 24;

/// Largest sum of record payload bytes in one frame (`Append`, `Records`, `Replicate`).
/// A maximal record always fits (four do), so a sender never splits a record across
/// frames. Every kind's own body limit is checked against `FRAME_BODY_BYTES_MAX` in
/// `wire::frame`.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 4 << 20;

/// Most records in one frame. It bounds the per-record bookkeeping a receiver does for
/// one frame, whatever the payload sizes.
pub const FRAME_RECORDS_MAX: usize = 8192;

/// Bytes a record costs in a `Records` or `Replicate` frame besides its payload: LSN,
/// epoch and payload length.
pub const FRAME_RECORD_OVERHEAD_BYTES: usize = 20;

/// Room for the fixed fields of any message, before its records.
pub const FRAME_FIXED_BYTES_MAX: usize = 64;

/// Largest frame body of any kind: the fixed fields and a full batch of records.
pub const FRAME_BODY_BYTES_MAX: usize = FRAME_FIXED_BYTES_MAX
    + FRAME_RECORDS_MAX * FRAME_RECORD_OVERHEAD_BYTES
    + FRAME_PAYLOAD_BYTES_MAX;

/// Largest stream name. Names become directory names, so they are short and plain.
pub const STREAM_NAME_BYTES_MAX: usize = 128;

/// Largest node address ("host:port") carried in a message.
pub const NODE_ADDR_BYTES_MAX: usize = 255;

/// Largest human-readable text (a reason or an error message) carried in a message.
pub const WIRE_TEXT_BYTES_MAX: usize = 4096;

/// Largest status document (JSON) a node sends.
pub const STATUS_JSON_BYTES_MAX: usize = 1 << 20;

/// Largest controller message (a raft message or snapshot, a status) in a `Control`
/// frame. The controller's raft messages carry at most 1 MiB of entries.
pub const CONTROL_MESSAGE_BYTES_MAX: usize = 2 << 20;

/// Bytes of one incoming control connection's messages queued for the control loop and
/// not yet handled: its reader stops reading there (TCP pushes back on the peer), so a
/// peer that sends faster than the controller handles holds at most this much.
pub const CONTROL_LINK_QUEUED_BYTES_MAX: usize = 8 << 20;

/// Node ids that may hold an incoming control connection at once (one connection
/// each): the cluster's members, and nodes about to join.
pub const CONTROL_LINKS_MAX: usize = 16;

/// Of [`CONTROL_LINKS_MAX`], node ids that are not members of the configuration.
pub const CONTROL_LINKS_NONMEMBER_MAX: usize = 4;

/// How long a node waits, once a second process greets with a node id whose current
/// process has an open control connection, for that process to show it is live (its
/// statuses come every 20 ms) or gone (its connection closes), before it gives the id
/// to the new process.
pub const IDENTITY_CONFIRM_MS: u64 = 200;

/// How long a node that greets another's controller waits for the answer (the other
/// may take [`IDENTITY_CONFIRM_MS`] to decide).
pub const CONTROL_WELCOME_WAIT_MS: u64 = 1000;

/// Bytes of a nonce and of a proof (HMAC-SHA256) in the handshake that shows a node
/// knows the cluster secret.
pub const AUTH_BYTES: usize = 32;

/// Smallest free space a frame decoder offers to one socket read, so that small frames
/// arrive many to a read system call.
pub const FRAME_READ_CHUNK_BYTES: usize = 64 << 10;

const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(8));
const _: () = assert!(PAYLOAD_BYTES_MAX <= FRAME_PAYLOAD_BYTES_MAX);
const _: () = assert!(FRAME_RECORDS_MAX <= u32::MAX as usize);
const _: () = assert!(FRAME_HEADER_BYTES + FRAME_BODY_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(STATUS_JSON_BYTES_MAX + 4 <= FRAME_BODY_BYTES_MAX);
const _: () = assert!(CONTROL_MESSAGE_BYTES_MAX + 4 <= FRAME_BODY_BYTES_MAX);
const _: () = assert!(CONTROL_LINK_QUEUED_BYTES_MAX >= CONTROL_MESSAGE_BYTES_MAX);
const _: () = assert!(CONTROL_LINKS_NONMEMBER_MAX < CONTROL_LINKS_MAX);
// Room for the members of the largest controller group (5 voters) and as many learners.
const _: () = assert!(CONTROL_LINKS_MAX - CONTROL_LINKS_NONMEMBER_MAX >= 10);
// The greeting waits for the decision on a live id, with room for the round trip.
const _: () = assert!(CONTROL_WELCOME_WAIT_MS >= 2 * IDENTITY_CONFIRM_MS);
// Five statuses (every 20 ms) fit in the window of a live process.
const _: () = assert!(IDENTITY_CONFIRM_MS >= 5 * 20);
const _: () = assert!(STREAM_NAME_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(NODE_ADDR_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(WIRE_TEXT_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(FRAME_READ_CHUNK_BYTES >= FRAME_HEADER_BYTES);
