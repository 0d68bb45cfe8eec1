//! The tiny size of `lockstep-bench failover --mariadb` (2 kills of the lockstep
//! primary, 1 switchover), run by the test suite so the benchmark cannot rot. It
//! asserts behaviour, never time: each kill and the switchover ended with a commit on
//! another node and a database COMMIT after it, the table has every measure with its
//! count, every acknowledged row is in the database once and in every node's stream
//! once, the database's GTID position is the stream's, no commit was made without the
//! front's ACK, the goal lines are there, and no MariaDB server outlives the run.
//!
//! It skips with one line when MariaDB's server is missing (ci/setup.sh installs it) or
//! io_uring is unavailable (lockstep's nodes need it).

mod common;

#[test]
fn quick_failover_benchmark_with_a_mariadb_front() {
    if let Some(why) = common::mariadb_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let (stdout, dir) = common::run_mariadb_bench(
        "bench-failover-mariadb-quick",
        &["failover", "--mariadb", "--quick"],
    );

    let trials = common::lines_starting(&stdout, "trial ");
    assert_eq!(trials.len(), 2, "{stdout}");
    for t in &trials {
        let killed = common::number_after(t, "killed node ");
        let committed = common::number_after(t, "first commit on node ");
        assert!((1..=3).contains(&killed), "{t}");
        assert!((1..=3).contains(&committed), "{t}");
        assert_ne!(killed, committed, "the killed node committed: {t}");
        assert!(t.contains("database write stall "), "{t}");
        assert!(t.contains("full strength "), "{t}");
    }
    let switchovers = common::lines_starting(&stdout, "switchover ");
    assert_eq!(switchovers.len(), 1, "{stdout}");
    let s = switchovers[0];
    let (from, to) = (
        common::number_after(s, ": node "),
        common::number_after(s, "→ node "),
    );
    assert_ne!(from, to, "{s}");
    assert_eq!(common::number_after(s, "first commit on node "), to, "{s}");
    assert!(s.contains("database write stall "), "{s}");

    // Every measure has a row, with as many samples as kills or switchovers.
    for (row, count) in [
        ("→ new primary promoted", "2"),
        ("→ first commit on the new primary", "2"),
        ("kill -9 of the lockstep primary: database write stall", "2"),
        ("restart → back to full strength", "2"),
        ("switchover → first commit on the target", "1"),
        ("switchover: database write stall", "1"),
    ] {
        common::assert_table_row(&stdout, row, count);
    }

    // "N of T tried; in the database once: N; missing: 0; rows more than once: 0"
    let rows = common::line_after(&stdout, "acknowledged rows: ");
    let acked = common::number_after(rows, "");
    assert!(acked > 0, "{rows}");
    assert!(common::number_after(rows, " of ") >= acked, "{rows}");
    assert_eq!(
        common::number_after(rows, "in the database once: "),
        acked,
        "{rows}"
    );
    assert_eq!(common::number_after(rows, "missing: "), 0, "{rows}");
    assert_eq!(
        common::number_after(rows, "rows more than once: "),
        0,
        "{rows}"
    );
    let streams = common::line_after(
        &stdout,
        "acknowledged rows in the stream on 3 nodes, once each: ",
    );
    assert_eq!(common::number_after(streams, ""), acked, "{streams}");
    assert_eq!(
        common::number_after(streams, "missing or repeated: "),
        0,
        "{streams}"
    );

    // "X = the stream's position X (record at commit lsn L)"
    let gtid = common::line_after(&stdout, "database GTID position ");
    let (db_pos, rest) = gtid.split_once(" = the stream's position ").expect(gtid);
    let stream_pos = rest.split(' ').next().unwrap();
    assert_eq!(db_pos, stream_pos, "{gtid}");
    assert!(!db_pos.is_empty(), "{gtid}");

    let semi = common::line_after(&stdout, "commits without the front's ACK");
    assert!(semi.contains(": 0;"), "{semi}");
    assert!(semi.ends_with("semi-sync on at the end: yes"), "{semi}");
    for goal in [
        "goal (loopback): database write stall on a lockstep failover p50 < 1000 ms: ",
        "goal (loopback): database write stall on a switchover max < 200 ms: ",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(goal)),
            "no {goal:?} in {stdout}"
        );
    }
    assert_eq!(common::servers_left(&dir), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}
