//! The tiny size of `lockstep-bench peers`, run by the test suite so the benchmark
//! cannot rot. It checks what the benchmark promises: lockstep's series committed;
//! every peer that is installed here was started, measured and proven durable before
//! and after each of its series (PostgreSQL's standby synchronous, MariaDB's replica
//! acking every commit, etcd's three members agreeing on a leader); a peer that is not
//! installed is skipped with exactly one line; the table, the JSON, the `.hgrm` files
//! and the SVG charts were written and parse; and no server outlives the run.
//!
//! It never installs anything (`--no-install`): ci/setup.sh installs the peers' packages.

mod common;

use std::fs;
use std::path::Path;

use serde_json::Value;

/// Whether a peer is installed.
type Installed = fn() -> bool;

/// Each peer: how the report names it, and the file that shows it is installed.
const PEERS: [(&str, Installed); 3] = [
    ("PostgreSQL", || {
        fs::read_dir("/usr/lib/postgresql")
            .is_ok_and(|d| d.flatten().any(|e| e.path().join("bin/postgres").exists()))
    }),
    ("MariaDB", || Path::new("/usr/sbin/mariadbd").exists()),
    ("etcd", || Path::new("/usr/bin/etcd").exists()),
];

const LOADS: [&str; 3] = ["1 client", "64 outstanding", "open loop 500/s"];

/// Rows of every markdown table in `stdout`, as trimmed cells.
fn rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| system") && !l.starts_with("| floor"))
        .map(common::cells)
        .collect()
}

/// Server processes of the peers now running (by their executables' names).
fn servers_running() -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(comm) = fs::read_to_string(e.path().join("comm")) {
            let comm = comm.trim();
            let cmdline = fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
            // Only servers of a benchmark run (their data lives in its directories).
            if matches!(comm, "postgres" | "mariadbd" | "etcd")
                && cmdline.contains("lockstep-bench-")
            {
                found.push(format!("{comm} {}", cmdline.replace('\0', " ")));
            }
        }
    }
    found
}

#[test]
fn quick_peers_benchmark() {
    if let Err(why) = lockstep_sys::probe::io_uring() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = common::scratch("bench-peers-quick");
    let (stdout, stderr) = common::run(
        // A 1 s window instead of the quick size's 0.3 s: on a busy shared machine one
        // commit of MariaDB with the replica's fsync at 64 outstanding takes 0.3 to
        // 0.6 s (the relay log is synced per event), and a series in which no commit
        // sent after the warm-up returns within the window has no result.
        common::bench(&[
            "peers",
            "--quick",
            "--seconds",
            "1",
            "--no-install",
            "--out",
        ])
        .arg(&dir)
        // The workspace root: the run's temporary directories go under its target/.
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
    );
    let table = rows(&stdout);
    let row = |system: &str, load: &str| {
        table
            .iter()
            .find(|r| r[0].starts_with(system) && r[1] == load)
            .unwrap_or_else(|| panic!("no row {system:?}, {load:?} in\n{stdout}"))
    };
    let numbers = |r: &Vec<String>| -> Vec<f64> {
        r[2..]
            .iter()
            .map(|c| {
                c.parse()
                    .unwrap_or_else(|_| panic!("{r:?}: {c:?} is not a number"))
            })
            .collect()
    };

    // lockstep committed under every load, and is its own reference.
    for load in LOADS {
        let v = numbers(row("lockstep strong, 2 secondaries", load));
        assert!(v.iter().all(|&x| x > 0.0), "{load}: {v:?}");
        assert_eq!(v[4..], [1.0, 1.0], "{load}");
    }

    let report: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("peers.json")).expect("peers.json"))
            .expect("peers.json parses");
    let systems = report["systems"].as_array().unwrap();
    let skipped: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("skipped: "))
        .collect();
    for (peer, installed) in PEERS {
        let lines: Vec<&&str> = skipped
            .iter()
            .filter(|l| l.starts_with(&format!("skipped: {peer}:")))
            .collect();
        if !installed() {
            assert_eq!(
                lines.len(),
                1,
                "{peer} is not installed: one line\n{stdout}"
            );
            assert!(lines[0].contains("not installed"), "{}", lines[0]);
            continue;
        }
        assert!(lines.is_empty(), "{peer} is installed: {lines:?}\n{stderr}");
        let mine: Vec<&Value> = systems
            .iter()
            .filter(|s| s["label"].as_str().unwrap().starts_with(peer))
            .collect();
        assert!(!mine.is_empty(), "{peer} has no series\n{stdout}");
        for s in mine {
            let label = s["label"].as_str().unwrap();
            assert!(s["failed"].is_null(), "{label}: {}", s["failed"]);
            // The last check after its last series proved durability in force.
            let verified = s["verified"].as_str().unwrap();
            assert!(
                !verified.is_empty() && !verified.starts_with("refused"),
                "{label}: {verified}"
            );
            for load in LOADS {
                let v = numbers(row(label, load));
                assert!(v.iter().all(|&x| x > 0.0), "{label}, {load}: {v:?}");
            }
        }
    }
    let semi = systems
        .iter()
        .find(|s| s["label"].as_str().unwrap().starts_with("MariaDB"));
    if let Some(m) = semi {
        assert!(
            m["verified"].as_str().unwrap().contains("none without"),
            "{}",
            m["verified"]
        );
    }

    // Every measured series has its histogram file, which reads back as a percentile
    // distribution with as many values as the JSON says were recorded.
    let series = report["series"].as_array().unwrap();
    assert!(!series.is_empty());
    for s in series {
        if s["status"] != "measured" {
            panic!("{}: {}", s["system"], s["status"]);
        }
        let name = s["hgrm"].as_str().expect("an hgrm file");
        let text = fs::read_to_string(dir.join("hgrm").join(name)).expect(name);
        let counts: Vec<u64> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
            .collect();
        let recorded: u64 = s["per_round"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["count"].as_u64().unwrap())
            .sum();
        assert_eq!(counts.last().copied(), Some(recorded), "{name}");
    }
    for chart in [
        "latency-1-client.svg",
        "latency-64-outstanding.svg",
        "latency-open-loop.svg",
        "throughput.svg",
    ] {
        let svg = fs::read_to_string(dir.join(chart)).expect(chart);
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{chart}"
        );
        assert!(svg.contains("lockstep strong, 2 secondaries"), "{chart}");
        assert!(svg.matches("<polyline").count() >= 3, "{chart}");
    }
    // One goal line per peer measured and goal, each PASS or MISS.
    let goals: Vec<&str> = stdout.lines().filter(|l| l.starts_with("goal: ")).collect();
    let peers_measured = systems
        .iter()
        .filter(|s| !s["label"].as_str().unwrap().starts_with("lockstep"))
        .count();
    assert_eq!(goals.len(), 2 * peers_measured, "{stdout}");
    assert!(
        goals
            .iter()
            .all(|g| g.ends_with("PASS") || g.ends_with("MISS"))
    );
    // The quick run's only strong cluster has 2 secondaries: every goal compares with it.
    assert!(
        goals
            .iter()
            .all(|g| g.starts_with("goal: lockstep strong, 2 secondaries (3 durable copies; ")),
        "{stdout}"
    );

    let left = servers_running();
    assert!(left.is_empty(), "servers left running: {left:?}");
    fs::remove_dir_all(&dir).unwrap();
}
