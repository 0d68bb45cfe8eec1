//! The tiny size of `lockstep-bench failover`, run by the test suite so the benchmark
//! cannot rot. It asserts behaviour, never time: each of the 3 trials ended with a
//! commit acknowledged by a node other than the killed primary, the cluster came back
//! to full strength, and no acknowledged commit is missing from any node's log.

mod common;

#[test]
fn quick_failover_benchmark() {
    if let Err(why) = lockstep_sys::probe::io_uring() {
        eprintln!("skipped: {why}");
        return;
    }
    let bin = common::lockstepd();
    let dir = common::scratch("bench-failover-quick");
    let (stdout, _) = common::run(
        common::bench(&["failover", "--quick", "--lockstepd"])
            .arg(&bin)
            .arg("--dir")
            .arg(&dir),
    );
    let trials: Vec<&str> = stdout.lines().filter(|l| l.starts_with("trial ")).collect();
    assert_eq!(trials.len(), 3, "{stdout}");
    for t in &trials {
        // "trial N: killed node K, first commit on node M after ..."
        let node_after = |key: &str| -> u32 {
            let rest = &t[t.find(key).unwrap_or_else(|| panic!("{key:?} in {t}")) + key.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse().ok())
                .unwrap_or_else(|| panic!("a node number after {key:?} in {t}"))
        };
        let killed = node_after("killed node ");
        let committed = node_after("first commit on node ");
        assert!((1..=3).contains(&killed), "{t}");
        assert!((1..=3).contains(&committed), "{t}");
        assert_ne!(killed, committed, "the killed node committed: {t}");
        assert!(t.contains("full strength"), "{t}");
    }
    let checked = stdout
        .lines()
        .find_map(|l| l.strip_prefix("acknowledged commits checked on 3 nodes: "))
        .unwrap_or_else(|| panic!("no check line in {stdout}"));
    let (count, lost) = checked.split_once("; lost: ").expect("count; lost");
    assert!(count.parse::<u64>().unwrap() > 0, "{checked}");
    assert_eq!(lost, "0", "{checked}");
    for row in ["first commit on the new primary", "back to full strength"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with('|') && l.contains(row)),
            "no table row {row:?} in {stdout}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
