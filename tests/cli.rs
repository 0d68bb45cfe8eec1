//! The `lockstep` binary against a real cluster: `append`, `read` and `status` talk to
//! three nodes started in this process (lockstep::server::Server, through
//! lockstep::demo::LocalCluster), and `demo --quick` runs whole.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use lockstep::constants::SEGMENT_BYTES_MIN;
use lockstep::demo::{LocalCluster, StreamSpec};
use lockstep::log::Log;
use lockstep::wire::Mode;
use serde_json::Value;

const STREAM: &str = "orders";

struct Ctx {
    cluster: LocalCluster,
    _dir: tempfile::TempDir,
}

impl Ctx {
    /// Three nodes with one strong stream, data under the build directory (a real disk).
    fn start() -> Ctx {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let streams = [StreamSpec::new(STREAM, Mode::Strong)];
        let cluster =
            LocalCluster::start(dir.path(), 3, &streams, Some(SEGMENT_BYTES_MIN)).unwrap();
        Ctx { cluster, _dir: dir }
    }

    fn nodes(&self) -> String {
        self.cluster.addrs().join(",")
    }

    /// Runs `lockstep CMD --nodes ... --stream orders ARGS...`.
    fn run(&self, cmd: &str, args: &[&str]) -> Output {
        lockstep(
            &[&[cmd, "--nodes", &self.nodes(), "--stream", STREAM], args].concat(),
            None,
        )
    }
}

fn lockstep(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Asserts exit status `code`, showing the output otherwise.
fn expect_status(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn append_then_read_returns_the_same_payloads_and_lsns() {
    let t = Ctx::start();
    let o = t.run("append", &["first", "second record", "third"]);
    expect_status(&o, 0);
    assert_eq!(stdout(&o), "1\n2\n3\n");

    // Lines of stdin, one record each (an empty line too), with --json.
    let o = lockstep(
        &[
            "append",
            "--node",
            &t.cluster.addrs()[0],
            "--stream",
            STREAM,
            "--json",
            "-",
        ],
        Some(b"line a\r\n\nline c\n"),
    );
    expect_status(&o, 0);
    let appended = json_lines(&o);
    assert_eq!(appended.len(), 1, "{appended:?}");
    assert_eq!(appended[0]["first_lsn"], 4);
    assert_eq!(appended[0]["count"], 3);

    // A file's bytes, not text, as one record.
    let file = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    std::fs::write(file.path(), &binary).unwrap();
    let o = t.run("append", &["--file", file.path().to_str().unwrap()]);
    expect_status(&o, 0);
    assert_eq!(stdout(&o), "7\n");

    let o = t.run("read", &["--from", "1", "--count", "5"]);
    expect_status(&o, 0);
    let lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(lines[0].starts_with("lsn=1 "), "{}", lines[0]);
    assert!(lines[0].ends_with(" len=5 \"first\""), "{}", lines[0]);
    assert!(
        lines[1].ends_with(" len=13 \"second record\""),
        "{}",
        lines[1]
    );
    assert!(lines[3].starts_with("lsn=4 "), "{}", lines[3]);
    assert!(lines[3].ends_with(" len=6 \"line a\""), "{}", lines[3]);
    assert!(lines[4].ends_with(" len=0 \"\""), "{}", lines[4]);

    // JSON: every record, with the payload bytes exactly as appended.
    let o = t.run("read", &["--from", "1", "--count", "100", "--json"]);
    expect_status(&o, 0);
    let records = json_lines(&o);
    let want: [&[u8]; 7] = [
        b"first",
        b"second record",
        b"third",
        b"line a",
        b"",
        b"line c",
        &binary,
    ];
    assert_eq!(records.len(), want.len());
    for (i, (r, payload)) in records.iter().zip(want).enumerate() {
        assert_eq!(r["lsn"], i as u64 + 1);
        assert_eq!(r["len"], payload.len());
        assert!(r["epoch"].as_u64().unwrap() >= 1);
        assert_eq!(
            unhex(r["payload_hex"].as_str().unwrap()),
            payload,
            "lsn {}",
            i + 1
        );
    }
    assert!(
        stderr(&o).contains("nothing committed from lsn 8 on"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn status_shows_the_primary_and_its_commits() {
    let t = Ctx::start();
    let payloads: Vec<String> = (0..25).map(|i| format!("p{i}")).collect();
    let args: Vec<&str> = payloads.iter().map(String::as_str).collect();
    expect_status(&t.run("append", &args), 0);
    expect_status(&t.run("append", &["one more"]), 0);

    let o = t.run("status", &["--json"]);
    expect_status(&o, 0);
    let s: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(s["role"], "primary");
    assert_eq!(s["stream"], STREAM);
    assert_eq!(s["commits"], 26);
    assert_eq!(s["commit_lsn"], 26);
    assert_eq!(s["members"].as_array().unwrap().len(), 2, "{s}");

    let o = t.run("status", &[]);
    expect_status(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("role      primary, epoch "), "{text}");
    assert!(text.contains("mode strong"), "{text}");
    assert!(text.contains("commits   26 ("), "{text}");
    assert!(text.contains("commit 26"), "{text}");
    assert!(text.contains("2 of 2 members in sync"), "{text}");
    assert!(text.contains("| total "), "{text}");

    // Asked first, a secondary does not show its own (stale) member table: the
    // primary's view is shown, the same as the primary's own answer.
    let secondary = &t.cluster.addrs()[1];
    let both = format!("{secondary},{}", t.cluster.addrs()[0]);
    let o = lockstep(
        &["status", "--nodes", &both, "--stream", STREAM, "--json"],
        None,
    );
    expect_status(&o, 0);
    let via: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(via["role"], "primary", "{via}");
    assert_eq!(via["primary_view"], true, "{via}");
    assert_eq!(via["members"], s["members"], "{via}\n{s}");
    // With no primary among the nodes (and no controller to name it), the secondary's
    // own view is shown, and says so.
    let o = lockstep(&["status", "--nodes", secondary, "--stream", STREAM], None);
    expect_status(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("role      secondary"), "{text}");
    assert!(
        text.contains("note: no primary of this stream answered"),
        "{text}"
    );
    assert!(!text.contains("| member "), "{text}");
}

#[test]
fn append_to_an_unreachable_node_fails_with_a_clear_message() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let o = lockstep(
        &["append", "--nodes", &addr, "--stream", STREAM, "hello"],
        None,
    );
    expect_status(&o, 3);
    assert!(stdout(&o).is_empty());
    let err = stderr(&o);
    assert!(err.starts_with("lockstep append: no node of"), "{err}");
    assert!(err.contains(&addr), "{err}");
    assert!(err.contains("connect"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let o = lockstep(
        &["append", "--nodes", "127.0.0.1:1", "--stream", STREAM],
        None,
    );
    expect_status(&o, 2);
    assert!(stderr(&o).contains("nothing to append"), "{}", stderr(&o));
    let o = lockstep(&["append", "--stream", STREAM, "x"], None);
    expect_status(&o, 2);
    let o = lockstep(
        &["read", "--nodes", "127.0.0.1:1", "--stream", STREAM],
        None,
    );
    expect_status(&o, 2);
    assert!(stderr(&o).contains("--from"), "{}", stderr(&o));
}

#[test]
fn an_append_without_its_sync_set_is_in_doubt_and_says_how_to_check() {
    let mut t = Ctx::start();
    expect_status(&t.run("append", &["committed"]), 0);
    // The stream blocks without its sync set (on_insufficient = "block"): the next
    // append cannot commit, and the node answers in doubt when its time is up.
    t.cluster.stop_node(2);
    t.cluster.stop_node(3);
    let o = t.run("append", &["--timeout-ms", "500", "maybe"]);
    expect_status(&o, 4);
    let err = stderr(&o);
    assert!(err.contains("in doubt"), "{err}");
    assert!(err.contains("fate is unknown"), "{err}");
    assert!(
        err.contains(&format!(
            "lockstep read --nodes {} --stream {STREAM} --from 2 --count 1",
            t.nodes()
        )),
        "{err}"
    );
    // And that look-up works: record 2 is not committed.
    let o = t.run("read", &["--from", "2"]);
    expect_status(&o, 0);
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert!(stderr(&o).contains("the commit lsn"), "{}", stderr(&o));
}

/// The cells of the rows of the markdown table in `text` whose first cell starts with
/// `prefix`.
fn rows<'a>(text: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    text.lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells[0].starts_with(prefix))
        .collect()
}

#[test]
fn demo_quick_prints_the_table_and_checks_the_logs() {
    let parent = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = parent.path().join("kept");
    let json = parent.path().join("report.json");
    let o = lockstep(
        &[
            "demo",
            "--quick",
            "--keep",
            dir.to_str().unwrap(),
            "--report",
            json.to_str().unwrap(),
        ],
        None,
    );
    expect_status(&o, 0);
    let text = stdout(&o);
    for mode in ["strong", "semi", "async"] {
        for load in ["1 client", "64 outstanding"] {
            let r = rows(&text, &format!("{mode}, {load}"));
            assert_eq!(r.len(), 1, "{mode}, {load}:\n{text}");
            for cell in &r[0][1..5] {
                let v: f64 = cell
                    .parse()
                    .unwrap_or_else(|_| panic!("{cell:?} in\n{text}"));
                assert!(v > 0.0, "{mode}, {load}: {cell}\n{text}");
            }
        }
    }
    let floor = rows(&text, "floor: strong sync");
    assert_eq!(floor.len(), 1, "{text}");
    assert!(floor[0][1].parse::<f64>().unwrap() > 0.0);
    assert!(
        text.contains("committed prefixes identical on 3 nodes"),
        "{text}"
    );
    assert!(
        text.contains(&format!("data kept in {}", dir.display())),
        "{text}"
    );

    // The JSON report agrees with the kept logs: every node holds each stream's
    // committed prefix.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["series"].as_array().unwrap().len(), 6);
    let floor_us = report["floor"]["strong_sync_p50_us"].as_f64().unwrap();
    for s in report["series"].as_array().unwrap() {
        let ratio = s["p50_over_floor"].as_f64();
        if s["outstanding"] == 1 {
            let p50 = s["p50_us"].as_f64().unwrap();
            assert!((ratio.unwrap() - p50 / floor_us).abs() < 1e-9, "{s}");
        } else {
            assert!(ratio.is_none(), "{s}");
            assert!(s["commits_per_s"].as_f64().unwrap() > 0.0, "{s}");
        }
    }
    let streams = report["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 3);
    for s in streams {
        let name = s["stream"].as_str().unwrap();
        let commit = s["commit_lsn"].as_u64().unwrap();
        assert!(commit > 0, "{s}");
        for node in 1..=3 {
            let log_dir = stream_dir(&dir, node, name);
            let log = Log::open(&log_dir, Default::default(), 0).unwrap();
            assert!(
                log.durable_lsn() >= commit,
                "node {node} {name}: {} < {commit}",
                log.durable_lsn()
            );
        }
    }
}

fn stream_dir(dir: &Path, node: u32, stream: &str) -> PathBuf {
    dir.join(format!("node{node}")).join("streams").join(stream)
}

#[test]
fn demo_mariadb_quick_measures_both_systems_and_finds_every_transaction_on_every_node() {
    if let Err(why) = lockstep::demo::mariadb::available() {
        eprintln!("skip demo_mariadb_quick: {why}");
        return;
    }
    let parent = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let json = parent.path().join("report.json");
    let o = lockstep(
        &[
            "demo",
            "--mariadb",
            "--quick",
            "--report",
            json.to_str().unwrap(),
        ],
        None,
    );
    expect_status(&o, 0);
    let text = stdout(&o);
    for system in ["MariaDB alone", "MariaDB + lockstep strong (2 secondaries)"] {
        for load in ["1 client", "16 clients"] {
            let r = rows(&text, &format!("{system}, {load}"));
            assert_eq!(r.len(), 1, "{system}, {load}:\n{text}");
            let commits: f64 = r[0][4].parse().unwrap();
            assert!(commits > 0.0, "{system}, {load}: {commits}\n{text}");
        }
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["commits_without_ack"], 0, "{report}");
    assert_eq!(report["identical_on_nodes"], 3);
    let transactions = report["transactions"].as_u64().unwrap();
    // Every commit the clients counted is a transaction of the stream (the table's
    // creation and the warm-up are more).
    let counted: f64 = report["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["system"] != "MariaDB alone")
        .map(|s| s["commits_per_s"].as_f64().unwrap() * report["measure_s"].as_f64().unwrap())
        .sum();
    assert!(transactions as f64 >= counted, "{transactions} < {counted}");
    assert!(
        report["position"]
            .as_str()
            .unwrap()
            .ends_with(&format!("-{transactions}")),
        "{report}"
    );
}
