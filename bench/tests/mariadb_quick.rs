//! The tiny size of `lockstep-bench mariadb`, run by the test suite so the benchmark
//! cannot rot. It checks what the benchmark promises, not its timings: the three
//! systems (MariaDB alone, stock semi-sync, MariaDB + lockstep strong) were started,
//! prepared and measured at every thread count, every one of them committed
//! transactions, the semi-sync and lockstep series were proven acknowledged (no commit
//! without an ACK, every transaction counted by sysbench acknowledged, lockstep's
//! front committed them), CPU per transaction was recorded, the table, the JSON and
//! the SVG chart were written, the goal lines are there, and no server outlives the
//! run.
//!
//! It skips with one line when MariaDB's server or sysbench is missing (ci/setup.sh
//! installs both), or when io_uring is unavailable (lockstep's nodes need it).

mod common;

use std::fs;
use std::path::Path;

use serde_json::Value;

const SYSTEMS: [&str; 3] = ["alone", "semi-sync", "lockstep"];
const THREADS: [u64; 2] = [1, 4];

/// Why this machine cannot run the benchmark, if it cannot.
fn missing() -> Option<String> {
    if !Path::new("/usr/sbin/mariadbd").exists() {
        return Some("no /usr/sbin/mariadbd (the Debian package mariadb-server)".into());
    }
    if std::process::Command::new("sysbench")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("no sysbench (the Debian package sysbench)".into());
    }
    lockstep_sys::probe::io_uring().err()
}

/// Processes of a benchmark run still alive: its servers (their data lives in its
/// directories) and sysbench.
fn left_running() -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let cmdline = fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
        let ours = match comm.trim() {
            "mariadbd" => cmdline.contains("lockstep-bench-"),
            "sysbench" => cmdline.contains("--mysql-user=app"),
            _ => false,
        };
        if ours {
            found.push(cmdline.replace('\0', " "));
        }
    }
    found
}

#[test]
fn quick_mariadb_benchmark() {
    if let Some(why) = missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = common::scratch("bench-mariadb-quick");
    let (stdout, stderr) = common::run(
        common::bench(&["mariadb", "--quick", "--out"])
            .arg(&dir)
            // The workspace root: the run's temporary directories go under its target/.
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
    );

    // The main table: a row per system and thread count, every one with transactions.
    let rows: Vec<Vec<String>> = stdout
        .lines()
        .take_while(|l| !l.starts_with("CPU per transaction"))
        .filter(|l| l.starts_with("| oltp_insert |"))
        .map(common::cells)
        .collect();
    assert_eq!(rows.len(), SYSTEMS.len() * THREADS.len(), "{stdout}");
    for r in &rows {
        let tps: f64 = r[3].parse().unwrap_or_else(|_| panic!("{r:?}"));
        assert!(tps > 0.0, "{r:?}");
    }

    let report: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("mariadb.json")).expect("mariadb.json"))
            .expect("mariadb.json parses");
    let series = report["series"].as_array().unwrap();
    assert_eq!(series.len(), SYSTEMS.len() * THREADS.len());
    for system in SYSTEMS {
        for threads in THREADS {
            let s = series
                .iter()
                .find(|s| s["kind"] == system && s["threads"] == threads)
                .unwrap_or_else(|| panic!("no series {system} at {threads} threads"));
            let rounds = s["per_round"].as_array().unwrap();
            assert_eq!(rounds.len(), 1, "{system} {threads}: one round");
            let x = &rounds[0];
            let what = format!("{system}, {threads} threads: {x}");
            let n = |k: &str| x[k].as_f64().unwrap_or_else(|| panic!("{k} of {what}"));
            assert!(n("transactions") > 0.0, "{what}");
            assert!(n("tps") > 0.0, "{what}");
            assert!(n("transactions_all") >= n("transactions"), "{what}");
            assert!(n("p50_ms") > 0.0 && n("p99_ms") >= n("p50_ms"), "{what}");
            // The histogram holds the measured seconds' events, give or take the few
            // in flight at the checkpoint that began them (sysbench counts those on
            // one side and their latencies on the other).
            let slack = 2.0 * threads as f64 + 2.0;
            assert!(
                (n("latencies") - n("events")).abs() <= slack,
                "{what}: {} latencies, {} events",
                n("latencies"),
                n("events")
            );
            assert!(x["cpu"]["mariadb_s"].as_f64().unwrap() > 0.0, "{what}");
            match system {
                "alone" => assert!(x["acked"].is_null(), "{what}"),
                _ => {
                    // Every transaction was acknowledged by the replica or the front.
                    assert!(n("acked") >= n("transactions_all"), "{what}");
                    assert!(x["ack_wait_avg_us"].as_f64().is_some(), "{what}");
                }
            }
            if system == "semi-sync" {
                assert!(x["cpu"]["replica_s"].as_f64().is_some(), "{what}");
            }
            if system == "lockstep" {
                let front = &x["front"];
                assert!(
                    front["transactions"].as_f64().unwrap() >= n("transactions_all"),
                    "{what}"
                );
                assert!(front["acks"].as_u64().unwrap() > 0, "{what}");
                assert!(x["lockstep"]["commits"].as_u64().unwrap() > 0, "{what}");
                assert!(x["cpu"]["lockstep_s"].as_f64().unwrap() > 0.0, "{what}");
                assert!(x["cpu"]["front_s"].as_f64().is_some(), "{what}");
            }
        }
    }
    // Each system's last check proved its durability.
    let systems = report["systems"].as_array().unwrap();
    assert_eq!(systems.len(), 3);
    for s in systems {
        let verified = s["verified"].as_str().unwrap();
        assert!(verified.contains("sync_binlog = 1"), "{verified}");
        if s["kind"] != "alone" {
            assert!(
                verified.contains("Rpl_semi_sync_master_status = ON"),
                "{verified}"
            );
            assert!(verified.contains("none without"), "{verified}");
        }
    }

    let svg = fs::read_to_string(dir.join("mariadb-tps.svg")).expect("mariadb-tps.svg");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 3, "a line per system");

    // Two goals for the one test, each PASS or MISS, at the most threads measured.
    let goals: Vec<&str> = stdout.lines().filter(|l| l.starts_with("goal: ")).collect();
    assert_eq!(goals.len(), 2, "{stdout}");
    let md = fs::read_to_string(dir.join("mariadb.md")).expect("mariadb.md");
    for g in &goals {
        assert!(g.contains("oltp_insert at 4 threads"), "{g}");
        assert!(g.ends_with("PASS") || g.ends_with("MISS"), "{g}");
        assert!(md.contains(g), "mariadb.md has {g}");
    }

    let left = left_running();
    assert!(left.is_empty(), "left running: {left:?}\n{stderr}");
    fs::remove_dir_all(&dir).unwrap();
}
