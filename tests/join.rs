//! A new node joins a running 3-node cluster (lockstepd processes) with the cluster
//! secret: a wrong secret is refused and logged on both sides; the right one makes it
//! a learner that catches up under a client workload and enters the sync set, and it
//! holds every acknowledged commit, byte for byte, through a failover. With retention
//! on, the cluster has deleted the start of its log before the node joins: the node's
//! log starts over after the primary's first retained record.

#[path = "common/procs.rs"]
mod procs;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lockstep::client::{Client, ClientOptions};
use lockstep::wire::{ErrorCode, FrameDecoder, Message, RequestId};
use procs::{LogImage, free_ports};

const SECRET: &str = "7c1d0e3f-lockstep-test-cluster-secret";

struct Node {
    id: usize,
    starts: u32,
    config: PathBuf,
    stderr: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self) {
        self.starts += 1;
        self.child = Some(procs::spawn_lockstepd(
            Path::new(env!("CARGO_BIN_EXE_lockstepd")),
            &self.config,
            &self.stderr,
            self.id,
            self.starts,
        ));
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let status = procs::reap_stopped(c, self.id, Duration::from_secs(10));
            assert!(status.success(), "node {} stopped with {status}", self.id);
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn opts() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

/// GET /members of an admin endpoint.
fn members(admin: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(admin).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(sock, "GET /members HTTP/1.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut answer = String::new();
    sock.read_to_string(&mut answer).ok()?;
    let body = answer.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// Waits for `f`; on a timeout, shows what every node said and fails.
fn wait_for(dir: &Path, what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        if Instant::now() >= deadline {
            for n in 1..=4 {
                let text = std::fs::read_to_string(dir.join(format!("node{n}.stderr")))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!(
                    "--- node {n} (last lines, newest first)\n{}",
                    tail.join("\n")
                );
            }
            panic!("{what}: not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `hello` on a new connection; returns the node's `Error` answer.
fn answer_to(addr: &str, hello: &Message<'_>) -> (ErrorCode, String) {
    use std::io::Write;
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    hello.encode_into(RequestId(1), &mut out).unwrap();
    sock.write_all(&out).unwrap();
    let mut d = FrameDecoder::new();
    loop {
        if let Some(f) = d.next_frame().unwrap() {
            match f.message {
                Message::Error { code, message } => return (code, message.to_string()),
                other => panic!("answered {hello:?} with {}", other.kind()),
            }
        }
        assert!(
            d.read_from(&mut &sock).unwrap() > 0,
            "closed without an answer"
        );
    }
}

/// A peer that skips the handshake, and a joiner with the wrong secret, are refused.
fn refusals(
    d: &Path,
    addr: &dyn Fn(usize) -> String,
    admin: &dyn Fn(usize) -> String,
    nodes: &[Node],
    joiner: &mut Node,
    joiner_toml: &dyn Fn(&str) -> String,
) {
    // A peer that skips the handshake is refused: the secret guards every link
    // between nodes, not only joins.
    for hello in [
        Message::ControlHello {
            node_id: 2,
            incarnation: 1,
            addr: None,
        },
        Message::PeerHello {
            stream: "s",
            node_id: 1,
            epoch: 99,
        },
    ] {
        let (code, message) = answer_to(&addr(1), &hello);
        assert_eq!(code, ErrorCode::Unauthorized, "{message}");
        assert!(message.contains("did not prove"), "{message}");
    }

    // A node with the wrong secret is refused: it stops with the reason, and the
    // member it reached logs the refusal.
    write(&d.join("node4.toml"), &joiner_toml("wrong"));
    joiner.spawn();
    let mut child = joiner.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the wrong secret was not refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let said = joiner.stderr();
    assert!(said.contains("wrong cluster secret"), "joiner: {said}");
    assert!(
        nodes[1].stderr().contains("refused node 4")
            && nodes[1].stderr().contains("wrong cluster secret"),
        "seed: {}",
        nodes[1].stderr()
    );
    assert!(!d.join("node4/control/CLUSTER").exists());
    let view = members(&admin(1)).expect("members view");
    assert!(view["config"]["members"].get("4").is_none(), "{view}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Writes a secret file readable by its owner only, as lockstepd requires.
fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    write(path, text);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_new_node_joins_with_the_secret_catches_up_and_enters_the_sync_set() {
    join(false);
}

#[test]
fn a_new_node_joins_after_retention_deleted_the_start_of_the_log() {
    join(true);
}

fn join(retention: bool) {
    let _serial = procs::serial();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let d = dir.path();
    write_secret(&d.join("secret"), &format!("{SECRET}\n"));
    write_secret(&d.join("wrong"), "not-the-cluster-secret-at-all\n");
    // Small segments with retention, so that a few megabytes roll over several.
    let (segment_bytes, stream_extra, pad) = if retention {
        (2 << 20, "retain_segments = 1\n", 3000)
    } else {
        (4 << 20, "", 200)
    };
    write(
        &d.join("profile.toml"),
        &format!("description = \"join test\"\n[log]\nsegment_bytes = {segment_bytes}\n"),
    );
    let ports = free_ports(8);
    let addr = |n: usize| format!("127.0.0.1:{}", ports[n - 1]);
    let admin = |n: usize| format!("127.0.0.1:{}", ports[3 + n]);
    let mut nodes_toml = String::new();
    for n in 1..=3 {
        nodes_toml += &format!("[[nodes]]\nid = {n}\naddr = \"{}\"\n", addr(n));
    }
    let mut nodes: Vec<Node> = Vec::new();
    for n in 1..=3 {
        let config = d.join(format!("node{n}.toml"));
        write(
            &config,
            &format!(
                "node_id = {n}\ndata_dir = \"node{n}\"\nlisten = \"{}\"\nadmin = \"{}\"\n\
                 shards = 1\nprofile = \"profile.toml\"\nsecret_file = \"secret\"\n{nodes_toml}\
                 [[streams]]\nname = \"s\"\nprimary = 1\nmode = \"strong\"\n\
                 ack_timeout_ms = 300\n{stream_extra}[control]\n",
                addr(n),
                admin(n)
            ),
        );
        let mut node = Node {
            id: n,
            starts: 0,
            config,
            stderr: d.join(format!("node{n}.stderr")),
            child: None,
        };
        node.spawn();
        nodes.push(node);
    }
    let addrs: Vec<String> = (1..=3).map(addr).collect();

    // A client workload through the whole test: every acknowledged commit is kept.
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(u64, Vec<u8>)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        let mut all = addrs.clone();
        all.push(addr(4));
        std::thread::spawn(move || {
            let mut i = 0u64;
            let mut c: Option<Client> = None;
            while !stop.load(Ordering::SeqCst) {
                let Some(cl) = c.as_mut() else {
                    c = Client::connect(&all, "s", opts()).ok();
                    if c.is_none() {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    continue;
                };
                let p = format!("record {i} {}", "x".repeat((i % pad) as usize)).into_bytes();
                match cl.append(&p) {
                    Ok(lsn) => {
                        acked.lock().unwrap().push((lsn, p));
                        i += 1;
                    }
                    Err(_) => c = None,
                }
            }
        })
    };
    let count = || acked.lock().unwrap().len();
    wait_for(d, "first commits", Duration::from_secs(20), || {
        count() >= 200
    });
    if retention {
        // Every node deletes the segments all members hold once committed.
        wait_for(
            d,
            "retention on every node",
            Duration::from_secs(60),
            || {
                nodes
                    .iter()
                    .all(|n| n.stderr().contains("retention deleted"))
            },
        );
    }

    let joiner_toml = |secret: &str| {
        format!(
            "node_id = 4\ndata_dir = \"node4\"\nlisten = \"{}\"\nadmin = \"{}\"\nshards = 1\n\
             profile = \"profile.toml\"\nsecret_file = \"{secret}\"\njoin = [\"{}\", \"{}\"]\n",
            addr(4),
            admin(4),
            addr(2),
            addr(1)
        )
    };
    let mut joiner = Node {
        id: 4,
        starts: 0,
        config: d.join("node4.toml"),
        stderr: d.join("node4.stderr"),
        child: None,
    };
    if !retention {
        refusals(d, &addr, &admin, &nodes, &mut joiner, &joiner_toml);
    }

    // With the secret it joins, catches up and enters the sync set, under load.
    write(&d.join("node4.toml"), &joiner_toml("secret"));
    let _ = std::fs::remove_file(&joiner.stderr);
    joiner.spawn();
    let joined_at = Instant::now();
    let mut in_sync = Duration::ZERO;
    wait_for(d, "node 4 in the sync set", Duration::from_secs(30), || {
        let ok = members(&admin(1)).is_some_and(|v| {
            v["config"]["streams"]["s"]["sync_set"]
                .as_array()
                .is_some_and(|s| s.iter().any(|m| m == 4))
        });
        in_sync = joined_at.elapsed();
        ok
    });
    eprintln!("node 4 entered the sync set {in_sync:?} after its start");
    let view = members(&admin(4)).expect("node 4 serves its members view");
    assert_eq!(view["config"]["members"]["4"], addr(4), "{view}");
    assert_eq!(view["config"]["voters"], serde_json::json!([1, 2, 3]));
    let before = count();
    wait_for(
        d,
        "commits with node 4 in the sync set",
        Duration::from_secs(20),
        || count() >= before + 200,
    );

    // The primary dies: the cluster fails over with node 4 among the candidates, and
    // goes on committing.
    let primary = members(&admin(2)).unwrap()["config"]["streams"]["s"]["primary"]
        .as_u64()
        .unwrap() as usize;
    if primary == 4 {
        joiner.kill9();
    } else {
        nodes[primary - 1].kill9();
    }
    let before = count();
    wait_for(
        d,
        "commits after the failover",
        Duration::from_secs(30),
        || count() >= before + 100,
    );
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    joiner.stop();
    for n in &mut nodes {
        n.stop();
    }

    // Every acknowledged commit is on node 4 with identical bytes (when it was not the
    // one killed), and on every sync member that stayed up.
    let acked = acked.lock().unwrap();
    let last = acked.iter().map(|(l, _)| *l).max().unwrap();
    let (mut checked, mut held) = (0, 0);
    for n in 1..=4 {
        if n == primary {
            continue;
        }
        let log = LogImage::read(&d.join(format!("node{n}/streams/s")));
        log.assert_sound_and_dense(&format!("node {n}"));
        assert!(
            log.last_lsn() >= last,
            "node {n} ends at {}",
            log.last_lsn()
        );
        // Retention deletes what every member holds: what is older than a node's
        // first record was committed and deleted by design.
        if n == 4 && (log.first_lsn() > 1) != retention {
            for n in 1..=4 {
                let text =
                    std::fs::read_to_string(d.join(format!("node{n}.stderr"))).unwrap_or_default();
                let said: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains("retention") || l.contains("starts over"))
                    .collect();
                eprintln!("--- node {n}\n{}", said.join("\n"));
            }
            panic!("node 4's log starts at {}", log.first_lsn());
        }
        for (lsn, payload) in acked.iter().filter(|(l, _)| *l >= log.first_lsn()) {
            let rec = log
                .get(*lsn)
                .unwrap_or_else(|| panic!("node {n} lacks lsn {lsn}"));
            assert_eq!(&rec.2, payload, "node {n} lsn {lsn}");
            held += 1;
        }
        checked += 1;
    }
    assert_eq!(checked, 3);
    eprintln!("{held} acknowledged records checked on the surviving nodes");
    eprintln!(
        "{} acknowledged commits on every surviving node",
        acked.len()
    );
}
