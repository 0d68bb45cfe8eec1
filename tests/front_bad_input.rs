//! What the front does with a database primary that misbehaves: wrong credentials,
//! settings that would lose data, a corrupted event, a packet cut short, a connection
//! closed in the middle of a transaction. Each gets one clear line in the node's log;
//! nothing is ACKed that lockstep has not committed; the stream holds exactly the
//! whole transactions the primary sent before the fault, and the rest after the front
//! reconnects.
//!
//! The settings and credentials run against a real MariaDB 10.11 (skipped with a
//! reason when it is missing); the broken streams against a fake primary that serves
//! a real MariaDB binlog (`tests/data/`) with the fault injected.

#[path = "common/procs.rs"]
mod procs;

#[path = "common/front.rs"]
mod front;

#[path = "common/fake_primary.rs"]
mod fake_primary;

use std::time::{Duration, Instant};

use fake_primary::{FakePrimary, Fault};
use lockstep::front::events::Header;
use procs::{LogImage, Procs, serial};

const BINLOG: &[u8] = include_bytes!("data/mariadb-10.11-binlog.bin");

/// The end positions of the fixture's ten transactions.
const ENDS: [u64; 10] = [518, 741, 7282, 7436, 7678, 7825, 8157, 8290, 8524, 8681];

fn front_toml_for(addr: &str, password_file: &std::path::Path) -> String {
    format!(
        "mode = \"strong\"\nfront = {{ kind = \"mariadb\", primary = \"{addr}\", user = \
         \"lockstep\", password_file = \"{}\", heartbeat_ms = 200, retry_ms = 20 }}\n",
        password_file.display()
    )
}

fn password_file(dir: &std::path::Path, password: &str) -> std::path::PathBuf {
    let p = dir.join("front.password");
    std::fs::write(&p, password).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    p
}

/// Waits until node 1's log says `what`; returns the matching lines.
fn wait_for_line(procs: &Procs, what: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let lines: Vec<String> = procs
            .stderr(1)
            .lines()
            .filter(|l| l.contains(what))
            .map(str::to_owned)
            .collect();
        if !lines.is_empty() {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 never said {what:?}; it said:\n{}",
            procs.stderr(1)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The stream's records on every node of a stopped cluster.
fn stream_records(procs: &Procs) -> Vec<LogImage> {
    (1..=3)
        .map(|n| LogImage::read(&procs.stream_dir(n)))
        .collect()
}

#[test]
fn a_broken_binlog_stream_is_refused_and_nothing_of_it_is_acked() {
    let _serial = serial();
    // (fault of the first dump, the words of its log line). Sent events: 0 the fake
    // ROTATE, 1 the format description, 2-3 transaction 1, 4-8 transaction 2.
    let cases = [
        (Fault::FlipBit(6), "does not match"),
        (Fault::CutPacket(6), "closed the connection"),
        (Fault::CloseBefore(6), "closed the connection"),
    ];
    for (fault, words) in cases {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let fake = FakePrimary::start(BINLOG, vec![fault, Fault::None]);
        let pw = password_file(dir.path(), "any");
        let mut procs = Procs::start(&front_toml_for(&fake.addr.to_string(), &pw));
        let lines = wait_for_line(&procs, words, Duration::from_secs(20));
        eprintln!("{fault:?}: {}", lines[0]);
        assert_eq!(lines.len(), 1, "{fault:?}: one line: {lines:?}");
        assert!(
            lines[0].contains("front of stream s"),
            "{fault:?}: {}",
            lines[0]
        );
        // After the fault, the front reconnects and receives the rest: every ACK of
        // the second dump, up to the last transaction.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !fake.acks().iter().any(|(_, pos, _)| *pos == ENDS[9]) {
            assert!(
                Instant::now() < deadline,
                "{fault:?}: the rest was never ACKed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        procs.stop_all();
        let acks = fake.acks();
        // The faulty dump ACKed at most transaction 1: the broken transaction 2 was
        // never held, let alone committed.
        for (dump, pos, file) in &acks {
            assert_eq!(file, "binlog.000001");
            assert!(
                ENDS.contains(pos),
                "{fault:?}: an ACK at {pos}, not a transaction's end"
            );
            if *dump == 1 {
                assert!(*pos <= ENDS[0], "{fault:?}: dump 1 ACKed {pos}");
            }
        }
        // Every node holds the ten transactions once, byte for byte as the binlog.
        let fixture = fake_primary::events(BINLOG);
        for (i, log) in stream_records(&procs).iter().enumerate() {
            let records: Vec<(u64, &[u8])> = log
                .records
                .iter()
                .map(|(l, _, p)| (*l, p.as_slice()))
                .collect();
            let txs = front::transactions(records, &format!("{fault:?} node {}", i + 1));
            assert_eq!(txs.len(), 10, "{fault:?} node {}", i + 1);
            for (t, end) in txs.iter().zip(ENDS) {
                assert_eq!(t.end_pos, end);
                let first = fixture
                    .iter()
                    .position(|e| Header::parse(e).unwrap().log_pos as u64 > end)
                    .unwrap_or(fixture.len());
                let start = fixture[..first]
                    .iter()
                    .rposition(|e| e[4] == lockstep::front::events::kind::GTID)
                    .unwrap();
                assert_eq!(
                    t.events,
                    fixture[start..first].concat(),
                    "transaction {}",
                    t.gtid
                );
            }
        }
    }
}

#[test]
fn settings_that_would_lose_data_and_wrong_credentials_are_refused_with_one_line_each() {
    if !front::mariadb_or_skip("settings_that_would_lose_data_and_wrong_credentials") {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let db = front::primary(dir.path(), procs::free_ports(1)[0]);
    let mut admin = front::connect(&db);
    // (statement that breaks the primary, password, words of the refusal, statement
    // that mends it)
    let cases = [
        ("DO 0", "wrong-password", "Access denied", "DO 0"),
        (
            "SET GLOBAL rpl_semi_sync_master_enabled = OFF",
            lockstep::demo::mariadb::FRONT_PASSWORD,
            "rpl_semi_sync_master_enabled",
            "SET GLOBAL rpl_semi_sync_master_enabled = ON",
        ),
        (
            "SET GLOBAL binlog_format = 'STATEMENT'",
            lockstep::demo::mariadb::FRONT_PASSWORD,
            "binlog_format",
            "SET GLOBAL binlog_format = 'ROW'",
        ),
        (
            "SET GLOBAL rpl_semi_sync_master_wait_point = 'AFTER_COMMIT'",
            lockstep::demo::mariadb::FRONT_PASSWORD,
            "AFTER_SYNC",
            "SET GLOBAL rpl_semi_sync_master_wait_point = 'AFTER_SYNC'",
        ),
    ];
    for (break_it, password, words, mend) in cases {
        admin.run(break_it).unwrap();
        let case_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let pw = password_file(case_dir.path(), password);
        let mut procs = Procs::start(&front_toml_for(&db.addr(), &pw));
        let lines = wait_for_line(&procs, words, Duration::from_secs(20));
        eprintln!("{break_it}: {}", lines[0]);
        // The front tries again (it notices a fix) but says it once.
        std::thread::sleep(Duration::from_millis(500));
        let again = procs
            .stderr(1)
            .lines()
            .filter(|l| l.contains(words))
            .count();
        assert_eq!(again, 1, "{words}: said {again} times: {lines:?}");
        let mut c = front::connect(&db);
        assert_eq!(front::global(&mut c, "Rpl_semi_sync_master_clients"), "0");
        procs.stop_all();
        for log in stream_records(&procs) {
            assert_eq!(log.records.len(), 0, "{words}: the stream is not empty");
        }
        admin.run(mend).unwrap();
    }
}
