//! The MariaDB side of the front's tests: a real MariaDB primary, the `front` table of
//! a stream's configuration, a client that inserts uniquely numbered rows and records
//! every COMMIT that returned OK, and the checks of what a stream holds.
//!
//! Rows carry their number twice: in an integer column, and in a marker text
//! (`row:<n>;`) that appears byte for byte in the row events of the binlog, so the
//! stream's transactions can be searched for a row without decoding them.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lockstep::demo::mariadb::{self, MariaDb, Role};
use lockstep::front::connection::{Login, MyConn};
use lockstep::front::reader::{Assembler, Item, Transaction};

pub const MARIADB_BINLOG: &str = "/usr/bin/mariadb-binlog";
pub const MARIADB: &str = "/usr/bin/mariadb";

/// Room for large row events in a replayed BINLOG statement.
pub const PACKET_BYTES: &str = "64M";

/// Whether this machine can run the MariaDB tests; prints why not.
pub fn mariadb_or_skip(test: &str) -> bool {
    match mariadb::available() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("skip {test}: {why}");
            false
        }
    }
}

/// Starts a MariaDB primary with the settings the front demands, and writes the
/// front's password file next to it.
pub fn primary(dir: &Path, port: u16) -> MariaDb {
    MariaDb::create(dir, "primary", port, 1, Role::Primary, &[]).expect("start MariaDB")
}

/// The `front = { ... }` line of a stream that replicates `db`.
pub fn front_toml(dir: &Path, db: &MariaDb) -> String {
    let pw = dir.join("front.password");
    std::fs::write(&pw, format!("{}\n", mariadb::FRONT_PASSWORD)).expect("write password");
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod password");
    front_toml_with(db, &pw)
}

pub fn front_toml_with(db: &MariaDb, password_file: &Path) -> String {
    format!(
        "front = {{ kind = \"mariadb\", primary = \"{}\", user = \"{}\", password_file = \"{}\", heartbeat_ms = 200 }}\n",
        db.addr(),
        mariadb::FRONT_USER,
        password_file.display()
    )
}

/// A global status or variable of `db`.
pub fn global(c: &mut MyConn, name: &str) -> String {
    let rows = c
        .show(&format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .expect("show status");
    rows.into_iter().next().map(|(_, v)| v).unwrap_or_default()
}

/// A global variable of `db`.
pub fn global_var(c: &mut MyConn, name: &str) -> String {
    c.query(&format!("SELECT @@global.{name}"))
        .expect("select a variable")
        .first(0)
        .unwrap_or_default()
}

/// Waits until `db` has a semi-sync replica (the front) connected.
pub fn wait_semi_sync_client(db: &MariaDb, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(mut c) = db.connect()
            && global(&mut c, "Rpl_semi_sync_master_clients") == "1"
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no semi-sync replica connected to {} within {within:?}",
            db.addr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `CREATE TABLE rows` for the row workload.
pub fn create_rows_table(db: &MariaDb) {
    db.connect()
        .expect("connect")
        .run(
            "CREATE TABLE IF NOT EXISTS rows_ (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
             n BIGINT NOT NULL, marker VARCHAR(40) NOT NULL) ENGINE=InnoDB",
        )
        .expect("create table");
}

pub fn marker(n: u64) -> String {
    format!("row:{n};")
}

/// Clients that insert rows numbered 1, 2, ... (one number per INSERT, never
/// retried), reconnecting after every failure, and record the numbers whose COMMIT
/// returned OK with the time it returned.
pub struct RowWriters {
    stop: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    acked: Arc<Mutex<BTreeMap<u64, Instant>>>,
    threads: Vec<JoinHandle<()>>,
}

impl RowWriters {
    pub fn start(addr: &str, clients: usize) -> RowWriters {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(1));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, next, acked) = (stop.clone(), next.clone(), acked.clone());
                let addr = addr.to_owned();
                std::thread::spawn(move || write_rows(&addr, &stop, &next, &acked))
            })
            .collect();
        RowWriters {
            stop,
            next,
            acked,
            threads,
        }
    }

    /// Rows acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `more` rows beyond what is acknowledged now are acknowledged.
    pub fn wait_for_more(&self, more: usize, within: Duration) -> bool {
        let want = self.acked() + more;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.acked() >= want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// The time of the newest acknowledgement.
    pub fn last_ack(&self) -> Option<Instant> {
        self.acked.lock().unwrap().values().max().copied()
    }

    /// Every acknowledgement time.
    pub fn ack_times(&self) -> Vec<Instant> {
        let mut t: Vec<Instant> = self.acked.lock().unwrap().values().copied().collect();
        t.sort();
        t
    }

    /// Stops the clients; returns the acknowledged numbers and the highest number any
    /// client tried.
    pub fn stop(self) -> (BTreeSet<u64>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("a row writer panicked");
        }
        let acked = self.acked.lock().unwrap().keys().copied().collect();
        (acked, self.next.load(Ordering::SeqCst) - 1)
    }
}

fn write_rows(
    addr: &str,
    stop: &AtomicBool,
    next: &AtomicU64,
    acked: &Mutex<BTreeMap<u64, Instant>>,
) {
    let login = || {
        let mut l = mariadb::login(addr, mariadb::APP_USER).database(mariadb::APP_DB);
        l.connect_timeout = Duration::from_millis(500);
        l.io_timeout = Some(Duration::from_secs(30));
        l
    };
    let mut conn: Option<MyConn> = None;
    while !stop.load(Ordering::SeqCst) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match MyConn::connect(&login()) {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        let n = next.fetch_add(1, Ordering::SeqCst);
        match c.run(&format!(
            "INSERT INTO rows_ (n, marker) VALUES ({n}, '{}')",
            marker(n)
        )) {
            Ok(()) => {
                acked.lock().unwrap().insert(n, Instant::now());
            }
            // The commit's fate is unknown: it is not recorded, and never retried.
            Err(_) => conn = None,
        }
    }
}

/// Every transaction of a stream's records (LSN, payload), in order; panics if the
/// stream breaks the front's rules (the assembler checks GTID contiguity).
pub fn transactions<'a>(
    records: impl IntoIterator<Item = (u64, &'a [u8])>,
    what: &str,
) -> Vec<Transaction> {
    let mut asm = Assembler::new();
    let mut out = Vec::new();
    for (lsn, payload) in records {
        match asm.push(lsn, payload) {
            Ok(Some(Item::Transaction(t))) => out.push(t),
            Ok(_) => {}
            Err(e) => panic!("{what}: {e}"),
        }
    }
    out
}

/// How many times each row number's marker appears in `transactions`.
pub fn row_counts(transactions: &[Transaction]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for t in transactions {
        let bytes = &t.events;
        let mut at = 0;
        while let Some(i) = find(&bytes[at..], b"row:") {
            let start = at + i + 4;
            let end = match find(&bytes[start..], b";") {
                Some(e) => start + e,
                None => break,
            };
            if let Some(n) = std::str::from_utf8(&bytes[start..end])
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            {
                *counts.entry(n).or_insert(0) += 1;
            }
            at = end;
        }
    }
    counts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `n` of every row of `rows_` in `db`, with how often each appears.
pub fn table_counts(c: &mut MyConn) -> BTreeMap<u64, usize> {
    let result = c.query("SELECT n FROM rows_").expect("select rows");
    let mut counts = BTreeMap::new();
    for row in result.rows {
        let n: u64 = String::from_utf8_lossy(row[0].as_deref().expect("n"))
            .parse()
            .expect("a number");
        *counts.entry(n).or_insert(0) += 1;
    }
    counts
}

/// A connection to `db` as the front's account would not need; as `app`.
pub fn connect(db: &MariaDb) -> MyConn {
    db.connect().expect("connect to MariaDB")
}

/// A login that a test can break (a wrong password, say).
pub fn front_login(db: &MariaDb) -> Login {
    mariadb::login(&db.addr(), mariadb::FRONT_USER)
}

/// Whether MariaDB's server and its tools are here; prints why not.
pub fn tools_or_skip(test: &str) -> bool {
    if !mariadb_or_skip(test) {
        return false;
    }
    for tool in [MARIADB_BINLOG, MARIADB] {
        if !Path::new(tool).exists() {
            eprintln!("skip {test}: no {tool} (the Debian package mariadb-client)");
            return false;
        }
    }
    true
}

/// Runs `lockstep binlog export` of `stream` from `nodes` ("HOST:PORT,...") into
/// files of `file_bytes`; returns its output.
pub fn export(
    nodes: &str,
    stream: &str,
    out: &Path,
    file_bytes: u64,
    from: Option<&str>,
    json: bool,
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lockstep"));
    cmd.args(["binlog", "export", "--nodes", nodes, "--stream", stream])
        .arg("--out")
        .arg(out)
        .args(["--file-bytes", &file_bytes.to_string()]);
    if let Some(pos) = from {
        cmd.args(["--from-gtid", pos]);
    }
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("run lockstep")
}

/// The files of an export, from its index.
pub fn files(out: &Path) -> Vec<PathBuf> {
    let index = std::fs::read_to_string(out.join("lockstep-bin.index")).expect("the index");
    index
        .lines()
        .map(|l| out.join(l.strip_prefix("./").expect("./NAME")))
        .collect()
}

/// `mariadb-binlog --verify-binlog-checksum` decodes `files` without an error.
pub fn decode(files: &[PathBuf], extra: &[&str]) -> Vec<u8> {
    let out = Command::new(MARIADB_BINLOG)
        .arg("--verify-binlog-checksum")
        .args(extra)
        .args(files)
        .output()
        .expect("run mariadb-binlog");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "mariadb-binlog {files:?} failed ({}): {stderr}",
        out.status
    );
    out.stdout
}

/// `mariadb-binlog FILES | mariadb` into `db`.
pub fn replay(files: &[PathBuf], extra: &[&str], db: &MariaDb) {
    let sql = decode(files, extra);
    let mut client = Command::new(MARIADB)
        .args(["-h", "127.0.0.1", "-P", &db.port.to_string(), "-u", "app"])
        .arg(format!("--max-allowed-packet={PACKET_BYTES}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mariadb");
    let mut stdin = client.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&sql));
    let out = client.wait_with_output().expect("mariadb");
    writer.join().unwrap().expect("feed mariadb");
    assert!(
        out.status.success(),
        "mariadb-binlog {files:?} | mariadb failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A MariaDB without replication that takes the replay of an export.
pub fn server(dir: &Path, name: &str, port: u16, id: u32) -> MariaDb {
    MariaDb::create(
        dir,
        name,
        port,
        id,
        Role::Alone,
        &[format!("--max-allowed-packet={PACKET_BYTES}")],
    )
    .expect("start MariaDB")
}
