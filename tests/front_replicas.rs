//! Every lockstep node serves the stream to a stock MariaDB replica (the binlog
//! server), with real MariaDB 10.11 and real `lockstepd` processes: each replica ends
//! with the primary's data, and no replica ever holds a transaction that lockstep has
//! not committed, even while a sync member is stopped and the primary's binlog runs
//! ahead of the stream.
//!
//! Skips with a one-line reason when MariaDB is missing (`ci/setup.sh` installs it).

#[path = "common/procs.rs"]
mod procs;

#[path = "common/front.rs"]
mod front;

use std::time::{Duration, Instant};

use lockstep::demo::mariadb::{MariaDb, Role};
use lockstep::front::connection::MyConn;
use lockstep::front::gtid::GtidState;
use procs::{Procs, Rng, serial};

const REPL_USER: &str = "repl";
const REPL_PASSWORD: &str = "repl-password";

/// A replica's GTID position (what its SQL thread applied).
fn replica_position(c: &mut MyConn) -> GtidState {
    GtidState::parse(&front::global_var(c, "gtid_slave_pos")).expect("a GTID position")
}

/// The position of the stream's last committed record on node `n`.
fn committed_position(procs: &Procs, n: usize) -> Option<GtidState> {
    let mut c = procs::connect(
        procs.addr(n),
        &procs::client_options(Duration::from_secs(2)),
        Duration::from_secs(5),
    )
    .ok()?;
    let commit = c.status().ok()?["commit_lsn"].as_u64()?;
    if commit == 0 {
        return Some(GtidState::new());
    }
    let (_, recs) = c.read(commit, 1).ok()?;
    let r = lockstep::front::record::FrontRecord::decode(&recs.first()?.payload).ok()?;
    Some(r.position)
}

/// Whether `a` is at or before `b` in every domain of `a`.
fn within(a: &GtidState, b: &GtidState) -> bool {
    a.iter().all(|g| b.reaches(g))
}

fn checksum(c: &mut MyConn) -> (String, String) {
    let sum = c
        .query("CHECKSUM TABLE app.rows_")
        .expect("checksum")
        .first(1)
        .unwrap_or_default();
    let count = c
        .query("SELECT COUNT(*) FROM app.rows_")
        .expect("count")
        .first(0)
        .unwrap_or_default();
    (count, sum)
}

#[test]
fn a_stock_replica_beside_every_node_gets_the_committed_transactions_only() {
    if !front::mariadb_or_skip("a_stock_replica_beside_every_node") {
        return;
    }
    let _serial = serial();
    let (mut rng, seed) = Rng::from_env("LOCKSTEP_FRONT_SEED");
    eprintln!("seed {seed} (LOCKSTEP_FRONT_SEED replays it)");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ports = procs::free_ports(7);
    let db = front::primary(dir.path(), ports[0]);
    let front_toml = front::front_toml(dir.path(), &db);
    let pw = dir.path().join("repl.password");
    std::fs::write(&pw, REPL_PASSWORD).unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let serve_ports = [ports[1], ports[2], ports[3]];
    let mut procs = Procs::start_per_node(&|n| {
        format!(
            "mode = \"strong\"\n{front_toml}binlog_server = {{ listen = \"127.0.0.1:{}\", \
             user = \"{REPL_USER}\", password_file = \"{}\", server_id = 100 }}\n",
            serve_ports[n - 1],
            pw.display()
        )
    });
    front::wait_semi_sync_client(&db, Duration::from_secs(20));
    front::create_rows_table(&db);
    // A stock replica beside every node, fed by that node's binlog server.
    let replicas: Vec<MariaDb> = (1..=3)
        .map(|n| {
            let r = MariaDb::create(
                dir.path(),
                &format!("replica{n}"),
                ports[3 + n],
                10 + n as u32,
                Role::Replica,
                &["--rpl-semi-sync-slave-enabled=OFF".to_string()],
            )
            .expect("start a replica");
            let mut c = front::connect(&r);
            c.run(&format!(
                "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, \
                 MASTER_USER = '{REPL_USER}', MASTER_PASSWORD = '{REPL_PASSWORD}', \
                 MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
                serve_ports[n - 1]
            ))
            .expect("CHANGE MASTER");
            c.run("START SLAVE").expect("START SLAVE");
            r
        })
        .collect();
    let writers = front::RowWriters::start(&db.addr(), 4);
    assert!(writers.wait_for_more(200, Duration::from_secs(60)));

    // A sync member stops: the primary's binlog runs ahead of what lockstep commits,
    // and no replica may get the transactions in between.
    procs.signal(3, "STOP");
    let mut primary = front::connect(&db);
    let mut ahead = false;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        std::thread::sleep(rng.millis(20, 150));
        for (i, r) in replicas.iter().enumerate().take(2) {
            let held = replica_position(&mut front::connect(r));
            // Read after the replica's: the committed position only grows.
            let committed = committed_position(&procs, i + 1).expect("the committed position");
            assert!(
                within(&held, &committed),
                "replica {} holds {held}, beyond what lockstep committed ({committed})",
                i + 1
            );
        }
        let binlog = GtidState::parse(&front::global_var(&mut primary, "gtid_binlog_pos")).unwrap();
        let committed = committed_position(&procs, 1).unwrap();
        ahead |= !within(&binlog, &committed);
    }
    assert!(
        ahead,
        "the primary's binlog never ran ahead of the stream: the check above proved nothing"
    );
    procs.signal(3, "CONT");
    assert!(writers.wait_for_more(200, Duration::from_secs(60)));
    let (acked, _) = writers.stop();

    // Every replica ends with the primary's data.
    let want = front::global_var(&mut primary, "gtid_binlog_pos");
    let expected = checksum(&mut primary);
    for (i, r) in replicas.iter().enumerate() {
        let mut c = front::connect(r);
        let waited = c
            .query(&format!("SELECT MASTER_GTID_WAIT('{want}', 60)"))
            .expect("MASTER_GTID_WAIT")
            .first(0);
        assert_eq!(
            waited.as_deref(),
            Some("0"),
            "replica {} did not reach {want}; node {} said:\n{}",
            i + 1,
            i + 1,
            procs.stderr(i + 1)
        );
        assert_eq!(checksum(&mut c), expected, "replica {}", i + 1);
        let rows = front::table_counts(&mut c);
        for n in &acked {
            assert_eq!(rows.get(n), Some(&1), "replica {}: row {n}", i + 1);
        }
    }
    drop(replicas);
    procs.stop_all();
}

/// `SHOW SLAVE STATUS`'s `Last_IO_Errno` and `Last_IO_Error` once the I/O thread failed.
fn io_error(c: &mut MyConn, within: Duration) -> (String, String) {
    let deadline = Instant::now() + within;
    loop {
        let status = c.query("SHOW SLAVE STATUS").expect("SHOW SLAVE STATUS");
        let col = |name: &str| {
            let i = status.columns.iter().position(|c| c == name).expect(name);
            status.first(i).unwrap_or_default()
        };
        let errno = col("Last_IO_Errno");
        if errno != "0" {
            return (errno, col("Last_IO_Error"));
        }
        assert!(
            Instant::now() < deadline,
            "the replica's I/O thread did not fail"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_replica_with_a_wrong_password_or_a_position_beyond_the_stream_gets_a_clear_error() {
    if !front::mariadb_or_skip("a_replica_with_a_wrong_password") {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ports = procs::free_ports(4);
    let db = front::primary(dir.path(), ports[0]);
    let front_toml = front::front_toml(dir.path(), &db);
    let pw = dir.path().join("repl.password");
    std::fs::write(&pw, REPL_PASSWORD).unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let serve = ports[1];
    let procs = Procs::start_per_node(&|n| {
        let server = if n == 1 {
            format!(
                "binlog_server = {{ listen = \"127.0.0.1:{serve}\", user = \"{REPL_USER}\", \
                 password_file = \"{}\" }}\n",
                pw.display()
            )
        } else {
            String::new()
        };
        format!("mode = \"strong\"\n{front_toml}{server}")
    });
    front::wait_semi_sync_client(&db, Duration::from_secs(20));
    front::create_rows_table(&db);
    // (the replica's setup, its password, the error number and words of the message)
    let cases = [
        ("DO 0", "wrong", "1045", "Access denied"),
        (
            "SET GLOBAL gtid_slave_pos = '0-1-999999'",
            REPL_PASSWORD,
            "1236",
            "beyond the stream",
        ),
    ];
    for (i, (setup, password, errno, words)) in cases.into_iter().enumerate() {
        let r = MariaDb::create(
            dir.path(),
            &format!("replica{i}"),
            ports[2 + i],
            20 + i as u32,
            Role::Replica,
            &["--rpl-semi-sync-slave-enabled=OFF".to_string()],
        )
        .expect("start a replica");
        let mut c = front::connect(&r);
        c.run(setup).unwrap();
        c.run(&format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {serve}, \
             MASTER_USER = '{REPL_USER}', MASTER_PASSWORD = '{password}', \
             MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1"
        ))
        .unwrap();
        c.run("START SLAVE").unwrap();
        let (got, message) = io_error(&mut c, Duration::from_secs(30));
        eprintln!("{setup}: {got}: {message}");
        assert_eq!(got, errno, "{message}");
        assert!(message.contains(words), "{message}");
    }
    drop(procs);
}
