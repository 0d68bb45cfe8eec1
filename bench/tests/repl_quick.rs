//! The tiny size of `lockstep-bench repl`, run by the test suite so the benchmark cannot
//! rot. It checks what the benchmark promises: a table with every floor row and every
//! series with positive numbers, the two goal lines, and JSON with the same rows, whose
//! floor is the sum of its parts and whose primary committed what the clients counted.

mod common;

use std::fs;

use serde_json::Value;

const FLOORS: [&str; 5] = ["rtt", "dsync", "remote dsync", "floor", "raw commit"];
const MODES: [&str; 3] = ["strong", "semi", "async"];
const LOADS: [(&str, u64); 2] = [("1 client", 1), ("64 outstanding", 64)];
const NUMBER_COLUMNS: [&str; 6] = [
    "p50 µs",
    "p99 µs",
    "p99.9 µs",
    "commits/s",
    "p50 ÷ floor",
    "p50 ÷ raw commit",
];

/// The first markdown table of `stdout` as rows of trimmed cells, header first.
fn table(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter(|l| !l.starts_with("|---"))
        .map(common::cells)
        .collect()
}

/// The two tests below each run benchmark clusters; at once on two cores, a commit
/// of the second cluster of one process has waited past the 5 s commit timeout (seen
/// with `--transport tcp,tcp` as with `tcp,rdma-emu`), so they take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn quick_repl_benchmark() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(why) = lockstep_sys::probe::io_uring() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = common::scratch("bench-repl-quick");
    let json_path = dir.join("report.json");
    let (stdout, _) = common::run(common::bench(&["repl", "--quick", "--json"]).arg(&json_path));

    // The table: every floor row and series, with positive numbers where they are given
    // (the floor row is a sum of two medians: p50 and ratio only).
    let rows = table(&stdout);
    let header = &rows[0];
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("no row {name:?} in\n{stdout}"))
    };
    let number = |r: &Vec<String>, col: &str| -> Option<f64> {
        let i = header.iter().position(|h| h == col).expect(col);
        assert_eq!(r.len(), header.len(), "{r:?}");
        (r[i] != "—").then(|| {
            r[i].parse()
                .unwrap_or_else(|_| panic!("{}: {col} = {:?}", r[0], r[i]))
        })
    };
    for name in FLOORS {
        let r = row(name);
        for col in NUMBER_COLUMNS {
            match number(r, col) {
                Some(v) => assert!(v > 0.0, "{name}: {col} = {v}"),
                // The floor row is a sum of two medians: p50 and its ratio only. Only
                // the series and the raw commit itself have a ratio to the raw commit.
                None => assert!(
                    (name == "floor" && col != "p50 µs" && col != "p50 ÷ floor")
                        || (name != "raw commit" && col == "p50 ÷ raw commit"),
                    "{name}: {col} missing"
                ),
            }
        }
    }
    assert_eq!(number(row("floor"), "p50 ÷ floor"), Some(1.0));
    assert_eq!(number(row("raw commit"), "p50 ÷ raw commit"), Some(1.0));
    for mode in MODES {
        for (load, _) in LOADS {
            let name = format!("{mode}, {load}");
            let r = row(&name);
            for col in NUMBER_COLUMNS {
                let v = number(r, col).unwrap_or_else(|| panic!("{name}: {col} missing"));
                assert!(v > 0.0, "{name}: {col} = {v}");
            }
        }
    }
    let goals: Vec<&str> = stdout.lines().filter(|l| l.starts_with("goal:")).collect();
    assert_eq!(goals.len(), 2, "{stdout}");
    assert!(goals[0].starts_with("goal: strong, 1 client: p50 ≤ 1.5 × floor"));
    assert!(goals[1].starts_with("goal: strong, 64 outstanding: ≥ 100000 commits/s"));
    assert!(
        goals
            .iter()
            .all(|g| g.ends_with("PASS") || g.ends_with("MISS"))
    );

    // The JSON: the same rows; the floor is rtt + remote dsync in every round.
    let report: Value =
        serde_json::from_str(&fs::read_to_string(&json_path).expect("JSON report written"))
            .expect("JSON report parses");
    let floors = report["floors"].as_array().expect("floors");
    let names: Vec<&str> = floors.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, FLOORS);
    let rounds = report["setup"]["rounds"].as_u64().unwrap() as usize;
    let p50s = |i: usize| -> Vec<f64> {
        floors[i]["per_round"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["p50_us"].as_f64().unwrap())
            .collect()
    };
    let (rtt, remote) = (p50s(0), p50s(2));
    assert_eq!(rtt.len(), rounds);
    let mut sums: Vec<f64> = rtt.iter().zip(&remote).map(|(a, b)| a + b).collect();
    sums.sort_by(f64::total_cmp);
    let floor = floors[3]["p50_us"].as_f64().unwrap();
    assert!(
        (floor - sums[rounds / 2]).abs() < 1e-6 || rounds.is_multiple_of(2),
        "{floor} vs {sums:?}"
    );
    let series = report["series"].as_array().expect("series");
    assert_eq!(series.len(), MODES.len() * LOADS.len());
    for (s, (mode, (load, outstanding))) in series
        .iter()
        .zip(MODES.iter().flat_map(|m| LOADS.iter().map(move |l| (m, l))))
    {
        assert_eq!(
            s["label"].as_str(),
            Some(format!("{mode}, {load}").as_str())
        );
        assert_eq!(s["mode"].as_str(), Some(*mode));
        assert_eq!(s["outstanding"].as_u64(), Some(*outstanding));
        let per_round = s["per_round"].as_array().unwrap();
        assert_eq!(per_round.len(), rounds);
        // The primary counted at least the commits the clients measured (it also
        // counts the warm-up and the drain).
        let measured: u64 = per_round.iter().map(|r| r["count"].as_u64().unwrap()).sum();
        let committed = s["server"]["commits"].as_u64().unwrap();
        assert!(
            measured > 0 && committed >= measured,
            "{mode}, {load}: the primary committed {committed}, the clients measured {measured}"
        );
    }
    assert_eq!(report["goals"].as_array().unwrap().len(), 2);
    fs::remove_dir_all(&dir).unwrap();
}

/// `--transport tcp,rdma-emu` in one run: a report per transport, then one table with
/// both side by side, each series with its latency, throughput, ratio to the floor and
/// the CPU time per commit of every node.
#[test]
fn quick_repl_benchmark_over_tcp_and_emulated_rdma() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(why) = lockstep_sys::probe::io_uring() {
        eprintln!("skipped: {why}");
        return;
    }
    let (stdout, _) = common::run(&mut common::bench(&[
        "repl",
        "--quick",
        "--modes",
        "strong",
        "--transport",
        "tcp,rdma-emu",
    ]));
    assert!(stdout.contains("## transport tcp"), "{stdout}");
    assert!(stdout.contains("## transport rdma-emu"), "{stdout}");
    assert!(stdout.contains("note: peer links on rdma-emu"), "{stdout}");
    let side = stdout
        .split("## transports side by side")
        .nth(1)
        .unwrap_or_else(|| panic!("no side-by-side table in\n{stdout}"));
    let rows = table(side);
    let header = &rows[0];
    assert_eq!(
        &header[..7],
        [
            "transport",
            "series",
            "p50 µs",
            "p99 µs",
            "commits/s",
            "p50 × floor",
            "p50 × (rtt + dsync)"
        ]
    );
    assert_eq!(header.len(), 10, "three nodes' CPU columns: {header:?}");
    for transport in ["tcp", "rdma-emu"] {
        for load in ["1 client", "64 outstanding"] {
            let series = format!("strong, {load}");
            let r = rows
                .iter()
                .find(|r| r[0] == transport && r[1] == series)
                .unwrap_or_else(|| panic!("no row {transport} {series} in\n{side}"));
            for (col, cell) in header.iter().zip(r).skip(2) {
                let v: f64 = cell.parse().unwrap_or_else(|_| panic!("{col} = {cell:?}"));
                assert!(v > 0.0, "{transport} {series}: {col} = {v}");
            }
        }
    }
    // The RDMA goals against TCP, from this run: PASS or MISS, never absent.
    for goal in [
        "goal: rdma-emu, strong, 1 client: p50 ≤ 1.1 × (rtt + dsync)",
        "goal: rdma-emu, strong, 1 client: CPU per commit below tcp's on every node",
    ] {
        assert!(
            side.lines()
                .any(|l| l.starts_with(goal) && (l.ends_with("PASS") || l.ends_with("MISS"))),
            "no line {goal:?} in\n{side}"
        );
    }
}
