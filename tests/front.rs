//! The MariaDB front end to end, with real MariaDB 10.11 and real `lockstepd`
//! processes on loopback: a COMMIT returns only once lockstep's sync set holds the
//! transaction; no acknowledged commit is lost when the database primary crashes, again
//! and again; the front follows a lockstep failover and the stream stays contiguous.
//!
//! Each test skips with a one-line reason when MariaDB is not installed
//! (`ci/setup.sh` installs it).

#[path = "common/procs.rs"]
mod procs;

#[path = "common/front.rs"]
mod front;

#[path = "common/chaos_cluster.rs"]
mod chaos_cluster;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use procs::{LogImage, Procs, Rng, serial};

/// The records of stream "s" on node `n` of a stopped cluster, as (LSN, payload).
fn records(log: &LogImage) -> Vec<(u64, &[u8])> {
    log.records
        .iter()
        .map(|(lsn, _, payload)| (*lsn, payload.as_slice()))
        .collect()
}

#[test]
fn a_commit_returns_only_once_every_sync_member_holds_it() {
    if !front::mariadb_or_skip("a_commit_returns_only_once_every_sync_member_holds_it") {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let db = front::primary(dir.path(), procs::free_ports(1)[0]);
    // A static cluster (no controller): k = every member and no removal, so a stopped
    // member blocks every commit.
    let mut procs = Procs::start(&format!(
        "mode = \"strong\"\n{}",
        front::front_toml(dir.path(), &db)
    ));
    front::wait_semi_sync_client(&db, Duration::from_secs(20));
    front::create_rows_table(&db);
    let mut c = front::connect(&db);
    let no_tx = front::global(&mut c, "Rpl_semi_sync_master_no_tx");
    c.run("INSERT INTO rows_ (n, marker) VALUES (1, 'row:1;')")
        .expect("a commit with every member up");

    procs.signal(2, "STOP");
    let addr = db.addr();
    let (tx, rx) = std::sync::mpsc::channel();
    let commit = std::thread::spawn(move || {
        let mut c = lockstep::front::connection::MyConn::connect(
            &lockstep::demo::mariadb::login(&addr, "app").database("app"),
        )
        .expect("connect");
        let r = c.run("INSERT INTO rows_ (n, marker) VALUES (2, 'row:2;')");
        tx.send((r.map_err(|e| e.to_string()), Instant::now()))
            .unwrap();
    });
    // The commit waits for the stopped member, however long it is stopped.
    assert!(
        rx.recv_timeout(Duration::from_secs(3)).is_err(),
        "a COMMIT returned while a sync member was stopped"
    );
    let mut watch = front::connect(&db);
    assert_eq!(
        front::global(&mut watch, "Rpl_semi_sync_master_status"),
        "ON"
    );
    assert_eq!(
        front::global(&mut watch, "Rpl_semi_sync_master_wait_sessions"),
        "1",
        "the COMMIT should be waiting for the semi-sync ACK"
    );
    let continued = Instant::now();
    procs.signal(2, "CONT");
    let (result, returned) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the COMMIT returns once the member is back");
    result.expect("the COMMIT succeeds");
    commit.join().unwrap();
    assert!(
        returned >= continued,
        "the COMMIT returned before the member continued"
    );
    // Semi-sync never fell back to asynchronous replication, and nothing committed
    // without the front's ACK.
    assert_eq!(front::global(&mut c, "Rpl_semi_sync_master_status"), "ON");
    assert_eq!(front::global(&mut c, "Rpl_semi_sync_master_no_tx"), no_tx);

    procs.stop_all();
    for n in 1..=3 {
        let log = LogImage::read(&procs.stream_dir(n));
        let counts = front::row_counts(&front::transactions(records(&log), &format!("node {n}")));
        for row in [1, 2] {
            assert_eq!(counts.get(&row), Some(&1), "node {n}: row {row}");
        }
    }
}

#[test]
fn no_acknowledged_commit_is_lost_when_the_database_primary_crashes() {
    if !front::tools_or_skip("no_acknowledged_commit_is_lost_when_the_database_primary_crashes") {
        return;
    }
    let _serial = serial();
    let (mut rng, seed) = Rng::from_env("LOCKSTEP_FRONT_SEED");
    let rounds = std::env::var("LOCKSTEP_FRONT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    eprintln!("front crash run: {rounds} rounds, seed {seed} (LOCKSTEP_FRONT_SEED replays it)");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut db = front::primary(dir.path(), procs::free_ports(1)[0]);
    let mut procs = Procs::start(&format!(
        "mode = \"strong\"\n{}",
        front::front_toml(dir.path(), &db)
    ));
    front::wait_semi_sync_client(&db, Duration::from_secs(20));
    front::create_rows_table(&db);
    let writers = front::RowWriters::start(&db.addr(), 8);
    for round in 1..=rounds {
        assert!(
            writers.wait_for_more(20, Duration::from_secs(60)),
            "round {round}: no commits within a minute; node 1 said:\n{}",
            procs.stderr(1)
        );
        std::thread::sleep(rng.millis(0, 300));
        // A crash at a random moment: commits in flight, some in the binlog and not yet
        // ACKed, some ACKed and not yet returned.
        db.kill().expect("kill MariaDB");
        std::thread::sleep(rng.millis(0, 200));
        // MariaDB recovers from its binlog, which holds every transaction the front
        // ever saw (it sends nothing before its binlog is synced).
        db.start().expect("restart MariaDB");
    }
    assert!(writers.wait_for_more(20, Duration::from_secs(60)));
    let (acked, tried) = writers.stop();
    eprintln!(
        "{} of {tried} commits acknowledged over {rounds} crashes",
        acked.len()
    );

    // The database holds every acknowledged row once.
    let mut c = front::connect(&db);
    let in_db = front::table_counts(&mut c);
    for n in &acked {
        assert_eq!(in_db.get(n), Some(&1), "row {n} in the database");
    }
    // The stream catches up with the database (its last transactions may still be in
    // flight), and holds every acknowledged row once, on every node.
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = front::global_var(&mut c, "gtid_binlog_pos");
    loop {
        if front_position(&procs) == want || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The stream, exported as binlog files and replayed by MariaDB's own tools into a
    // new server, gives a database with every acknowledged row, none twice.
    let exported = dir.path().join("export");
    let nodes = (1..=3).map(|n| procs.addr(n)).collect::<Vec<_>>().join(",");
    let out = front::export(&nodes, procs::STREAM, &exported, 1 << 20, None, false);
    assert!(
        out.status.success(),
        "export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = front::server(dir.path(), "fresh", procs::free_ports(1)[0], 2);
    front::replay(&front::files(&exported), &[], &fresh);
    let replayed = front::table_counts(&mut front::connect(&fresh));
    for n in &acked {
        assert_eq!(replayed.get(n), Some(&1), "row {n} after the replay");
    }
    assert_eq!(replayed, in_db, "the replay holds the database's rows");
    drop(fresh);
    procs.stop_all();
    let mut seen = BTreeSet::new();
    for n in 1..=3 {
        let log = LogImage::read(&procs.stream_dir(n));
        log.assert_sound_and_dense(&format!("node {n}"));
        let txs = front::transactions(records(&log), &format!("node {n}"));
        let counts = front::row_counts(&txs);
        for row in &acked {
            assert_eq!(
                counts.get(row),
                Some(&1),
                "node {n}: acknowledged row {row}"
            );
        }
        assert!(counts.values().all(|&c| c == 1), "node {n}: a row twice");
        assert_eq!(
            txs.last()
                .map(|t| t.position.to_string())
                .unwrap_or_default(),
            want,
            "node {n}: the stream ends where the database does"
        );
        seen.extend(counts.keys().copied());
    }
    // Rows the database holds that no client saw acknowledged (their COMMIT was cut
    // by the crash) are in the stream too: database and stream agree.
    assert_eq!(seen, in_db.keys().copied().collect::<BTreeSet<_>>());
}

/// The GTID position of the stream's last committed record, as node 1 serves it.
fn front_position(procs: &Procs) -> String {
    let status = procs::connect(
        procs.addr(1),
        &procs::client_options(Duration::from_secs(2)),
        Duration::from_secs(5),
    )
    .ok()
    .and_then(|mut c| c.status().ok());
    status
        .and_then(|st| stream_position(&st, procs.addr(1)))
        .unwrap_or_default()
}

#[test]
fn the_front_follows_a_lockstep_failover_without_losing_or_repeating_a_transaction() {
    if !front::mariadb_or_skip("the_front_follows_a_lockstep_failover") {
        return;
    }
    let _serial = serial();
    let trials = std::env::var("LOCKSTEP_FRONT_FAILOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let db = front::primary(dir.path(), procs::free_ports(1)[0]);
    let mut cluster = chaos_cluster::ChaosCluster::start_with(
        env!("CARGO_BIN_EXE_lockstepd").into(),
        3,
        procs::segment_bytes(),
        None,
        &|_| front::front_toml(dir.path(), &db),
    );
    front::wait_semi_sync_client(&db, Duration::from_secs(30));
    front::create_rows_table(&db);
    let writers = front::RowWriters::start(&db.addr(), 4);
    let mut stalls = Vec::new();
    for trial in 1..=trials {
        assert!(
            writers.wait_for_more(50, Duration::from_secs(60)),
            "trial {trial}: no commits"
        );
        let old = wait_for(Duration::from_secs(10), || cluster.primary())
            .unwrap_or_else(|| panic!("trial {trial}: no lockstep primary"));
        let killed = Instant::now();
        cluster.kill9(old);
        // MariaDB's commits wait while the stream has no primary, and resume once the
        // new primary's front has taken over the binlog.
        assert!(
            writers.wait_for_more(20, Duration::from_secs(60)),
            "trial {trial}: commits did not resume after the lockstep failover\n{}",
            (1..=3)
                .map(|n| cluster.stderr(n))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let times = writers.ack_times();
        let before = times.iter().rev().find(|t| **t < killed).copied();
        let after = times.iter().find(|t| **t > killed).copied();
        if let (Some(b), Some(a)) = (before, after) {
            stalls.push(a - b);
        }
        cluster.restart(old);
        // Back to full strength before the next trial: the new primary has both
        // members in its sync set again.
        wait_for(Duration::from_secs(30), || {
            let p = cluster.primary()?;
            let st = cluster.status(p)?;
            let ms = st["members"].as_array()?;
            (ms.len() == 2 && ms.iter().all(|m| m["in_sync"] == true)).then_some(())
        })
        .unwrap_or_else(|| panic!("trial {trial}: the cluster did not return to full strength"));
    }
    let (acked, tried) = writers.stop();
    stalls.sort();
    eprintln!(
        "{} of {tried} commits acknowledged over {trials} lockstep failovers; write stall \
         p50 {:?}, max {:?}",
        acked.len(),
        stalls.get(stalls.len() / 2),
        stalls.last()
    );
    let mut c = front::connect(&db);
    let in_db = front::table_counts(&mut c);
    for n in &acked {
        assert_eq!(in_db.get(n), Some(&1), "row {n} in the database");
    }
    let want = front::global_var(&mut c, "gtid_binlog_pos");
    let primary = wait_for(Duration::from_secs(10), || cluster.primary()).expect("a primary");
    wait_for(Duration::from_secs(30), || {
        (stream_position(&cluster.status(primary)?, &cluster.addrs[primary - 1])? == want)
            .then_some(())
    })
    .expect("the stream catches up with the database");
    cluster.stop_all();
    for n in 1..=3 {
        let log = LogImage::read(&cluster.stream_dir(n));
        // The assembler checks that the GTIDs are contiguous: no transaction missing,
        // none twice.
        let txs = front::transactions(records(&log), &format!("node {n}"));
        let counts = front::row_counts(&txs);
        for row in &acked {
            assert_eq!(
                counts.get(row),
                Some(&1),
                "node {n}: acknowledged row {row}"
            );
        }
        assert!(counts.values().all(|&c| c == 1), "node {n}: a row twice");
        assert_eq!(
            counts.keys().copied().collect::<BTreeSet<_>>(),
            in_db.keys().copied().collect::<BTreeSet<_>>(),
            "node {n}: the stream and the database hold the same rows"
        );
    }
}

/// Polls `f` until it gives a value or `within` passes.
fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The GTID position of the stream's last committed record at `addr`.
fn stream_position(status: &serde_json::Value, addr: &str) -> Option<String> {
    let commit = status["commit_lsn"].as_u64()?;
    let mut c = procs::connect(
        addr,
        &procs::client_options(Duration::from_secs(2)),
        Duration::from_secs(5),
    )
    .ok()?;
    let (_, recs) = c.read(commit, 1).ok()?;
    let r = lockstep::front::record::FrontRecord::decode(&recs.first()?.payload).ok()?;
    Some(r.position.to_string())
}

#[test]
fn an_event_larger_than_a_log_batch_is_appended_in_pieces_and_committed() {
    if !front::mariadb_or_skip("an_event_larger_than_a_log_batch") {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let db = front::primary(dir.path(), procs::free_ports(1)[0]);
    let mut procs = Procs::start(&format!(
        "mode = \"strong\"\n{}",
        front::front_toml(dir.path(), &db)
    ));
    front::wait_semi_sync_client(&db, Duration::from_secs(20));
    let mut c = front::connect(&db);
    c.run("CREATE TABLE blobs (id INT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB")
        .unwrap();
    // One row event of 3 MiB: three times a log batch, six pieces of a record.
    c.run("INSERT INTO blobs VALUES (1, REPEAT('x', 3 << 20))")
        .expect("the commit returns");
    c.run("INSERT INTO blobs VALUES (2, 'small')").unwrap();
    let want = front::global_var(&mut c, "gtid_binlog_pos");
    let deadline = Instant::now() + Duration::from_secs(20);
    while front_position(&procs) != want {
        assert!(Instant::now() < deadline, "the stream did not reach {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
    procs.stop_all();
    for n in 1..=3 {
        let log = LogImage::read(&procs.stream_dir(n));
        let txs = front::transactions(records(&log), &format!("node {n}"));
        let big = txs
            .iter()
            .find(|t| t.events.len() > 3 << 20)
            .unwrap_or_else(|| panic!("node {n}: no 3 MiB transaction"));
        assert!(
            big.last_lsn - big.first_lsn + 1 >= 6,
            "node {n}: {} pieces",
            big.last_lsn - big.first_lsn + 1
        );
        assert_eq!(txs.last().unwrap().position.to_string(), want);
    }
}
