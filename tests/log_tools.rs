//! `lockstep log verify` and `lockstep log dump`, run as the real binary against logs
//! written by `Log` and then damaged the way disks and operators damage them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use lockstep::log::record::{self, FLAG_BATCH_START};
use lockstep::log::segment::{self, Mode};
use lockstep::log::{Log, LogError, LogOptions};
use lockstep_sys::uring::{Ring, RingOptions};
use serde_json::Value;

/// Records written by [`write_log`].
const RECORDS: u64 = 3000;

/// Epochs by LSN: not dense, and changing in the middle of segments.
fn epoch_of(lsn: u64) -> u64 {
    match lsn {
        ..=1200 => 1,
        1201..=2500 => 2,
        _ => 5,
    }
}

/// Payloads of varying sizes (1..3000 bytes); every fourth is text.
fn payload(lsn: u64) -> Vec<u8> {
    let n = 1 + (lsn * 7919 % 2999) as usize;
    if lsn.is_multiple_of(4) {
        format!("record {lsn}; ").bytes().cycle().take(n).collect()
    } else {
        (0..n).map(|i| (lsn as usize * 31 + i) as u8).collect()
    }
}

/// Writes `RECORDS` records across several 2 MiB segments and returns their directory.
fn write_log() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = Ring::new(RingOptions::default()).unwrap();
    let opts = LogOptions {
        segment_bytes: 2 << 20,
        batch_bytes: 64 << 10,
        ..Default::default()
    };
    let mut log = Log::open(dir.path(), opts, 1).unwrap();
    for lsn in 1..=RECORDS {
        let got = match log.append(epoch_of(lsn), &payload(lsn)) {
            Err(LogError::Full) => {
                log.sync(&mut ring).unwrap();
                log.append(epoch_of(lsn), &payload(lsn))
            }
            other => other,
        };
        assert_eq!(got.unwrap(), lsn);
        // Let batches of different sizes form: one write in flight, the next growing.
        if lsn % 7 == 0 {
            log.flush(&mut ring).unwrap();
        }
        if lsn % 50 == 0 {
            log.sync(&mut ring).unwrap();
        }
    }
    assert_eq!(log.sync(&mut ring).unwrap(), RECORDS);
    drop(log);
    assert!(segments(dir.path()).len() >= 3, "want at least 3 segments");
    dir
}

fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    segment::list(dir).unwrap()
}

/// (lsn, offset, batch start) of every record of a segment, by the log's own scan.
fn records_of(first_lsn: u64, path: &Path) -> Vec<(u64, u64, bool)> {
    let data = std::fs::read(path).unwrap();
    let mut v = Vec::new();
    segment::scan(&data, first_lsn, None, Mode::Tail, |r| {
        v.push((r.header.lsn, r.offset, r.header.batch_start()))
    });
    v
}

fn flip_bit(path: &Path, at: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[at as usize] ^= 0x10;
    std::fs::write(path, data).unwrap();
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn lockstep(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn verify_json(dir: &Path) -> (i32, Value, String) {
    let r = lockstep(&["log", "verify", "--json", dir.to_str().unwrap()]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    (r.code, v, r.stderr)
}

fn dump_json(dir: &Path, from: u64, count: u64) -> (Run, Vec<Value>) {
    let r = lockstep(&[
        "log",
        "dump",
        dir.to_str().unwrap(),
        "--from",
        &from.to_string(),
        "--count",
        &count.to_string(),
        "--json",
    ]);
    let lines = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (r, lines)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn notes_of_kind<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == kind)
        .collect()
}

#[test]
fn verify_sound_multi_segment_log() {
    let dir = write_log();
    let (code, v, stderr) = verify_json(dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(v["sound"], true);
    assert_eq!(v["records"], RECORDS);
    assert_eq!(v["first_lsn"], 1);
    assert_eq!(v["last_lsn"], RECORDS);
    let payload_bytes: usize = (1..=RECORDS).map(|l| payload(l).len()).sum();
    assert_eq!(v["payload_bytes"], payload_bytes);
    assert_eq!(
        v["segments"].as_array().unwrap().len(),
        segments(dir.path()).len()
    );
    let epochs: Vec<(u64, u64, u64)> = v["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let n = |k: &str| e[k].as_u64().unwrap();
            (n("epoch"), n("first_lsn"), n("records"))
        })
        .collect();
    assert_eq!(epochs, vec![(1, 1, 1200), (2, 1201, 1300), (5, 2501, 500)]);
    assert!(v["problems"].as_array().unwrap().is_empty());
    assert!(notes_of_kind(&v, "torn_tail").is_empty());

    let r = lockstep(&["log", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    for want in [
        format!("records        {RECORDS}"),
        "first lsn      1".to_string(),
        format!("last lsn       {RECORDS}"),
        "epoch 2       from lsn 1201, 1300 records".to_string(),
        "result         sound".to_string(),
    ] {
        assert!(r.stdout.contains(&want), "no {want:?} in\n{}", r.stdout);
    }
}

#[test]
fn verify_reports_bit_flip_in_sealed_segment_with_file_and_offset() {
    let dir = write_log();
    let (first, path) = segments(dir.path())[0].clone();
    let recs = records_of(first, &path);
    let (lsn, offset, _) = recs[recs.len() / 2];
    // A payload byte of the record: only the checksum can catch it.
    flip_bit(&path, offset + 32 + (payload(lsn).len() as u64) / 2);

    let r = lockstep(&["log", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let want = format!("{} at offset {offset}: checksum mismatch", path.display());
    assert!(r.stderr.contains(&want), "no {want:?} in\n{}", r.stderr);
    assert!(r.stdout.contains("CORRUPT"), "{}", r.stdout);

    let (code, v, _) = verify_json(dir.path());
    assert_eq!(code, 1);
    assert_eq!(v["sound"], false);
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["kind"], "damaged_record");
    assert_eq!(problems[0]["offset"], offset);
    assert_eq!(problems[0]["file"], path.to_str().unwrap());

    // Dump hands out the valid records before the damage, then fails the same way.
    let (r, lines) = dump_json(dir.path(), lsn - 2, 10);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(&want), "{}", r.stderr);
    let lsns: Vec<u64> = lines.iter().map(|l| l["lsn"].as_u64().unwrap()).collect();
    assert_eq!(lsns, vec![lsn - 2, lsn - 1]);
}

#[test]
fn verify_reports_torn_tail_as_sound_with_note() {
    let dir = write_log();
    let (first, path) = segments(dir.path()).pop().unwrap();
    let recs = records_of(first, &path);
    let &(lsn, offset, _) = recs.last().unwrap();
    assert_eq!(lsn, RECORDS);
    flip_bit(&path, offset + 32);

    let r = lockstep(&["log", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let want = format!("{} at offset {offset}: torn tail", path.display());
    assert!(r.stdout.contains(&want), "no {want:?} in\n{}", r.stdout);
    assert!(r.stdout.contains("recovery will cut"), "{}", r.stdout);
    assert!(r.stdout.contains("result         sound"), "{}", r.stdout);

    let (code, v, _) = verify_json(dir.path());
    assert_eq!(code, 0);
    let torn = notes_of_kind(&v, "torn_tail");
    assert_eq!(torn.len(), 1, "{v}");
    assert_eq!(torn[0]["offset"], offset);
    assert_eq!(torn[0]["file"], path.to_str().unwrap());
    // The torn record is not part of the log; the rest of its batch is.
    assert_eq!(v["last_lsn"], RECORDS - 1);
    assert_eq!(v["records"], RECORDS - 1);
}

#[test]
fn verify_reports_gap_of_deleted_middle_segment() {
    let dir = write_log();
    let segs = segments(dir.path());
    std::fs::remove_file(&segs[1].1).unwrap();
    let r = lockstep(&["log", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let want = format!("gap: lsns {}..={} are missing", segs[1].0, segs[2].0 - 1);
    assert!(r.stderr.contains(&want), "no {want:?} in\n{}", r.stderr);
    assert!(
        r.stderr.contains(&segs[0].1.display().to_string()),
        "{}",
        r.stderr
    );
    // Dumping across the gap fails too instead of skipping it.
    let (r, lines) = dump_json(dir.path(), segs[1].0 - 1, 5);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(&want), "{}", r.stderr);
    assert_eq!(lines.len(), 1);
}

#[test]
fn verify_checks_epochs_across_segments() {
    // The epoch of the first record of a segment must not fall below the last epoch of
    // the segment before; only a scan of the whole log can see that.
    let dir = write_log();
    let segs = segments(dir.path());
    let (first, path) = &segs[segs.len() - 1];
    assert!(epoch_of(*first - 1) > 1);
    let recs = records_of(*first, path);
    assert_eq!(recs[0].1, 0);
    let mut data = std::fs::read(path).unwrap();
    let p = payload(*first);
    let rec = &mut data[..record::record_bytes(p.len())];
    record::encode(rec, FLAG_BATCH_START, 1, *first, &p);
    std::fs::write(path, data).unwrap();

    let r = lockstep(&["log", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let want = format!(
        "{} at offset 0: epoch 1 after epoch {}",
        path.display(),
        epoch_of(*first - 1)
    );
    assert!(r.stderr.contains(&want), "no {want:?} in\n{}", r.stderr);
}

#[test]
fn verify_reports_zeroed_batch_start_before_later_batches() {
    // A zeroed batch start in the newest segment looks like the end of the log, but the
    // complete batches after it show that the write had completed: corruption, not a
    // torn tail.
    let dir = write_log();
    let (first, path) = segments(dir.path()).pop().unwrap();
    let starts: Vec<u64> = records_of(first, &path)
        .into_iter()
        .filter(|r| r.2)
        .map(|r| r.1)
        .collect();
    assert!(starts.len() >= 3, "{starts:?}");
    let lost = starts[starts.len() - 3];
    let mut data = std::fs::read(&path).unwrap();
    data[lost as usize..lost as usize + 4096].fill(0);
    std::fs::write(&path, data).unwrap();

    let r = lockstep(&["log", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let want = format!(
        "{} at offset {lost}: zeroed block before later batches",
        path.display()
    );
    assert!(r.stderr.contains(&want), "no {want:?} in\n{}", r.stderr);
}

#[test]
fn unused_rollover_segment_is_a_note_unless_misnamed() {
    let dir = write_log();
    let seg_bytes = std::fs::metadata(&segments(dir.path())[0].1).unwrap().len();
    let unused = dir.path().join(segment::file_name(RECORDS + 1));
    std::fs::write(&unused, vec![0u8; seg_bytes as usize]).unwrap();
    let (code, v, stderr) = verify_json(dir.path());
    assert_eq!(code, 0, "{stderr}");
    let notes = notes_of_kind(&v, "unused_segment");
    assert_eq!(notes.len(), 1, "{v}");
    assert_eq!(notes[0]["file"], unused.to_str().unwrap());
    assert_eq!(v["last_lsn"], RECORDS);

    // A rollover happens only after the last write into the previous segment completed,
    // so damage in that write is corruption, not a torn tail.
    let (first, path) = segments(dir.path())[segments(dir.path()).len() - 2].clone();
    let &(_, offset, _) = records_of(first, &path).last().unwrap();
    flip_bit(&path, offset + 32);
    let r = lockstep(&["log", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let want = format!("{} at offset {offset}: checksum mismatch", path.display());
    assert!(r.stderr.contains(&want), "{}", r.stderr);
    flip_bit(&path, offset + 32);

    // The same empty segment two LSNs further on hides a gap: not a rollover.
    std::fs::rename(&unused, dir.path().join(segment::file_name(RECORDS + 3))).unwrap();
    let r = lockstep(&["log", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let want = format!("gap: lsns {}..={} are missing", RECORDS + 1, RECORDS + 2);
    assert!(r.stderr.contains(&want), "{}", r.stderr);
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

#[test]
fn inspection_never_modifies_the_log() {
    let dir = write_log();
    // Give recovery something to repair: a torn tail, besides the spare segment that
    // opening a log removes.
    let (first, path) = segments(dir.path()).pop().unwrap();
    let &(_, offset, _) = records_of(first, &path).last().unwrap();
    flip_bit(&path, offset + 32);
    let before = snapshot(dir.path());
    assert!(
        before.contains_key(segment::SPARE_NAME),
        "{:?}",
        before.keys()
    );

    let d = dir.path().to_str().unwrap();
    assert_eq!(lockstep(&["log", "verify", d]).code, 0);
    assert_eq!(lockstep(&["log", "verify", "--json", "-v", d]).code, 0);
    assert_eq!(lockstep(&["log", "dump", d, "--count", "100000"]).code, 0);
    assert_eq!(
        lockstep(&["log", "dump", d, "--from", "2990", "--json"]).code,
        0
    );
    let (code, v, _) = verify_json(dir.path());
    assert_eq!(code, 0);
    assert_eq!(notes_of_kind(&v, "torn_tail").len(), 1);
    assert_eq!(notes_of_kind(&v, "stale_spare").len(), 1);

    let after = snapshot(dir.path());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &before {
        assert!(after[name] == *bytes, "{name} changed");
    }
}

#[test]
fn dump_returns_exactly_the_requested_records() {
    let dir = write_log();
    // Across the boundary between the first two segments.
    let boundary = segments(dir.path())[1].0;
    let from = boundary - 3;
    let (r, lines) = dump_json(dir.path(), from, 7);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(lines.len(), 7);
    for (l, lsn) in lines.iter().zip(from..) {
        assert_eq!(l["lsn"], lsn);
        assert_eq!(l["epoch"], epoch_of(lsn));
        assert_eq!(l["len"], payload(lsn).len());
        assert_eq!(l["payload_hex"], hex(&payload(lsn)), "lsn {lsn}");
    }

    // Human form: one line per record; text shown as text, cut with an ellipsis.
    let d = dir.path().to_str().unwrap();
    let r = lockstep(&["log", "dump", d, "--from", "8", "--count", "2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    let p = payload(8);
    assert!(p.len() > 64);
    let want = format!("lsn=8 epoch=1 len={} crc32c=", p.len());
    assert!(lines[0].starts_with(&want), "{}", lines[0]);
    let text = String::from_utf8(p[..64].to_vec()).unwrap();
    assert!(lines[0].ends_with(&format!(" \"{text}\"…")), "{}", lines[0]);
    assert!(lines[1].starts_with("lsn=9 epoch=1 "), "{}", lines[1]);
    let r = lockstep(&["log", "dump", d, "--from", "8", "--count", "1", "--full"]);
    let text = String::from_utf8(p).unwrap();
    assert!(
        r.stdout.trim_end().ends_with(&format!(" \"{text}\"")),
        "{}",
        r.stdout
    );

    // The end of the log and the default start.
    let (_, lines) = dump_json(dir.path(), RECORDS - 1, 10);
    let lsns: Vec<u64> = lines.iter().map(|l| l["lsn"].as_u64().unwrap()).collect();
    assert_eq!(lsns, vec![RECORDS - 1, RECORDS]);
    let r = lockstep(&["log", "dump", d, "--count", "2", "--json"]);
    let lsns: Vec<u64> = r
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["lsn"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(lsns, vec![1, 2]);
}

#[test]
fn out_of_range_and_usage_errors_exit_2() {
    let dir = write_log();
    let d = dir.path().to_str().unwrap();
    let r = lockstep(&["log", "dump", d, "--from", &(RECORDS + 1).to_string()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stdout.is_empty());
    let want = format!("beyond the last lsn {RECORDS} of the log (range 1..={RECORDS})");
    assert!(r.stderr.contains(&want), "{}", r.stderr);

    // Retention removed the oldest segment: the log is sound and starts later.
    let segs = segments(dir.path());
    std::fs::remove_file(&segs[0].1).unwrap();
    let (code, v, stderr) = verify_json(dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(v["first_lsn"], segs[1].0);
    assert_eq!(v["records"], RECORDS - segs[1].0 + 1);
    let r = lockstep(&["log", "dump", d, "--from", "1"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let want = format!("lsn 1 is before the first retained lsn {}", segs[1].0);
    assert!(r.stderr.contains(&want), "{}", r.stderr);

    let missing = dir.path().join("no-such-dir");
    let r = lockstep(&["log", "verify", missing.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no-such-dir"), "{}", r.stderr);
    let empty = tempfile::tempdir().unwrap();
    let r = lockstep(&["log", "verify", empty.path().to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not a log directory"), "{}", r.stderr);
    assert_eq!(lockstep(&["log", "dump", d, "--from", "x"]).code, 2);
    assert_eq!(lockstep(&["log"]).code, 2);
}
