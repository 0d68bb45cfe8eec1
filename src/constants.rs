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
