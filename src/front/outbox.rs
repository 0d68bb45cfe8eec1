//! A session's appends on their way to the node, and the ACKs their commits release.
//!
//! Records wait in a batch; the batch goes out as one append when fewer than
//! [`APPENDS_IN_FLIGHT_MAX`] appends are in flight (right away at low load), when it
//! is full, or when the next record would not fit the node's log batch. So at high
//! load transactions ride together, as the log's own group commit puts whatever
//! arrived during a write into the next: the node's work per append (frames, replies,
//! replication) is shared, and no timer delays anything.
//!
//! The ACK thread takes the node's answers in request order. Each `Appended` releases
//! one ACK, for the end of the last whole transaction its append held (or of a resent
//! transaction queued behind it); anything else (`InDoubt`, `NotPrimary`, a refusal, a
//! lost connection) fails the session and closes the binlog connection, so nothing
//! after it is ever ACKed.
//!
//! Thread safety: the session's thread and the ACK thread share the outbox; the batch,
//! the pipeline's sending half and the queue of appends in flight sit behind one lock,
//! the ACK writer behind another (never taken while waiting for the first).

use std::collections::VecDeque;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::ack::{AckWriter, BinlogPos};
use super::gtid::Gtid;
use super::metrics::FrontMetrics;
use super::record::FrontRecord;
use super::session::SessionError;
use crate::client::ClientError;
use crate::client::pipeline::{Outcome, PipelineReader, PipelineWriter};
use crate::constants::FRAME_RECORDS_MAX;
use crate::log::record::record_bytes;
use crate::wire::RequestId;

/// Appends in flight before the batch waits for one to commit: one being written and
/// replicated, one queued behind it at the node.
pub const APPENDS_IN_FLIGHT_MAX: usize = 2;

/// Event bytes in flight and batched at which the session stops reading the binlog
/// until commits catch up.
pub const IN_FLIGHT_BYTES_MAX: usize = 64 << 20;

/// Most records in one append: a bound on the node's work for one request.
const BATCH_RECORDS_MAX: usize = 1024;
const _: () = assert!(BATCH_RECORDS_MAX <= FRAME_RECORDS_MAX);
const _: () = assert!(APPENDS_IN_FLIGHT_MAX >= 1);

/// Something appended and not yet committed, in request order.
enum Entry {
    Append {
        id: RequestId,
        /// The end of the last whole transaction in the append.
        ack: Option<BinlogPos>,
        transactions: u64,
        bytes: usize,
        oldest: Instant,
        last_gtid: Option<Gtid>,
    },
    /// A resent transaction the stream already held: ACKable once everything before it
    /// is committed.
    Held { ack: BinlogPos },
}

/// The records of the next append.
#[derive(Default)]
struct Batch {
    records: Vec<Vec<u8>>,
    /// Payload bytes, and bytes in the node's log (payloads and record headers).
    bytes: usize,
    log_bytes: usize,
    transactions: u64,
    ack: Option<BinlogPos>,
    oldest: Option<Instant>,
    last_gtid: Option<Gtid>,
}

struct State {
    writer: PipelineWriter,
    batch: Batch,
    entries: VecDeque<Entry>,
    appends: usize,
    /// Payload bytes in flight and batched.
    bytes: usize,
    closed: bool,
    failure: Option<SessionError>,
}

/// See the module docs.
pub struct Outbox {
    state: Mutex<State>,
    /// Signalled when appends commit, the session fails or closes.
    moved: Condvar,
    ack: Mutex<AckWriter>,
    /// The binlog connection: shut down when the session fails, so that the session's
    /// thread stops reading at once.
    upstream: TcpStream,
    upstream_addr: String,
    append_bytes_max: usize,
    metrics: Arc<FrontMetrics>,
}

impl Outbox {
    /// `upstream` is the binlog connection (the ACKs go on it); `append_bytes_max` the
    /// node's log batch, which one append must fit.
    pub fn new(
        writer: PipelineWriter,
        upstream: &TcpStream,
        upstream_addr: &str,
        append_bytes_max: usize,
        metrics: Arc<FrontMetrics>,
    ) -> std::io::Result<Outbox> {
        Ok(Outbox {
            state: Mutex::new(State {
                writer,
                batch: Batch::default(),
                entries: VecDeque::new(),
                appends: 0,
                bytes: 0,
                closed: false,
                failure: None,
            }),
            moved: Condvar::new(),
            ack: Mutex::new(AckWriter::new(upstream.try_clone()?)),
            upstream: upstream.try_clone()?,
            upstream_addr: upstream_addr.to_owned(),
            append_bytes_max,
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("front outbox")
    }

    /// Adds a record; `end` names the transaction it ends (its GTID and where it ends
    /// in the primary's binlog).
    pub fn push(
        &self,
        record: &FrontRecord,
        end: Option<(Gtid, BinlogPos)>,
    ) -> Result<(), SessionError> {
        let encoded = record.encode();
        let mut s = self.lock();
        // A record that would not fit the same append sends the batch before it.
        if s.batch.log_bytes + record_bytes(encoded.len()) > self.append_bytes_max
            || s.batch.records.len() >= BATCH_RECORDS_MAX
        {
            self.send(&mut s)?;
        }
        s.bytes += encoded.len();
        let b = &mut s.batch;
        b.bytes += encoded.len();
        b.log_bytes += record_bytes(encoded.len());
        b.records.push(encoded);
        b.oldest.get_or_insert_with(Instant::now);
        // The transaction's ACK belongs to the append that holds its last piece.
        if let Some((gtid, at)) = end {
            b.transactions += 1;
            b.last_gtid = Some(gtid);
            b.ack = Some(at);
        }
        Ok(())
    }

    /// A resent transaction the stream already holds, ending at `at`.
    pub fn held(&self, at: BinlogPos) -> Result<(), SessionError> {
        let mut s = self.lock();
        if !s.batch.records.is_empty() {
            // It follows the batch's transactions: the batch's ACK covers it.
            s.batch.ack = Some(at);
            return Ok(());
        }
        if !s.entries.is_empty() {
            s.entries.push_back(Entry::Held { ack: at });
            return Ok(());
        }
        drop(s);
        self.ack(&at)
    }

    /// The session has read every event the primary sent so far: the batch goes out if
    /// an append may.
    pub fn idle(&self) -> Result<(), SessionError> {
        let mut s = self.lock();
        if s.appends < APPENDS_IN_FLIGHT_MAX {
            self.send(&mut s)?;
        }
        Ok(())
    }

    /// Waits while too many bytes are in flight (the primary waits on its binlog
    /// connection meanwhile).
    pub fn wait_for_room(&self) {
        let mut s = self.lock();
        while s.bytes > IN_FLIGHT_BYTES_MAX && s.failure.is_none() && !s.closed {
            s = self.moved.wait(s).expect("front outbox");
        }
    }

    /// Sends the batch as one append.
    fn send(&self, s: &mut State) -> Result<(), SessionError> {
        if s.batch.records.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut s.batch);
        let payloads: Vec<&[u8]> = batch.records.iter().map(Vec::as_slice).collect();
        let id = s.writer.append(&payloads)?;
        s.entries.push_back(Entry::Append {
            id,
            ack: batch.ack,
            transactions: batch.transactions,
            bytes: batch.bytes,
            oldest: batch.oldest.unwrap_or_else(Instant::now),
            last_gtid: batch.last_gtid,
        });
        s.appends += 1;
        s.writer.flush()?;
        Ok(())
    }

    /// ACKs `at` now (everything up to it is committed).
    pub fn ack(&self, at: &BinlogPos) -> Result<(), SessionError> {
        let mut w = self.ack.lock().expect("front ack");
        if w.ack(at).map_err(|source| SessionError::Ack {
            addr: self.upstream_addr.clone(),
            source,
        })? {
            self.metrics.acks.fetch_add(1, Ordering::Relaxed);
            self.metrics.acked_pos.store(at.pos, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Fails the session (the first failure is kept) and closes the binlog connection.
    pub fn fail(&self, error: SessionError) {
        let mut s = self.lock();
        if s.failure.is_none() {
            s.failure = Some(error);
        }
        drop(s);
        self.moved.notify_all();
        let _ = self.upstream.shutdown(Shutdown::Both);
    }

    pub fn failed(&self) -> bool {
        self.lock().failure.is_some()
    }

    /// The failure that ended the session, if one did.
    pub fn take_failure(&self) -> Option<SessionError> {
        self.lock().failure.take()
    }

    /// Ends the pipeline: nothing more is sent; the node answers what it read and
    /// closes, and the ACK thread returns once it has.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        let _ = s.writer.finish();
        drop(s);
        self.moved.notify_all();
    }

    /// The ACK thread: the node's answers in, ACKs out, until the pipeline ends.
    pub fn run_acks(&self, mut reader: PipelineReader) {
        loop {
            let (id, outcome) = match reader.next_outcome() {
                Ok(answer) => answer,
                Err(e) => {
                    let s = self.lock();
                    let (idle, closed) = (s.entries.is_empty(), s.closed);
                    drop(s);
                    match e {
                        // Nothing in flight: a quiet primary, not a silent node.
                        ClientError::Timeout { .. } if idle && !closed => continue,
                        // The session is ending and the node is done with the pipeline.
                        _ if closed => return,
                        e => return self.fail(e.into()),
                    }
                }
            };
            if let Err(e) = self.committed(id, &outcome) {
                return self.fail(e);
            }
        }
    }

    /// The node answered append `id`.
    fn committed(&self, id: RequestId, outcome: &Outcome) -> Result<(), SessionError> {
        // Anything but a commit ends the session, whichever append it answers: a node
        // that stops being the primary answers its queued appends at once and the one
        // in flight later, so such answers may come out of request order.
        if !matches!(outcome, Outcome::Appended(_)) {
            return Err(SessionError::NotCommitted {
                id,
                outcome: describe(outcome),
            });
        }
        let mut s = self.lock();
        // Commits come in request order: the node commits a connection's appends in
        // the order it received them.
        let Some(Entry::Append {
            id: expected,
            ack,
            transactions,
            bytes,
            oldest,
            last_gtid,
        }) = s.entries.pop_front()
        else {
            return Err(SessionError::NotCommitted {
                id,
                outcome: "committed, but nothing was in flight".into(),
            });
        };
        if expected != id {
            return Err(SessionError::NotCommitted {
                id,
                outcome: format!("committed out of order (append {expected} was next)"),
            });
        }
        s.appends -= 1;
        s.bytes -= bytes;
        // Held transactions queued behind this append are committed now too.
        let mut at = ack;
        while let Some(Entry::Held { .. }) = s.entries.front() {
            if let Some(Entry::Held { ack }) = s.entries.pop_front() {
                at = Some(ack);
            }
        }
        // What waited for this append goes out now.
        if !s.closed && s.failure.is_none() {
            self.send(&mut s)?;
        }
        drop(s);
        self.moved.notify_all();
        self.metrics.committed(
            transactions,
            bytes as u64,
            u64::try_from(oldest.elapsed().as_micros()).unwrap_or(u64::MAX),
            last_gtid.map(|g| g.to_string()),
        );
        match at {
            Some(at) => self.ack(&at),
            None => Ok(()),
        }
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Appended(a) => format!("committed at {}", a.first_lsn),
        Outcome::InDoubt { reason, .. } => format!("in doubt: {reason}"),
        Outcome::NotPrimary { epoch, primary } => format!(
            "this node is no longer the primary (epoch {epoch}, primary {})",
            primary.as_deref().unwrap_or("unknown")
        ),
        Outcome::Refused { code, message } => format!("refused ({code}): {message}"),
    }
}
