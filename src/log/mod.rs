//! The segmented, crash-safe transaction log of one stream.
//!
//! A stream is a directory of fixed-size segment files (see [`segment`]) holding
//! checksummed records (see [`record`]). [`Log`] appends with group commit: everything
//! appended while a write is in flight goes into the next write, which is one O_DIRECT
//! write with RWF_DSYNC through the caller's io_uring. There is no timer: at low load a
//! record is written as soon as it is appended.
//!
//! Invariants:
//! - LSNs are dense from the first retained LSN to the last record; epochs never decrease.
//! - `durable_lsn()` only grows (except through `truncate_after`), and only after the
//!   kernel reported the write that holds it complete and durable.
//! - At most one write is in flight, so after a crash only the newest batch can be torn;
//!   recovery cuts it and reports it. Damage anywhere else is corruption: it is reported
//!   with file and offset and the log refuses to open.
//! - A failed durable write is never retried: the log stops accepting appends and says
//!   why; reopening it (recovery) is the way back.
//! - Space for records is reserved before an LSN is assigned: a new segment is fully
//!   allocated and zeroed before the first record goes into it, so running out of space
//!   is an error to the appender, never a lost acknowledged record.
//!
//! Thread safety: a `Log` is owned by one shard thread. The only other thread is the
//! short-lived helper that pre-allocates and zeroes the next segment.

mod cleanup;
pub mod faults;
mod reads;
pub mod record;
mod recovery;
pub mod segment;
mod spare;
mod writer;

use std::io;
use std::path::PathBuf;

pub use faults::Faults;
pub use recovery::Recovery;
pub use writer::{Log, LogOptions};

pub use lockstep_core::Record;

/// What the log's operations return.
pub type LogResult<T> = Result<T, LogError>;

/// Errors of the log layer. Each names the operation and the file.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no space left for a new segment in {}: {source}", path.display())]
    NoSpace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt log: {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("the log of {} stopped accepting appends: {reason}", dir.display())]
    Failed { dir: PathBuf, reason: String },
    #[error("payload of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("epoch {epoch} is older than the log's last epoch {last}")]
    EpochRegression { epoch: u64, last: u64 },
    #[error("the current batch is full; retry after the write in flight completes")]
    Full,
    #[error("a write is in flight or records are pending; sync the log first")]
    Busy,
    #[error("lsn {lsn} is outside the log's range {first}..={last}")]
    OutOfRange { lsn: u64, first: u64, last: u64 },
    #[error("the log in {} is in use by another process", dir.display())]
    Locked { dir: PathBuf },
    #[error("bad log configuration: {0}")]
    Config(String),
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> LogError {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            LogError::NoSpace { path, source }
        } else {
            LogError::Io { op, path, source }
        }
    }
}
