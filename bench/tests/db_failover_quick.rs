//! The tiny size of `lockstep-bench failover --mariadb --db` (2 kills of the database
//! primary, 1 database switchover), run by the test suite so the benchmark cannot rot.
//! It asserts behaviour, never time: each kill ended with another member taking writes,
//! the switchover with its target taking them, the table has every measure with its
//! count, every acknowledged row is on the primary once, every member's checksum is the
//! same, the goal lines are there, and no MariaDB server outlives the run.
//!
//! It skips with one line when MariaDB's server is missing (ci/setup.sh installs it) or
//! io_uring is unavailable (lockstep's nodes need it).

mod common;

#[test]
fn quick_database_failover_benchmark() {
    if let Some(why) = common::mariadb_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let (stdout, dir) = common::run_mariadb_bench(
        "bench-db-failover-quick",
        &["failover", "--mariadb", "--db", "--quick"],
    );

    let trials = common::lines_starting(&stdout, "trial ");
    assert_eq!(trials.len(), 2, "{stdout}");
    for t in &trials {
        let killed = common::number_after(t, "killed member ");
        let writing = common::number_after(t, "; member ");
        assert!((1..=3).contains(&killed), "{t}");
        assert!((1..=3).contains(&writing), "{t}");
        assert_ne!(killed, writing, "the killed member takes writes: {t}");
        assert!(t.contains("write gap "), "{t}");
        assert!(t.contains("replicating "), "{t}");
    }
    let switchovers = common::lines_starting(&stdout, "switchover ");
    assert_eq!(switchovers.len(), 1, "{stdout}");
    let s = switchovers[0];
    let (from, to) = (
        common::number_after(s, ": member "),
        common::number_after(s, "→ member "),
    );
    assert_eq!(to, from % 3 + 1, "{s}");
    assert!(s.contains("write gap "), "{s}");

    for (row, count) in [
        ("kill -9 of the database primary: write gap", "2"),
        ("restart → the killed member replicating", "2"),
        ("database switchover: write gap", "1"),
    ] {
        common::assert_table_row(&stdout, row, count);
    }

    // "N of T tried; on the primary (member P) once: N; missing: 0; rows more than once: 0"
    let rows = common::line_after(&stdout, "acknowledged rows: ");
    let acked = common::number_after(rows, "");
    assert!(acked > 0, "{rows}");
    assert!(common::number_after(rows, " of ") >= acked, "{rows}");
    assert_eq!(common::number_after(rows, ") once: "), acked, "{rows}");
    assert_eq!(common::number_after(rows, "missing: "), 0, "{rows}");
    assert_eq!(
        common::number_after(rows, "rows more than once: "),
        0,
        "{rows}"
    );
    // "CHECKSUM TABLE rows_ at GTID X: C, C, C"
    let sums = common::line_after(&stdout, "CHECKSUM TABLE rows_ at GTID ");
    let (_, sums) = sums.split_once(": ").expect(sums);
    let sums: Vec<&str> = sums.split(", ").collect();
    assert_eq!(sums.len(), 3, "{sums:?}");
    assert!(sums.iter().all(|c| *c == sums[0]), "{sums:?}");
    for goal in [
        "goal (loopback): write gap on a database failover p50 < 1000 ms: ",
        "goal (loopback): write gap on a database switchover max < 200 ms: ",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(goal)),
            "no {goal:?} in {stdout}"
        );
    }
    assert_eq!(common::servers_left(&dir), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}
