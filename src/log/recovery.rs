//! Opening a log: the lock that keeps a second writer out, the choice of direct or
//! buffered I/O, `BASE` (the record before the first retained one), and recovery of
//! the tail: a torn or partial last write is cut and its leftovers cleared, a retention
//! cut short by a crash is finished, an unused rollover segment is removed. Damage
//! anywhere but in the last write is corruption: reported with file and offset, and
//! the log refuses to open.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use lockstep_sys::file::{self as sysfile, Access};
use lockstep_sys::mem::AlignedBuf;
use lockstep_sys::uring::WriteSync;

use super::cleanup::zero_range;
use super::spare::{Spare, install, prepare_segment};
use super::writer::{LogOptions, Pending, Sealed, Tail};
use crate::constants::{BATCH_BYTES_MAX, IO_ALIGN};
use crate::log::segment::{self, End, Mode};
use crate::log::{Log, LogError};

/// What recovery found and did when the log was opened.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// One line per notable event: a cut torn tail, cleared leftovers, a removed unused
    /// segment, a fallback to buffered I/O.
    pub notes: Vec<String>,
}

impl Log {
    /// Opens (creating if empty) the log in `dir` and recovers it. `tag` is the
    /// `user_data` of every io_uring operation of this log, so the owner can route
    /// completions to it.
    pub fn open(dir: &Path, opts: LogOptions, tag: u64) -> Result<Log, LogError> {
        opts.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| LogError::io("create directory", dir, e))?;
        let lock_path = dir.join(segment::LOCK_NAME);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| LogError::io("open lock file", &lock_path, e))?;
        lock_exclusive(&lock, dir, &lock_path)?;
        let mut recovery = Recovery::default();
        let (access, sync) = choose_io(dir, &opts, &mut recovery)?;
        let spare_path = dir.join(segment::SPARE_NAME);
        match std::fs::remove_file(&spare_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(LogError::io("remove stale spare segment", spare_path, e));
            }
            _ => {}
        }
        let base = load_base(dir)?;
        let mut segs = segment::list(dir).map_err(|e| LogError::io("list segments", dir, e))?;
        if let Some((base_lsn, _)) = base {
            // A retention that a crash cut short: `BASE` is stored before any segment
            // is deleted, and every segment starting at or below it was being deleted
            // (retention cuts at a segment's end). Finishing the deletion keeps `BASE`
            // in force: a log starting elsewhere cannot tell the epoch before its first
            // record, and a primary failed the stream at every greeting of a member
            // ending below that record. (A reset stores `BASE` after its deletions.)
            let stale = segs
                .iter()
                .take_while(|(first, _)| *first <= base_lsn)
                .count();
            for (_, path) in segs.drain(..stale) {
                std::fs::remove_file(&path)
                    .map_err(|e| LogError::io("delete segment", &path, e))?;
                recovery.notes.push(format!(
                    "deleted {} below BASE {base_lsn}: a retention cut short",
                    path.display()
                ));
            }
            if stale > 0 {
                sysfile::sync_dir(dir).map_err(|e| LogError::io("sync directory", dir, e))?;
            }
        }
        if segs.is_empty() {
            // A new log, or one whose reset (`Log::reset`) stopped between deleting the
            // old segments and installing the first new one.
            let first = base.map_or(1, |(lsn, _)| lsn + 1);
            let path = dir.join(segment::file_name(first));
            prepare_segment(
                &spare_path,
                opts.segment_bytes,
                access,
                opts.faults.as_deref(),
            )?;
            install(&spare_path, &path, dir)?;
            segs.push((first, path));
        }
        // Find the tail: the newest segment holding a record, or the only one. An empty
        // newest segment is an unused rollover (the crash came before its first write
        // completed). A rollover happens only when no write is in flight, so the segment
        // before it was complete: it is judged as sealed, where all damage is corruption.
        let mut mode = Mode::Tail;
        let (scan, mut data) = loop {
            let (first, path) = segs.last().expect("at least one segment");
            let data = std::fs::read(path).map_err(|e| LogError::io("read segment", path, e))?;
            let scan = segment::scan(&data, *first, None, mode, |_| {});
            if mode == Mode::Tail
                && scan.records == 0
                && segs.len() > 1
                && !matches!(scan.end, End::Corrupt(_))
            {
                std::fs::remove_file(path)
                    .map_err(|e| LogError::io("remove unused segment", path, e))?;
                sysfile::sync_dir(dir).map_err(|e| LogError::io("sync directory", dir, e))?;
                recovery
                    .notes
                    .push(format!("removed unused segment {}", path.display()));
                segs.pop();
                mode = Mode::Sealed;
                continue;
            }
            break (scan, data);
        };
        let (tail_first, tail_path) = segs.pop().expect("tail");
        if let End::Corrupt(d) = &scan.end {
            return Err(LogError::Corrupt {
                path: tail_path,
                offset: d.offset,
                reason: d.reason.clone(),
            });
        }
        let file = sysfile::open_rw(&tail_path, access, false)
            .map_err(|e| LogError::io("open segment", &tail_path, e))?;
        // Clear what a torn or unfinished last write left behind, so that nothing stale
        // can ever be mistaken for a continuation of the log.
        let clear = match &scan.end {
            End::Torn(d) => {
                recovery.notes.push(format!(
                    "cut torn tail of {} at offset {}: {} (the write was never acknowledged)",
                    tail_path.display(),
                    d.offset,
                    d.reason
                ));
                Some(d.offset.next_multiple_of(IO_ALIGN as u64) + BATCH_BYTES_MAX as u64)
            }
            End::Clean => scan.dirty_after_end.map(|at| {
                recovery.notes.push(format!(
                    "cleared leftovers of an unfinished write in {} at offset {at}",
                    tail_path.display()
                ));
                scan.next_batch + BATCH_BYTES_MAX as u64
            }),
            End::Corrupt(_) => unreachable!("returned above"),
        };
        if data.len() % IO_ALIGN != 0 {
            // A segment cut short mid-block (a truncated file): direct I/O needs whole
            // blocks, so the file is extended with zeros to the next block.
            let len = data.len().next_multiple_of(IO_ALIGN);
            file.set_len(len as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| LogError::io("extend segment", &tail_path, e))?;
            recovery.notes.push(format!(
                "extended {} from {} to {len} bytes (whole blocks)",
                tail_path.display(),
                data.len()
            ));
            data.resize(len, 0);
        }
        if let Some(to) = clear {
            let to = to.min(data.len() as u64);
            zero_range(&file, &data, scan.valid_end, to)
                .map_err(|e| LogError::io("clear torn tail", &tail_path, e))?;
        }
        let sealed = segs
            .into_iter()
            .map(|(lsn, path)| (lsn, Sealed { path, index: None }))
            .collect();
        let batch = opts.batch_bytes;
        let mut log = Log {
            dir: dir.to_path_buf(),
            access,
            sync,
            tag,
            sealed,
            tail: Tail {
                first_lsn: tail_first,
                path: tail_path,
                file: Arc::new(file),
                len: data.len() as u64,
                index: scan.index,
            },
            write_off: scan.next_batch,
            next_lsn: scan.last_lsn + 1,
            durable_lsn: scan.last_lsn,
            last_epoch: scan.last_epoch,
            pending: Pending {
                buf: AlignedBuf::new(batch),
                len: 0,
                first_lsn: scan.last_lsn + 1,
                count: 0,
            },
            free_buf: Some(AlignedBuf::new(batch)),
            in_flight: None,
            spare: Spare::Idle,
            failed: None,
            recovery,
            base,
            opts,
            _lock: lock,
        };
        log.start_spare();
        Ok(log)
    }
}

const BASE_MAGIC: &[u8] = b"LSBASE1\n";

/// Reads `BASE`: (LSN, epoch) of the record before the first retained one.
pub(super) fn load_base(dir: &Path) -> Result<Option<(u64, u64)>, LogError> {
    let path = dir.join(segment::BASE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io("read", path, e)),
    };
    let m = BASE_MAGIC.len();
    let corrupt = |reason: &str| LogError::Corrupt {
        path: path.clone(),
        offset: 0,
        reason: reason.to_string(),
    };
    if bytes.len() != m + 20 || !bytes.starts_with(BASE_MAGIC) {
        return Err(corrupt("not a base file"));
    }
    let crc = u32::from_le_bytes(bytes[m + 16..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..m + 16]) != crc {
        return Err(corrupt("the base file fails its checksum"));
    }
    let lsn = u64::from_le_bytes(bytes[m..m + 8].try_into().expect("8 bytes"));
    let epoch = u64::from_le_bytes(bytes[m + 8..m + 16].try_into().expect("8 bytes"));
    Ok(Some((lsn, epoch)))
}

/// Replaces `BASE` atomically (write, fsync, rename, fsync the directory).
pub(super) fn store_base(dir: &Path, (lsn, epoch): (u64, u64)) -> Result<(), LogError> {
    let mut bytes = BASE_MAGIC.to_vec();
    bytes.extend_from_slice(&lsn.to_le_bytes());
    bytes.extend_from_slice(&epoch.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("BASE.tmp");
    let path = dir.join(segment::BASE_NAME);
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        io::Write::write_all(&mut f, &bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sysfile::sync_dir(dir)
    };
    write().map_err(|e| LogError::io("store", dir.join(segment::BASE_NAME), e))
}

/// Takes the log's lock. A process that forks (to start another program) shares the
/// lock with its child until the child's exec closes it; that window is short, so a busy
/// lock is retried for up to a second before the log is declared in use.
fn lock_exclusive(lock: &File, dir: &Path, lock_path: &Path) -> Result<(), LogError> {
    for _ in 0..LOCK_TRIES {
        match lock.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(LOCK_RETRY_MS));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(LogError::io("lock", lock_path, e)),
        }
    }
    Err(LogError::Locked {
        dir: dir.to_path_buf(),
    })
}

const LOCK_TRIES: u32 = 50;
const LOCK_RETRY_MS: u64 = 20;

fn choose_io(
    dir: &Path,
    opts: &LogOptions,
    recovery: &mut Recovery,
) -> Result<(Access, WriteSync), LogError> {
    if opts.force_buffered {
        return Ok((Access::Buffered, WriteSync::LinkedFdatasync));
    }
    let p = lockstep_sys::probe::storage(dir).map_err(|e| LogError::io("probe storage", dir, e))?;
    Ok(match (p.direct, p.rwf_dsync) {
        (Ok(()), Ok(())) => (Access::Direct, WriteSync::Dsync),
        (Ok(()), Err(why)) => {
            recovery.notes.push(format!(
                "RWF_DSYNC not honoured under {} ({why}): using write + linked fdatasync",
                dir.display()
            ));
            (Access::Direct, WriteSync::LinkedFdatasync)
        }
        (Err(why), _) => {
            recovery.notes.push(format!(
                "{why} under {}: using buffered writes + fdatasync",
                dir.display()
            ));
            (Access::Buffered, WriteSync::LinkedFdatasync)
        }
    })
}
