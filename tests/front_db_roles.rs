//! The database's role changes, with real MariaDB 10.11 and real `lockstepd`
//! processes: a replica fed by a lockstep binlog server is promoted at exactly the
//! stream's position; a former primary with an unacknowledged binlog tail is refused
//! as a replica until MariaDB truncates the tail (`--init-rpl-role=SLAVE`), and then
//! rejoins and holds what the stream holds.
//!
//! Skips with a one-line reason when MariaDB is missing.

#[path = "common/procs.rs"]
mod procs;

#[path = "common/front.rs"]
mod front;

use std::time::{Duration, Instant};

use lockstep::demo::mariadb::{self, MariaDb, Role};
use lockstep::front::db_role::{self, RoleError, Source};
use lockstep::front::gtid::GtidState;
use procs::{Procs, serial};

const REPL_USER: &str = "repl";
const REPL_PASSWORD: &str = "repl-password";

/// The position of the stream's last committed record on node `n`.
fn stream_position(procs: &Procs, n: usize) -> GtidState {
    let mut c = procs::connect(
        procs.addr(n),
        &procs::client_options(Duration::from_secs(2)),
        Duration::from_secs(5),
    )
    .expect("connect to node 1");
    let commit = c.status().expect("status")["commit_lsn"].as_u64().unwrap();
    let (_, recs) = c.read(commit, 1).expect("read");
    lockstep::front::record::FrontRecord::decode(&recs[0].payload)
        .expect("a front record")
        .position
}

fn var(db: &MariaDb, name: &str) -> GtidState {
    GtidState::parse(&front::global_var(&mut front::connect(db), name)).unwrap()
}

#[test]
fn a_replica_is_promoted_at_the_streams_position_and_a_former_primary_rejoins_without_its_tail() {
    if !front::mariadb_or_skip("a_replica_is_promoted_at_the_streams_position") {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ports = procs::free_ports(4);
    let mut primary = front::primary(dir.path(), ports[0]);
    let front_toml = front::front_toml(dir.path(), &primary);
    let pw = dir.path().join("repl.password");
    std::fs::write(&pw, REPL_PASSWORD).unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let serve = ports[1];
    let mut procs = Procs::start_per_node(&|n| {
        let server = if n == 2 {
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
    let source = Source {
        host: "127.0.0.1".into(),
        port: serve,
        user: REPL_USER.into(),
        password: REPL_PASSWORD.into(),
    };
    front::wait_semi_sync_client(&primary, Duration::from_secs(20));
    front::create_rows_table(&primary);
    // A replica fed by node 2's binlog server.
    let replica = MariaDb::create(
        dir.path(),
        "replica",
        ports[2],
        11,
        Role::Replica,
        &["--rpl-semi-sync-slave-enabled=OFF".to_string()],
    )
    .expect("start the replica");
    let replica_login = mariadb::login(&replica.addr(), mariadb::APP_USER);
    db_role::rejoin(&replica_login, &source, &GtidState::new()).expect("a fresh replica joins");
    let writers = front::RowWriters::start(&primary.addr(), 4);
    assert!(writers.wait_for_more(100, Duration::from_secs(60)));
    let (acked, _) = writers.stop();

    // The primary's binlog runs ahead of the stream for good: the lockstep primary
    // (where the front lives) stops, the commits that start meanwhile are binlogged but
    // never reach lockstep, and both die.
    procs.signal(1, "STOP");
    let addr = primary.addr();
    let unacked = std::thread::spawn(move || {
        let mut c = lockstep::front::connection::MyConn::connect(
            &mariadb::login(&addr, "app").database("app"),
        )
        .unwrap();
        // The connection is cut when the primary dies.
        let _ = c.run("INSERT INTO rows_ (n, marker) VALUES (1000000, 'row:1000000;')");
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while var(&primary, "gtid_binlog_pos") == stream_position(&procs, 2) {
        assert!(
            Instant::now() < deadline,
            "the primary's binlog did not run ahead"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    primary.kill().expect("kill the primary");
    let _ = unacked.join();
    procs.kill9(1);
    procs.restart(1);
    let stream = stream_position(&procs, 1);

    // The replica applies everything the stream committed and becomes the primary.
    let binlog = db_role::promote(&replica_login, &stream, Duration::from_secs(30), 1)
        .expect("promote the replica");
    assert_eq!(
        binlog, stream,
        "the new primary's binlog ends where the stream does"
    );
    let mut c = front::connect(&replica);
    // Read-only until its semi-sync state is ON; then it takes writes, and each waits
    // for a semi-sync ACK (the front's, once it follows the new primary).
    assert_eq!(front::global_var(&mut c, "read_only"), "1");
    db_role::open_writes(&replica_login, Duration::from_secs(5)).expect("open writes");
    assert_eq!(front::global_var(&mut c, "read_only"), "0");
    assert_eq!(
        front::global_var(&mut c, "rpl_semi_sync_master_enabled"),
        "1"
    );
    assert_eq!(
        front::global_var(&mut c, "rpl_semi_sync_master_wait_point"),
        "AFTER_SYNC"
    );
    let rows = front::table_counts(&mut c);
    for n in &acked {
        assert_eq!(rows.get(n), Some(&1), "row {n} on the new primary");
    }
    assert_eq!(
        rows.get(&1_000_000),
        None,
        "the unacknowledged row is not there"
    );

    // The former primary, restarted with --init-rpl-role=SLAVE on its first start
    // after the crash: MariaDB rolls back and truncates the transactions it never got
    // an ACK for (prepared in InnoDB, in the binlog), instead of committing them as a
    // plain crash recovery would.
    primary
        .start_with(&["--init-rpl-role=SLAVE".to_string()])
        .expect("restart the former primary as a replica");
    let old_login = mariadb::login(&primary.addr(), mariadb::APP_USER);
    let truncated = var(&primary, "gtid_binlog_pos");
    assert!(
        truncated.iter().all(|g| stream.reaches(g)),
        "MariaDB kept a tail beyond the stream: {truncated} vs {stream}"
    );
    // Against a stream that stood one transaction earlier, the same server would hold a
    // tail: refused.
    let earlier: GtidState = stream
        .iter()
        .map(|g| lockstep::front::gtid::Gtid {
            seq: g.seq - 1,
            ..*g
        })
        .collect();
    match db_role::rejoin(&old_login, &source, &earlier) {
        Err(RoleError::Diverged { .. }) => {}
        other => panic!("a server with a tail beyond the stream rejoined: {other:?}"),
    }
    db_role::rejoin(&old_login, &source, &stream).expect("the former primary rejoins");
    let deadline = Instant::now() + Duration::from_secs(30);
    while db_role::observe(&old_login).unwrap().replicating
        != Some((source.host.clone(), source.port))
    {
        assert!(
            Instant::now() < deadline,
            "the former primary does not replicate"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rows = front::table_counts(&mut front::connect(&primary));
    for n in &acked {
        assert_eq!(rows.get(n), Some(&1), "row {n} on the former primary");
    }
    assert_eq!(rows.get(&1_000_000), None, "its unacknowledged row is gone");
    drop(procs);
}
