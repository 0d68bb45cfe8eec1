//! Tests of `lockstep binlog export`, through a scripted stream: positions, rotation,
//! retention, failures.

use super::*;
use crate::client::ClientError;
use crate::front::binlog_file::fixture::{kept, primary, read_file};
use crate::front::cursor::CursorError;
use crate::front::events::{CHECKSUM_BYTES, HEADER_BYTES, Header, kind};
use crate::front::record::{Body, FrontRecord};
use crate::front::record::{Format, Piece};
use crate::log::Record;
use crate::wire::ErrorCode;

/// A stream in memory, read as a node answers: a bounded number of records per
/// read, and an error below the first retained LSN.
struct Table {
    records: Vec<Vec<u8>>,
    first: u64,
    per_read: u64,
    reads: u64,
    /// After this many reads, retention moves the first LSN here.
    delete: Option<(u64, u64)>,
    /// These reads (counted from 1) lose their connection.
    disconnects: Vec<u64>,
}

impl RecordSource for Table {
    fn commit_lsn(&mut self) -> Result<u64, ClientError> {
        Ok(self.records.len() as u64)
    }

    fn read(&mut self, from: u64, max: u32) -> Result<(u64, Vec<Record>), ClientError> {
        self.reads += 1;
        if self.disconnects.contains(&self.reads) {
            return Err(ClientError::Disconnected {
                addr: "table".into(),
                op: "read",
                reason: "connection reset".into(),
            });
        }
        if let Some((after, first)) = self.delete
            && self.reads > after
        {
            self.first = first;
        }
        let commit = self.records.len() as u64;
        if from < self.first {
            // As a node answers a read below its retained range.
            return Err(ClientError::Server {
                addr: "table".into(),
                op: "read",
                code: ErrorCode::OutOfRange,
                message: format!(
                    "lsn {from} is outside the log's range {}..={commit}",
                    self.first
                ),
            });
        }
        let to = commit.min(from + u64::from(max).min(self.per_read) - 1);
        let records = (from..=to)
            .map(|lsn| Record {
                lsn,
                epoch: 1,
                payload: self.records[lsn as usize - 1].clone(),
            })
            .collect();
        Ok((commit, records))
    }
}

/// Writes a stream as a front would, and remembers its transactions in order.
struct Script {
    fde: Vec<u8>,
    bodies: Vec<Vec<u8>>,
    records: Vec<Vec<u8>>,
    position: GtidState,
    order: Vec<(Gtid, Vec<u8>)>,
}

impl Script {
    fn new() -> Script {
        let (fde, transactions) = primary();
        Script {
            fde,
            bodies: transactions.into_iter().map(|(_, e)| e).collect(),
            records: Vec::new(),
            position: GtidState::new(),
            order: Vec::new(),
        }
    }

    fn format(&mut self) {
        self.records.push(
            FrontRecord {
                position: self.position.clone(),
                body: Body::Format(Format {
                    upstream: "db:3306".into(),
                    server_id: 1,
                    server_version: "10.11.19-MariaDB-log".into(),
                    file: "binlog.000001".into(),
                    pos: 4,
                    format_event: self.fde.clone(),
                }),
            }
            .encode(),
        );
    }

    fn foreign(&mut self) {
        self.records.push(b"an append by another writer".to_vec());
    }

    /// The next transaction of `domain` by `server`: one of the fixture's, its
    /// GTID event changed to say so.
    fn next(&self, domain: u32, server: u32) -> (Gtid, Vec<u8>) {
        let seq = self.position.get(domain).map_or(0, |g| g.seq) + 1;
        let gtid = Gtid {
            domain,
            server,
            seq,
        };
        let mut events = self.bodies[self.order.len() % self.bodies.len()].clone();
        assert_eq!(events[4], kind::GTID);
        let size = Header::parse(&events).unwrap().size as usize;
        events[5..9].copy_from_slice(&server.to_le_bytes());
        events[HEADER_BYTES..HEADER_BYTES + 8].copy_from_slice(&seq.to_le_bytes());
        events[HEADER_BYTES + 8..HEADER_BYTES + 12].copy_from_slice(&domain.to_le_bytes());
        let sum = crc32fast::hash(&events[..size - CHECKSUM_BYTES]);
        events[size - CHECKSUM_BYTES..size].copy_from_slice(&sum.to_le_bytes());
        (gtid, events)
    }

    /// `written` of the `pieces` pieces of a transaction.
    fn pieces(&mut self, gtid: Gtid, events: &[u8], pieces: usize, written: usize) {
        let mut after = self.position.clone();
        after.advance(gtid).unwrap();
        let step = events.len().div_ceil(pieces);
        for (i, chunk) in events.chunks(step).enumerate().take(written) {
            let last = (i + 1) * step >= events.len();
            self.records.push(
                FrontRecord {
                    position: if last {
                        after.clone()
                    } else {
                        self.position.clone()
                    },
                    body: Body::Piece(Piece {
                        first: i == 0,
                        last,
                        gtid,
                        end_pos: 1000,
                        file: "binlog.000001".into(),
                        events: chunk.to_vec(),
                    }),
                }
                .encode(),
            );
        }
    }

    fn tx(&mut self, domain: u32, server: u32, pieces: usize) -> Gtid {
        let (gtid, events) = self.next(domain, server);
        self.pieces(gtid, &events, pieces, pieces);
        self.position.advance(gtid).unwrap();
        self.order.push((gtid, events));
        gtid
    }

    /// The first pieces of the next transaction, and then the session ends.
    fn abandoned(&mut self, domain: u32, server: u32) {
        let (gtid, events) = self.next(domain, server);
        self.pieces(gtid, &events, 4, 2);
    }

    fn table(&self) -> Table {
        Table {
            records: self.records.clone(),
            first: 1,
            per_read: 7,
            reads: 0,
            delete: None,
            disconnects: Vec::new(),
        }
    }
}

fn run(table: &mut Table, from: Option<&str>, file_bytes: u64) -> Result<Export, ExportError> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    let opts = ExportOptions {
        out: out.clone(),
        from: from.map(|p| GtidState::parse(p).unwrap()),
        file_bytes,
    };
    let result = export(table, &opts);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "export")
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    match result {
        Ok(summary) => Ok(Export::read(&out, summary, dir)),
        Err(e) => {
            assert!(!out.exists(), "a failed export left {}", out.display());
            Err(e)
        }
    }
}

/// An export's files, taken apart.
struct Export {
    summary: Summary,
    files: Vec<(String, u64, crate::front::binlog_file::fixture::FileView)>,
    _dir: tempfile::TempDir,
}

impl Export {
    fn read(out: &Path, summary: Summary, dir: tempfile::TempDir) -> Export {
        let index = fs::read_to_string(out.join(INDEX_NAME)).unwrap();
        let names: Vec<String> = index
            .lines()
            .map(|l| l.strip_prefix("./").unwrap().to_string())
            .collect();
        assert_eq!(names, summary.files);
        let mut on_disk: Vec<String> = fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != INDEX_NAME)
            .collect();
        on_disk.sort();
        assert_eq!(on_disk, names, "the index lists every file");
        let mut files = Vec::new();
        let mut bytes = 0;
        for (i, name) in names.iter().enumerate() {
            assert_eq!(*name, format!("lockstep-bin.{:06}", i + 1));
            let data = fs::read(out.join(name)).unwrap();
            bytes += data.len() as u64;
            let view = read_file(&data);
            match names.get(i + 1) {
                Some(next) => assert_eq!(&view.rotate.as_ref().unwrap().0, next),
                None => assert!(view.rotate.is_none(), "the last file rotates"),
            }
            files.push((name.clone(), data.len() as u64, view));
        }
        assert_eq!(bytes, summary.bytes);
        Export {
            summary,
            files,
            _dir: dir,
        }
    }

    /// Every transaction of every file, in order; each file's GTID_LIST is the
    /// position after the transactions before it.
    fn transactions(&self) -> Vec<(Gtid, Vec<u8>)> {
        let mut position = self.files[0].2.start.clone();
        let mut out = Vec::new();
        for (name, _, view) in &self.files {
            assert_eq!(view.start, position, "{name}");
            for (gtid, _, events) in &view.transactions {
                position.advance(*gtid).unwrap();
                out.push((*gtid, events.clone()));
            }
        }
        assert_eq!(position.to_string(), self.summary.end_position);
        out
    }
}

fn assert_same(got: &[(Gtid, Vec<u8>)], want: &[&(Gtid, Vec<u8>)], what: &str) {
    let gtids = |v: Vec<Gtid>| v.iter().map(Gtid::to_string).collect::<Vec<_>>();
    assert_eq!(
        gtids(got.iter().map(|t| t.0).collect()),
        gtids(want.iter().map(|t| t.0).collect()),
        "{what}"
    );
    for ((gtid, a), (_, b)) in got.iter().zip(want) {
        assert_eq!(kept(a), kept(b), "{what}: the events of {gtid}");
    }
}

#[test]
fn a_file_rotates_at_the_first_transaction_boundary_past_file_bytes() {
    let mut s = Script::new();
    s.format();
    for i in 0..40 {
        s.tx(0, 1, if i % 7 == 3 { 3 } else { 1 });
    }
    let file_bytes = 3000;
    let e = run(&mut s.table(), None, file_bytes).unwrap();
    assert!(e.files.len() >= 3, "{} files", e.files.len());
    let want: Vec<_> = s.order.iter().collect();
    assert_same(&e.transactions(), &want, "all");
    for (name, len, view) in &e.files {
        let (_, last_start, _) = view.transactions.last().unwrap();
        match &view.rotate {
            Some((_, rotate_at)) => {
                // Full once its last transaction was written, not before.
                assert!(*rotate_at >= file_bytes, "{name} rotated at {rotate_at}");
                assert!(*last_start < file_bytes, "{name} went on past {file_bytes}");
            }
            None => assert!(*len > 0),
        }
    }
    assert_eq!(e.summary.transactions, 40);
    assert_eq!(e.summary.start_position, "");
    assert_eq!(e.summary.end_position, "0-1-40");
    assert_eq!(e.summary.gtids[&0], ("0-1-1".into(), "0-1-40".into()));

    // Large enough for everything: one file.
    let e = run(&mut s.table(), None, 1 << 30).unwrap();
    assert_eq!(e.files.len(), 1);
    assert_same(&e.transactions(), &want, "one file");
}

/// Two domains interleaved, transactions of several pieces, a transaction a
/// session abandoned and the next resent, records of another writer.
fn mixed() -> Script {
    let mut s = Script::new();
    s.format();
    s.tx(0, 1, 1);
    s.tx(0, 1, 2);
    s.tx(1, 2, 1);
    s.foreign();
    s.tx(0, 1, 3);
    s.tx(1, 2, 2);
    s.abandoned(0, 1);
    s.format();
    s.tx(0, 1, 4);
    s.tx(1, 2, 1);
    s.foreign();
    s.tx(0, 1, 1);
    s.tx(1, 2, 3);
    s.tx(0, 1, 1);
    s.format();
    s.tx(1, 2, 1);
    s
}

#[test]
fn from_gtid_exports_what_a_replica_connecting_with_it_receives() {
    let s = mixed();
    let max = |d| s.position.get(d).unwrap().seq;
    // Every position a replica could hold: each domain at any of its transactions,
    // or before its first.
    for seq0 in 0..=max(0) {
        for seq1 in 0..=max(1) {
            let mut parts = Vec::new();
            if seq0 > 0 {
                parts.push(format!("0-1-{seq0}"));
            }
            if seq1 > 0 {
                parts.push(format!("1-2-{seq1}"));
            }
            let pos = parts.join(",");
            let want: Vec<_> = s
                .order
                .iter()
                .filter(|(g, _)| g.seq > if g.domain == 0 { seq0 } else { seq1 })
                .collect();
            let e = run(&mut s.table(), Some(&pos), 2000)
                .unwrap_or_else(|err| panic!("--from-gtid {pos:?}: {err}"));
            assert_eq!(e.files[0].2.start.to_string(), pos, "the first GTID_LIST");
            assert_same(&e.transactions(), &want, &format!("--from-gtid {pos:?}"));
            assert_eq!(e.summary.transactions as usize, want.len());
        }
    }
    // Without a position: everything, with the abandoned pieces and the other
    // writer's records counted.
    let e = run(&mut s.table(), None, 2000).unwrap();
    assert_same(
        &e.transactions(),
        &s.order.iter().collect::<Vec<_>>(),
        "all",
    );
    // The assembler counts the abandoned transaction once or by its pieces.
    assert!((1..=2).contains(&e.summary.skipped_pieces), "{}", e.summary);
    assert_eq!(e.summary.foreign_records, 2);
}

#[test]
fn positions_the_stream_cannot_serve_are_refused() {
    let s = mixed();
    // (position, why it is refused)
    type Why = fn(&ExportError) -> bool;
    let table: [(&str, Why); 4] = [
        ("0-1-99", |e| {
            matches!(e, ExportError::Cursor(CursorError::Beyond { .. }))
        }),
        ("0-1-2,7-1-1", |e| {
            matches!(e, ExportError::Cursor(CursorError::Beyond { .. }))
        }),
        ("0-5-2", |e| {
            matches!(e, ExportError::Cursor(CursorError::OtherHistory { .. }))
        }),
        ("1-1-5", |e| {
            matches!(e, ExportError::Cursor(CursorError::OtherHistory { .. }))
        }),
    ];
    for (pos, want) in table {
        match run(&mut s.table(), Some(pos), 2000) {
            Err(e) => assert!(want(&e), "--from-gtid {pos}: {e}"),
            Ok(_) => panic!("--from-gtid {pos} was exported"),
        }
    }
}

#[test]
fn retention_is_told_apart_from_what_is_still_there() {
    let s = mixed();
    // Retention keeps the stream from the second session's format record on.
    let second = s
        .records
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            matches!(
                FrontRecord::decode(r),
                Ok(FrontRecord {
                    body: Body::Format(_),
                    ..
                })
            )
        })
        .nth(1)
        .map(|(i, _)| i as u64 + 1)
        .unwrap();
    let at_second = |first| {
        let mut t = s.table();
        t.first = first;
        t
    };
    // The first retained record starts a session: everything from it.
    let e = run(&mut at_second(second), None, 2000).unwrap();
    let got = e.transactions();
    assert_eq!(got[0].0.to_string(), "0-1-4");
    assert_eq!(e.summary.start_position, "0-1-3,1-2-2");
    // A position at or after the first retained one: served.
    let e = run(&mut at_second(second), Some("0-1-4,1-2-2"), 2000).unwrap();
    assert_eq!(e.transactions()[0].0.to_string(), "1-2-3");
    // Before it: transactions are gone.
    for pos in ["0-1-2,1-2-2", "0-1-3", ""] {
        match run(&mut at_second(second), Some(pos), 2000) {
            Err(ExportError::Cursor(CursorError::Retained { .. })) => {}
            other => panic!("--from-gtid {pos:?}: {:?}", other.map(|e| e.summary)),
        }
    }
    // The first retained record is inside a session: its format record is gone.
    match run(&mut at_second(second + 1), None, 2000) {
        Err(ExportError::Cursor(CursorError::NoFormat { detail })) => {
            assert!(detail.contains("--from-gtid"), "{detail}")
        }
        other => panic!("{:?}", other.map(|e| e.summary)),
    }
    match run(&mut at_second(second + 3), Some("0-1-6,1-2-3"), 2000) {
        Err(ExportError::Cursor(CursorError::NoFormat { .. })) => {}
        other => panic!("{:?}", other.map(|e| e.summary)),
    }
    // Retention overtakes the export while it reads.
    let mut t = s.table();
    // Reads: the search for the first retained, the first record, then the
    // export's own; the second of those fails.
    t.delete = Some((3, 20));
    assert!(matches!(
        run(&mut t, None, 2000),
        Err(ExportError::Cursor(CursorError::Deleted { .. }))
    ));
}

#[test]
fn a_failed_export_leaves_nothing_under_its_name() {
    // A damaged event.
    let mut s = Script::new();
    s.format();
    s.tx(0, 1, 1);
    let (gtid, mut events) = s.next(0, 1);
    let last = events.len() - 1;
    events[last] ^= 1;
    s.pieces(gtid, &events, 1, 1);
    match run(&mut s.table(), None, 2000) {
        Err(ExportError::Binlog(BinlogError::Event { gtid: g, .. })) => assert_eq!(g, gtid),
        other => panic!("{:?}", other.map(|e| e.summary)),
    }
    // Nothing to export; only other writers.
    let mut empty = Script::new();
    assert!(matches!(
        run(&mut empty.table(), None, 2000),
        Err(ExportError::Cursor(CursorError::Empty))
    ));
    empty.foreign();
    assert!(matches!(
        run(&mut empty.table(), None, 2000),
        Err(ExportError::Cursor(CursorError::NoFront { .. }))
    ));
    // An output directory in use; an empty one is taken.
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ExportOptions {
        out: dir.path().join("out"),
        from: None,
        file_bytes: 2000,
    };
    fs::create_dir(&opts.out).unwrap();
    fs::write(opts.out.join("x"), b"x").unwrap();
    assert!(matches!(
        export(&mut mixed().table(), &opts),
        Err(ExportError::Usage(_))
    ));
    opts.out = dir.path().join("empty");
    fs::create_dir(&opts.out).unwrap();
    let summary = export(&mut mixed().table(), &opts).unwrap();
    assert!(opts.out.join(INDEX_NAME).exists(), "{summary}");
}

#[test]
fn a_read_whose_connection_failed_is_tried_again_a_bounded_number_of_times() {
    let s = mixed();
    let mut t = s.table();
    t.disconnects = vec![1, 4, 5];
    let e = run(&mut t, Some("0-1-2"), 2000).unwrap();
    let want: Vec<_> = s
        .order
        .iter()
        .filter(|(g, _)| g.domain != 0 || g.seq > 2)
        .collect();
    assert_same(&e.transactions(), &want, "with lost connections");
    // Three failures of one read in a row end the export.
    let mut t = s.table();
    t.disconnects = vec![4, 5, 6];
    assert!(matches!(
        run(&mut t, None, 2000),
        Err(ExportError::Cursor(CursorError::Read {
            source: ClientError::Disconnected { .. },
            ..
        }))
    ));
}

#[test]
fn a_session_with_another_format_description_starts_a_new_file() {
    let mut s = Script::new();
    s.format();
    s.tx(0, 1, 1);
    s.tx(0, 1, 2);
    // The primary restarted as another version: its format description differs.
    let version = HEADER_BYTES + 2;
    assert_eq!(&s.fde[version..version + 5], b"10.11");
    s.fde[version + 3..version + 5].copy_from_slice(b"99");
    let size = s.fde.len();
    let sum = crc32fast::hash(&s.fde[..size - CHECKSUM_BYTES]);
    s.fde[size - CHECKSUM_BYTES..].copy_from_slice(&sum.to_le_bytes());
    s.format();
    s.tx(0, 1, 1);
    // The same again: no new file.
    s.format();
    s.tx(0, 1, 1);
    let e = run(&mut s.table(), None, 1 << 30).unwrap();
    let files: Vec<(&str, Vec<String>)> = e
        .files
        .iter()
        .map(|(_, _, v)| {
            let gtids = v.transactions.iter().map(|t| t.0.to_string()).collect();
            (&v.server_version[..5], gtids)
        })
        .collect();
    assert_eq!(
        files,
        [
            ("10.11", vec!["0-1-1".to_string(), "0-1-2".to_string()]),
            ("10.99", vec!["0-1-3".to_string(), "0-1-4".to_string()]),
        ]
    );
    assert_same(
        &e.transactions(),
        &s.order.iter().collect::<Vec<_>>(),
        "all",
    );
}

#[test]
fn an_export_of_nothing_says_where_the_stream_stands() {
    let s = mixed();
    let end = s.position.to_string();
    let e = run(&mut s.table(), Some(&end), 2000).unwrap();
    assert_eq!(e.files.len(), 1);
    assert!(e.transactions().is_empty());
    assert_eq!(e.files[0].2.start.to_string(), end);
    assert_eq!(e.summary.end_position, end);
}
