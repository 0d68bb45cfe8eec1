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

/// Largest RDMA setup descriptor (`RingOffer`, `RingAccept`): a queue pair's endpoint,
/// a region's key and location, a reason.
pub const RING_SETUP_BYTES_MAX: usize = 1024;

/// Largest status document (JSON) a node sends.
pub const STATUS_JSON_BYTES_MAX: usize = 1 << 20;

/// Largest controller message (a raft message or snapshot, a status) in a `Control`
/// frame. The controller's raft messages carry at most 1 MiB of entries.
pub const CONTROL_MESSAGE_BYTES_MAX: usize = 2 << 20;

/// Bytes of one incoming control connection's messages queued for the control loop and
/// not yet handled: its reader stops reading there (TCP pushes back on the peer), so a
/// peer that sends faster than the controller handles holds at most this much.
pub const CONTROL_LINK_QUEUED_BYTES_MAX: usize = 4 << 20;

/// Bytes of all incoming control connections' messages queued for the control loop.
/// Connections of nodes that are not members may fill only half of it, so members'
/// messages always find room.
pub const CONTROL_QUEUED_BYTES_MAX: usize = 16 << 20;

/// Node ids that may hold an incoming control connection at once (one connection
/// each): the cluster's members, and nodes about to join.
pub const CONTROL_LINKS_MAX: usize = 16;

/// Of [`CONTROL_LINKS_MAX`], node ids that are not members of the configuration.
pub const CONTROL_LINKS_NONMEMBER_MAX: usize = 4;

/// Elements of one raft message that cost memory when it is decoded (log entries,
/// values of repeated fields, fields unknown to the schema), counted on the wire before
/// it is decoded: each costs a decoded struct or a slot of a vector, at most
/// [`RAFT_ELEMENT_BYTES_MAX`] besides its bytes, which a 2 MiB message of empty entries
/// would otherwise multiply into a hundred megabytes. The controller's raft sends far
/// fewer: at most [`CONTROL_APPEND_BYTES_MAX`] of entries in one append.
pub const RAFT_MESSAGE_ELEMENTS_MAX: usize = 4096;

/// Memory one decoded raft element may take besides its bytes on the wire: the
/// largest raft-proto struct an element decodes into (an `Entry`), or a vector slot
/// with its share of the vector's doubling, rounded up. Checked by a test of
/// `lockstep-core`.
pub const RAFT_ELEMENT_BYTES_MAX: usize = 256;

/// Streams one node hosts at most: a node's status names every stream, and must fit
/// in one control message.
pub const STREAMS_MAX: usize = 4096;

/// How long a node waits, once a second process greets with a node id whose current
/// process has an open control connection, for that process to show it is live (its
/// statuses come every 20 ms) or gone (its connection closes), before it gives the id
/// to the new process.
pub const IDENTITY_CONFIRM_MS: u64 = 200;

/// How long a node that greets another's controller waits for the answer (the other
/// may take [`IDENTITY_CONFIRM_MS`] to decide).
pub const CONTROL_WELCOME_WAIT_MS: u64 = 1000;

/// The same for the greetings a starting node sends before it opens anything (to be
/// refused if another process serves its id): a node that has not answered by then is
/// starting itself, or down, and the start does not wait longer for it.
pub const START_PROBE_WAIT_MS: u64 = 500;

/// Connections that have not yet greeted (handshakes) served at once; a connection
/// beyond them is closed at once. Each holds a thread and one read chunk.
pub const HANDSHAKES_MAX: usize = 64;

/// Largest frame body accepted before a connection's hello: every kind that may come
/// first (hellos, the secret's handshake, a join request) is far smaller, so a
/// connection that has not greeted cannot make its reader buffer a data frame.
pub const HELLO_BODY_BYTES_MAX: usize = 512;

/// Joins waiting for their commit at once; more are answered `unavailable` (the
/// joiner asks again).
pub const JOINS_PENDING_MAX: usize = 4;

/// Bytes queued for sending on one link before the link is considered stuck (the
/// peer does not read) and closed.
pub const SEND_QUEUE_BYTES_MAX: usize = 64 << 20;

/// The same for a member's link to its primary, which carries only small answers
/// (greetings, acks, refusals): a primary that does not read them is closed long
/// before it could make the member hold [`SEND_QUEUE_BYTES_MAX`].
pub const MEMBER_SEND_QUEUE_BYTES_MAX: usize = 1 << 20;

/// Bytes of records (headers included) in one `Replicate` frame, unless one record
/// alone is larger: well within one log batch on the member, so a member whose batch
/// is empty can always take a frame.
pub const REPLICATE_BYTES_MAX: usize = 512 << 10;

/// Bytes of entries in one raft append of the controller (one entry always goes): the
/// controller's commands are tens to hundreds of bytes, and rare, so an append of a
/// follower that is behind by a whole compaction's worth (64 commands) still takes a
/// few appends at most.
pub const CONTROL_APPEND_BYTES_MAX: u64 = 8 << 10;

/// Uncommitted raft entries (bytes of them) the controller's leader holds at once;
/// proposals beyond it are dropped (and asked again by their requester).
pub const CONTROL_UNCOMMITTED_BYTES_MAX: u64 = 64 << 10;

/// Fewest bytes of a raft entry in an append as raft sizes it (a term and an index,
/// each at least one byte with its tag), for the bound below.
pub const RAFT_ENTRY_BYTES_MIN: u64 = 4;

/// The largest LSN and epoch a message may carry. Far beyond any real log (2^62
/// records), and far enough from `u64::MAX` that `lsn + 1` and `epoch + 1` never
/// overflow: a peer cannot make a node's arithmetic wrap (an abort, with overflow
/// checks on) with a request such as `Rebase { base_lsn: u64::MAX }`.
pub const LSN_MAX: u64 = 1 << 62;
pub const EPOCH_MAX: u64 = 1 << 62;

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
const _: () = assert!(CONTROL_LINK_QUEUED_BYTES_MAX >= 2 * CONTROL_MESSAGE_BYTES_MAX);
const _: () = assert!(CONTROL_QUEUED_BYTES_MAX / 2 >= CONTROL_LINK_QUEUED_BYTES_MAX);
const _: () = assert!(CONTROL_LINKS_NONMEMBER_MAX < CONTROL_LINKS_MAX);
// Room for the members of the largest controller group (5 voters) and as many learners.
const _: () = assert!(CONTROL_LINKS_MAX - CONTROL_LINKS_NONMEMBER_MAX >= 10);
// A status names every stream (name, epoch and four positions as JSON, under 200 bytes
// besides the name): the largest node's status fits in one control message.
const _: () = assert!(STREAMS_MAX * (STREAM_NAME_BYTES_MAX + 200) <= CONTROL_MESSAGE_BYTES_MAX);
// Enough for the largest raft append the controller sends: its bytes of the smallest
// entries, and the one entry that always goes.
const _: () =
    assert!(RAFT_MESSAGE_ELEMENTS_MAX as u64 > CONTROL_APPEND_BYTES_MAX / RAFT_ENTRY_BYTES_MIN + 1);
// raft-rs refuses an uncommitted bound that one append could exceed.
const _: () = assert!(CONTROL_UNCOMMITTED_BYTES_MAX > CONTROL_APPEND_BYTES_MAX);
// The greeting waits for the decision on a live id, with room for the round trip.
const _: () = assert!(CONTROL_WELCOME_WAIT_MS >= 2 * IDENTITY_CONFIRM_MS);
const _: () = assert!(START_PROBE_WAIT_MS >= IDENTITY_CONFIRM_MS + 100);
const _: () = assert!(START_PROBE_WAIT_MS <= CONTROL_WELCOME_WAIT_MS);
// Five statuses (every 20 ms) fit in the window of a live process.
const _: () = assert!(IDENTITY_CONFIRM_MS >= 5 * 20);
const _: () = assert!(HELLO_BODY_BYTES_MAX <= FRAME_READ_CHUNK_BYTES);
const _: () = assert!(SEND_QUEUE_BYTES_MAX >= 2 * (FRAME_HEADER_BYTES + FRAME_BODY_BYTES_MAX));
const _: () =
    assert!(MEMBER_SEND_QUEUE_BYTES_MAX >= 64 * (FRAME_HEADER_BYTES + WIRE_TEXT_BYTES_MAX));
const _: () = assert!(REPLICATE_BYTES_MAX <= BATCH_BYTES_DEFAULT / 2);
const _: () = assert!(REPLICATE_BYTES_MAX <= FRAME_PAYLOAD_BYTES_MAX);
const _: () = assert!(LSN_MAX < u64::MAX / 2);
const _: () = assert!(EPOCH_MAX < u64::MAX / 2);
const _: () = assert!(STREAM_NAME_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(NODE_ADDR_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(WIRE_TEXT_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(FRAME_READ_CHUNK_BYTES >= FRAME_HEADER_BYTES);

// What authenticated peers' input can make a node hold

/// Memory that connections of other nodes (and of anyone before their hello) can make
/// a node hold at once, over what it holds with none of them connected. Each part is
/// bounded by the constants above:
/// - handshakes: a read chunk and a hello each;
/// - control connections: each reader's frame buffer (the largest control frame and a
///   read chunk) and the message it decodes (its bytes and a raft element's cost per
///   element);
/// - control messages queued for the control loop, decoded (bytes and element costs);
/// - per stream, the primary's one connection (a frame buffer of the largest frame
///   and a read chunk; a second greeting replaces the first) and its send queue (with
///   as much again of bytes already sent).
///
/// The stream part is the node's own working memory for its primary, counted for a
/// stream count of [`PEER_BOUND_STREAMS`]; a node with more streams adds that much per
/// stream.
pub const PEER_INPUT_BYTES_MAX: usize = HANDSHAKES_MAX
    * (FRAME_READ_CHUNK_BYTES + FRAME_HEADER_BYTES + HELLO_BODY_BYTES_MAX)
    + CONTROL_LINKS_MAX * (CONTROL_LINK_READ_BYTES_MAX + CONTROL_DECODED_BYTES_MAX)
    + CONTROL_QUEUED_BYTES_MAX
    + CONTROL_QUEUED_BYTES_MAX / CONTROL_MESSAGE_BYTES_MAX
        * RAFT_MESSAGE_ELEMENTS_MAX
        * RAFT_ELEMENT_BYTES_MAX
    + PEER_BOUND_STREAMS
        * (FRAME_HEADER_BYTES
            + FRAME_BODY_BYTES_MAX
            + FRAME_READ_CHUNK_BYTES
            + 2 * MEMBER_SEND_QUEUE_BYTES_MAX);

/// A control connection's frame buffer at most: the largest control frame and a read
/// chunk (see [`crate::wire::FrameDecoder`]).
pub const CONTROL_LINK_READ_BYTES_MAX: usize =
    FRAME_HEADER_BYTES + 4 + CONTROL_MESSAGE_BYTES_MAX + FRAME_READ_CHUNK_BYTES;

/// One decoded control message at most: its bytes and the cost of its elements.
pub const CONTROL_DECODED_BYTES_MAX: usize =
    CONTROL_MESSAGE_BYTES_MAX + RAFT_MESSAGE_ELEMENTS_MAX * RAFT_ELEMENT_BYTES_MAX;

/// Streams counted in [`PEER_INPUT_BYTES_MAX`].
pub const PEER_BOUND_STREAMS: usize = 1;

const _: () = assert!(PEER_INPUT_BYTES_MAX <= 128 << 20);
