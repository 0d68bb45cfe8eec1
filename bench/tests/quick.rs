//! The tiny size of `lockstep-bench log`, run by the test suite so the benchmark cannot
//! rot. It checks what the benchmark promises: a table with every floor and series and
//! positive numbers, goal lines, JSON with the same series, and a kept log that opens
//! cleanly and holds exactly the records the report says were written, with the payloads
//! the writers wrote.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use lockstep::log::{Log, LogOptions, segment};
use serde_json::Value;

const FLOORS: [&str; 2] = ["floor 4 KiB", "floor 8 KiB"];
const SERIES: [(&str, u64, u64); 6] = [
    ("1 × 256 B", 1, 256),
    ("8 × 256 B", 8, 256),
    ("64 × 256 B", 64, 256),
    ("1 × 4 KiB", 1, 4096),
    ("8 × 4 KiB", 8, 4096),
    ("64 × 4 KiB", 64, 4096),
];
const NUMBER_COLUMNS: [&str; 4] = ["p50 µs", "p99 µs", "p99.9 µs", "records/s"];

/// The markdown table of `stdout` as rows of trimmed cells, header first.
fn table(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .map(common::cells)
        .collect()
}

fn payload_ok(payload: &[u8]) -> bool {
    payload
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i % 251) as u8)
}

#[test]
fn quick_log_benchmark() {
    if let Err(why) = lockstep_sys::probe::io_uring() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = common::scratch("bench-quick");
    let json_path = dir.join("report.json");
    let (stdout, _) = common::run(
        common::bench(&["log", "--quick", "--dir"])
            .arg(&dir)
            .arg("--json")
            .arg(&json_path),
    );

    // The table: every floor and series, with positive numbers.
    let rows = table(&stdout);
    let header = &rows[0];
    for name in FLOORS.iter().copied().chain(SERIES.iter().map(|s| s.0)) {
        let row = rows
            .iter()
            .find(|r| r[0] == name || r[0].starts_with(&format!("{name} (")))
            .unwrap_or_else(|| panic!("no row {name:?} in\n{stdout}"));
        assert_eq!(row.len(), header.len(), "{row:?}");
        for col in NUMBER_COLUMNS {
            let i = header.iter().position(|h| h == col).expect(col);
            let v: f64 = row[i]
                .parse()
                .unwrap_or_else(|_| panic!("{name}: {col} = {:?}", row[i]));
            assert!(v > 0.0, "{name}: {col} = {v}");
        }
    }
    let goals: Vec<&str> = stdout.lines().filter(|l| l.starts_with("goal:")).collect();
    assert_eq!(goals.len(), 3, "{stdout}");
    assert!(
        goals
            .iter()
            .all(|g| g.ends_with("PASS") || g.ends_with("MISS"))
    );

    // The JSON: the same series, and the count of records written.
    let report: Value =
        serde_json::from_str(&fs::read_to_string(&json_path).expect("JSON report written"))
            .expect("JSON report parses");
    let floors = report["floors"].as_array().expect("floors");
    assert_eq!(floors.len(), FLOORS.len());
    let series = report["series"].as_array().expect("series");
    assert_eq!(series.len(), SERIES.len());
    let mut measured = 0;
    for (s, (name, writers, payload)) in series.iter().zip(SERIES) {
        assert_eq!(s["writers"].as_u64(), Some(writers), "{name}");
        assert_eq!(s["payload_bytes"].as_u64(), Some(payload), "{name}");
        assert!(s["p50_us"].as_f64().unwrap() > 0.0, "{name}");
        for r in s["per_round"].as_array().unwrap() {
            measured += r["latency"]["count"].as_u64().unwrap();
        }
    }
    let records = report["records_written"].as_u64().expect("records_written");
    assert!(
        records >= measured && measured > 0,
        "{records} written, {measured} measured"
    );

    // The kept log: segments on disk, a clean open, exactly `records` records.
    let log_dir = PathBuf::from(report["setup"]["log_dir"].as_str().unwrap());
    assert_eq!(log_dir, dir.join("log"));
    assert!(stdout.contains(&format!("log kept in {}", log_dir.display())));
    assert!(!segment::list(&log_dir).unwrap().is_empty());
    assert!(
        !Path::new(&dir).join("floor.scratch").exists(),
        "scratch file removed"
    );
    let opts = LogOptions {
        segment_bytes: report["setup"]["segment_bytes"].as_u64().unwrap(),
        ..LogOptions::default()
    };
    let mut log = Log::open(&log_dir, opts, 1).expect("the kept log opens");
    for note in &log.recovery().notes {
        assert!(
            !note.contains("torn") && !note.contains("leftovers") && !note.contains("unused"),
            "recovery had to repair the kept log: {note}"
        );
    }
    assert_eq!(log.first_lsn(), report["first_lsn"].as_u64().unwrap());
    assert_eq!(log.durable_lsn(), records);
    // The first series writes 256 B payloads, the last 4 KiB ones. A quick run writes
    // far less than a kept log keeps, so nothing was deleted.
    assert_eq!(log.first_lsn(), 1);
    let first = log.read(1, 1, 1 << 20).unwrap();
    assert_eq!(first[0].payload.len(), 256);
    assert!(payload_ok(&first[0].payload));
    let last = log.read(records, 1, 1 << 20).unwrap();
    assert_eq!(last[0].lsn, records);
    assert_eq!(last[0].payload.len(), 4096);
    assert!(payload_ok(&last[0].payload));
    drop(log);
    fs::remove_dir_all(&dir).unwrap();
}
