//! `lockstep binlog export` end to end, with real MariaDB 10.11, its own tools and real
//! `lockstepd` processes on loopback: a MariaDB primary made strongly synchronous by a
//! 3-node cluster runs DDL, multi-statement transactions, a transaction of several
//! megabytes (many record pieces), NULLs and a LONGBLOB; the stream is exported with
//! the real `lockstep` binary into small files that rotate; `mariadb-binlog
//! --verify-binlog-checksum` decodes every file; the files replayed by `mariadb-binlog
//! | mariadb` into a new server give the primary's data; and an export from a GTID in
//! the middle, replayed onto a server restored up to that GTID, gives it too.
//!
//! Skips with a one-line reason when MariaDB's server or its tools are not installed
//! (`ci/setup.sh` installs them).

#[path = "common/procs.rs"]
mod procs;

#[path = "common/front.rs"]
mod front;

use std::time::Duration;

use lockstep::demo::mariadb::MariaDb;
use lockstep::front::connection::MyConn;
use procs::{Procs, serial};

/// Small files, so that the export rotates many times.
const FILE_BYTES: u64 = 64 << 10;

fn run(c: &mut MyConn, sql: &str) {
    c.run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn gtid_pos(c: &mut MyConn) -> String {
    c.query("SELECT @@global.gtid_binlog_pos")
        .expect("gtid_binlog_pos")
        .first(0)
        .unwrap_or_default()
}

/// The first part of the workload: DDL, rows with NULLs, multi-statement
/// transactions that insert, update and delete.
fn workload_before(c: &mut MyConn) {
    run(
        c,
        "CREATE TABLE people (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, \
         age INT NULL, score DECIMAL(10,2) NULL, born DATETIME NULL, note TEXT NULL) \
         ENGINE=InnoDB",
    );
    for i in 0..200 {
        let age = if i % 4 == 0 {
            "NULL".to_string()
        } else {
            (20 + i % 50).to_string()
        };
        let born = if i % 3 == 0 {
            "NULL".to_string()
        } else {
            format!("'1990-01-{:02} 10:{:02}:00'", 1 + i % 28, i % 60)
        };
        run(
            c,
            &format!(
                "INSERT INTO people (name, age, score, born, note) VALUES ('person {i}', {age}, \
                 {}.25, {born}, REPEAT('note {i} ', {}))",
                i * 3,
                20 + i % 30
            ),
        );
    }
    run(
        c,
        "ALTER TABLE people ADD COLUMN email VARCHAR(200) NULL DEFAULT NULL, ADD INDEX (age)",
    );
    for round in 0..5 {
        run(c, "BEGIN");
        for j in 0..3 {
            run(
                c,
                &format!(
                    "INSERT INTO people (name, email) VALUES ('batch {round}.{j}', \
                     'b{round}{j}@example.invalid')"
                ),
            );
        }
        run(
            c,
            &format!(
                "UPDATE people SET score = score * 2 WHERE id % 3 = {}",
                round % 3
            ),
        );
        run(
            c,
            &format!("DELETE FROM people WHERE id % 11 = {}", round + 1),
        );
        run(c, "COMMIT");
    }
    run(
        c,
        "CREATE TABLE blobs (id INT PRIMARY KEY, data LONGBLOB NULL, digest CHAR(32) NULL) \
         ENGINE=InnoDB",
    );
    run(c, "INSERT INTO blobs VALUES (1, NULL, NULL)");
}

/// The second part: a transaction of several megabytes (a 200 KiB LONGBLOB written,
/// then updated with its whole row in both images, and 5000 rows of about 1 KiB),
/// more DDL, a transaction that sets NULLs, deletes and inserts binary data, a
/// rolled-back one.
///
/// The transaction is large by many row events, not by one: the front now appends all
/// the pieces of one event larger than a piece in a single request, which a node
/// refuses once it exceeds the node's log batch (1 MiB), so an event of several
/// megabytes stalls the front (its own tests are the place for that).
fn workload_after(c: &mut MyConn) {
    run(c, "SET SESSION max_recursive_iterations = 100000");
    run(c, "BEGIN");
    run(
        c,
        "INSERT INTO blobs VALUES (2, REPEAT('lockstep', 25600), NULL)",
    );
    run(c, "UPDATE blobs SET digest = MD5(data) WHERE id = 2");
    run(
        c,
        "INSERT INTO people (name, note) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL \
         SELECT i + 1 FROM n WHERE i < 5000) SELECT CONCAT('bulk ', i), REPEAT('x', 900 + i % 97) \
         FROM n",
    );
    run(c, "COMMIT");
    run(c, "ALTER TABLE blobs ADD COLUMN tag VARCHAR(20) NULL");
    run(c, "BEGIN");
    run(
        c,
        "UPDATE people SET note = NULL, age = NULL WHERE id % 5 = 0",
    );
    run(c, "DELETE FROM people WHERE name LIKE 'bulk 1%'");
    run(
        c,
        "INSERT INTO blobs (id, data, tag) VALUES (3, x'00ff00fe0a0d5c27', 'binary')",
    );
    run(c, "COMMIT");
    run(c, "BEGIN");
    run(c, "DELETE FROM people");
    run(c, "ROLLBACK");
    for i in 0..20 {
        run(
            c,
            &format!(
                "INSERT INTO blobs (id, data, tag) VALUES ({}, REPEAT('b', {}), 'end')",
                10 + i,
                i * 1000
            ),
        );
    }
}

/// What must agree between two servers: each table's definition, row count and
/// `CHECKSUM TABLE`. The definition leaves out the next AUTO_INCREMENT value, which is
/// a counter, not data: a multi-row INSERT on the primary reserves values in blocks,
/// a replayed row event inserts the ids it names.
fn contents(db: &MariaDb) -> Vec<(String, String, String, String)> {
    let mut c = db.connect().expect("connect");
    let tables = c.query("SHOW TABLES").expect("show tables");
    let mut out = Vec::new();
    for row in &tables.rows {
        let table = String::from_utf8(row[0].clone().expect("a name")).unwrap();
        let create = c
            .query(&format!("SHOW CREATE TABLE `{table}`"))
            .expect("show create")
            .first(1)
            .unwrap();
        let create = create
            .split(' ')
            .filter(|w| !w.starts_with("AUTO_INCREMENT="))
            .collect::<Vec<_>>()
            .join(" ");
        let count = c
            .query(&format!("SELECT COUNT(*) FROM `{table}`"))
            .expect("count")
            .first(0)
            .unwrap();
        let checksum = c
            .query(&format!("CHECKSUM TABLE `{table}`"))
            .expect("checksum")
            .first(1)
            .unwrap();
        out.push((table, create, count, checksum));
    }
    out
}

/// Every node's client address, as `--nodes` takes them.
fn nodes(procs: &Procs) -> String {
    (1..=3)
        .map(|n| procs.addr(n).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn an_export_replays_into_the_primarys_data_whole_and_from_a_middle_gtid() {
    let test = "an_export_replays_into_the_primarys_data_whole_and_from_a_middle_gtid";
    if !front::tools_or_skip(test) {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ports = procs::free_ports(3);
    let db = front::primary(dir.path(), ports[0]);
    let procs = Procs::start(&format!(
        "mode = \"strong\"\n{}",
        front::front_toml(dir.path(), &db)
    ));
    front::wait_semi_sync_client(&db, Duration::from_secs(20));
    let mut c = db.connect().expect("connect");
    workload_before(&mut c);
    let middle = gtid_pos(&mut c);
    workload_after(&mut c);
    // Every COMMIT returned after the front's ACK, which follows lockstep's commit:
    // the stream holds all of it.
    let end = gtid_pos(&mut c);
    assert_ne!(middle, end);

    // Everything.
    let all = dir.path().join("all");
    let out = front::export(&nodes(&procs), procs::STREAM, &all, FILE_BYTES, None, true);
    assert!(
        out.status.success(),
        "lockstep binlog export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    eprintln!("export: {summary}");
    assert_eq!(summary["start_position"], "");
    assert_eq!(summary["end_position"], end.as_str(), "{summary}");
    let all_files = front::files(&all);
    assert_eq!(summary["files"].as_array().unwrap().len(), all_files.len());
    assert!(
        all_files.len() >= 3,
        "{} files: no rotation",
        all_files.len()
    );
    let bytes: u64 = all_files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert_eq!(summary["bytes"], bytes);
    for f in &all_files {
        front::decode(std::slice::from_ref(f), &[]);
    }
    // The large transaction is in one file, which is far beyond the limit.
    assert!(
        all_files
            .iter()
            .any(|f| std::fs::metadata(f).unwrap().len() > 4 << 20),
        "no file holds the large transaction"
    );

    let primary = contents(&db);
    assert_eq!(primary.len(), 2, "{primary:?}");
    let restored = front::server(dir.path(), "restored", ports[1], 2);
    front::replay(&all_files, &[], &restored);
    assert_eq!(contents(&restored), primary, "the replayed export differs");
    assert_eq!(gtid_pos(&mut restored.connect().unwrap()), end);

    // From the middle, onto a server restored up to it.
    let partial = front::server(dir.path(), "partial", ports[2], 3);
    front::replay(
        &all_files,
        &[&format!("--stop-position={middle}")],
        &partial,
    );
    assert_eq!(gtid_pos(&mut partial.connect().unwrap()), middle);
    assert_ne!(contents(&partial), primary, "the middle is not the end");
    let rest = dir.path().join("rest");
    let out = front::export(
        &nodes(&procs),
        procs::STREAM,
        &rest,
        FILE_BYTES,
        Some(&middle),
        false,
    );
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lockstep binlog export --from-gtid {middle} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("export --from-gtid {middle}: {line}");
    assert_eq!(line.lines().count(), 1, "one summary line: {line}");
    assert!(
        line.contains(&format!("position {middle} to {end}")),
        "{line}"
    );
    let rest_files = front::files(&rest);
    let head = front::decode(&rest_files[..1], &[]);
    assert!(
        String::from_utf8_lossy(&head).contains(&format!("Gtid list [{middle}]")),
        "the first file does not start at {middle}"
    );
    for f in &rest_files {
        front::decode(std::slice::from_ref(f), &[]);
    }
    front::replay(&rest_files, &[], &partial);
    assert_eq!(
        contents(&partial),
        primary,
        "middle export + restore differs"
    );
    assert_eq!(gtid_pos(&mut partial.connect().unwrap()), end);

    // A position beyond the stream is refused, and nothing is left behind.
    let (domain, server_id, seq) = {
        let mut parts = end.split('-');
        let d = parts.next().unwrap().to_string();
        let s = parts.next().unwrap().to_string();
        let q: u64 = parts.next().unwrap().parse().unwrap();
        (d, s, q)
    };
    let beyond = format!("{domain}-{server_id}-{}", seq + 1);
    let none = dir.path().join("beyond");
    let out = front::export(
        &nodes(&procs),
        procs::STREAM,
        &none,
        FILE_BYTES,
        Some(&beyond),
        false,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("beyond the stream"), "{stderr}");
    assert!(!none.exists());
    let partials: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.contains(".partial-").then_some(name)
        })
        .collect();
    assert!(partials.is_empty(), "left behind: {partials:?}");
}
