//! One process per node id, on real `lockstepd` processes: a 3-node cluster with a
//! controller and a cluster secret serves appends while a second process of node 2 is
//! started on node 2's data directory (refused by the directory's lock, naming the
//! holder's pid) and on a data directory and port of its own (refused by the other
//! nodes, which say so, and it stops with one line saying where node 2 is served);
//! appends keep committing throughout. A node 2 killed with SIGKILL starts again at
//! once: its old process is gone, so the others give it the id. A fake peer that
//! passes the secret's handshake and greets as a live node id with another
//! incarnation gets `Error (id-in-use)`; one that sends a status of another
//! incarnation than its greeting's is answered with an error and closed.

#[path = "common/procs.rs"]
mod procs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lockstep::control::{ControlMsg, NodeStatus};
use lockstep::server::auth::{self, Secret};
use lockstep::wire::{ErrorCode, FrameDecoder, Message, RequestId};
use procs::*;

const SECRET: &str = "node-identity-cluster-secret-0123456789";

/// A cluster with a controller whose nodes prove they know `SECRET`.
fn start() -> Procs {
    let layout = Layout::new_with(&|_| "secret_file = \"secret\"\n".into(), &|_| {
        "mode = \"strong\"\n[control]\n".into()
    });
    let secret = layout.dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    Procs::start_layout(layout)
}

/// Runs `lockstepd --config config` to its end (at most `within`).
fn run_lockstepd(config: &Path, within: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstepd"))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the second process still runs after {within:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The lines of `text` that contain `what`.
fn lines_with<'a>(text: &'a str, what: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(what)).collect()
}

/// A workload on node 1 (the primary) that must keep committing while `f` runs.
fn keeps_committing(p: &Procs, f: impl FnOnce()) {
    let work = Workload::start(
        p.addr(1),
        4,
        client_options(Duration::from_secs(5)),
        Duration::from_secs(60),
    );
    assert!(
        work.wait_for_more(20, Duration::from_secs(10)),
        "no commits before"
    );
    f();
    assert!(
        work.wait_for_more(50, Duration::from_secs(10)),
        "commits stopped after the second process"
    );
    let report = work.stop();
    assert_eq!(report.in_doubt, 0, "{report:?}");
    assert_eq!(report.failed, 0, "{:?}", report.failures);
}

#[test]
fn a_second_process_on_the_same_data_directory_is_refused_naming_the_holder() {
    let _serial = serial();
    let mut p = start();
    let pid = p.pid(2);
    let config = p.layout.configs[1].clone();
    keeps_committing(&p, || {
        let o = run_lockstepd(&config, Duration::from_secs(20));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        let refusal = lines_with(&err, "is in use by another process");
        assert_eq!(refusal.len(), 1, "{err}");
        eprintln!("the second process said: {}", refusal[0]);
        assert!(refusal[0].contains(&format!("(pid {pid})")), "{err}");
        assert!(
            refusal[0].contains("node 2 is already served from it"),
            "{err}"
        );
        // Refused before it touched anything: no other line of substance.
        assert!(lines_with(&err, "listening on").is_empty(), "{err}");
    });
    p.assert_alive(2);
    let lock = std::fs::read_to_string(p.layout.dir.path().join("node2").join("LOCK")).unwrap();
    assert_eq!(lock, format!("pid {pid}\n"));
}

#[test]
fn a_second_process_with_a_live_node_id_is_refused_by_the_cluster_on_both_sides() {
    let _serial = serial();
    let mut p = start();
    // Node 2 again, elsewhere: another port and another data directory.
    let port = free_ports(1)[0];
    let twin_addr = format!("127.0.0.1:{port}");
    let text = std::fs::read_to_string(&p.layout.configs[1]).unwrap();
    let listen = format!("listen = \"{}\"", p.addr(2));
    assert!(text.contains(&listen), "{text}");
    let twin = text
        .replacen(&listen, &format!("listen = \"{twin_addr}\""), 1)
        .replacen("data_dir = \"node2\"", "data_dir = \"node2-twin\"", 1);
    let twin_path = p.layout.dir.path().join("twin.toml");
    std::fs::write(&twin_path, twin).unwrap();
    let addr2 = p.addr(2).to_string();
    keeps_committing(&p, || {
        let o = run_lockstepd(&twin_path, Duration::from_secs(20));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        let refusal = lines_with(&err, "already served at");
        assert_eq!(refusal.len(), 1, "{err}");
        eprintln!("the second process said: {}", refusal[0]);
        assert!(
            refusal[0].contains(&format!("node id 2 is already served at {addr2}")),
            "{err}"
        );
        // It stopped before it opened its logs or listened.
        assert!(lines_with(&err, "listening on").is_empty(), "{err}");
    });
    // Each other node said so, once.
    for n in [1, 3] {
        let text = p.stderr(n);
        let said = lines_with(&text, "refused a second process of node 2");
        assert_eq!(said.len(), 1, "node {n}:\n{text}");
        eprintln!("node {n} said: {}", said[0]);
        assert!(said[0].contains(&twin_addr), "{}", said[0]);
    }
    p.assert_alive(2);
    assert!(
        !p.layout
            .dir
            .path()
            .join("node2-twin")
            .join("streams")
            .exists(),
        "the second process opened its logs"
    );

    // A node 2 whose process died starts again at once, at the same address: the
    // others see its old connections closed and give it the id.
    p.kill9(2);
    let started = Instant::now();
    p.restart(2);
    eprintln!(
        "node 2 answered {:.0} ms after its restart",
        started.elapsed().as_secs_f64() * 1e3
    );
    for n in [1, 3] {
        let text = p.stderr(n);
        assert_eq!(
            lines_with(&text, "refused a second process of node 2").len(),
            1,
            "node {n} refused the restarted node 2:\n{text}"
        );
    }
    let mut c = connect(
        p.addr(1),
        &client_options(Duration::from_secs(5)),
        READY_WITHIN,
    )
    .unwrap();
    c.append(b"after the restart").unwrap();
    wait_in_sync(&mut c, Duration::from_secs(20));
}

/// A control connection to `addr` as node `node`, process `incarnation`, past the
/// secret's handshake; returns the socket and the answer to the greeting.
fn greet(addr: &str, node: u32, incarnation: u64) -> (TcpStream, FrameDecoder, Message<'static>) {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut decoder = FrameDecoder::new();
    let secret = Secret::new(SECRET.as_bytes()).unwrap();
    auth::dial(&sock, &mut decoder, &secret, node).expect("the handshake passes");
    let mut hello = Vec::new();
    Message::ControlHello {
        node_id: node,
        incarnation,
        addr: Some("127.0.0.1:1"),
    }
    .encode_into(RequestId(3), &mut hello)
    .unwrap();
    (&sock).write_all(&hello).unwrap();
    let answer = next_message(&sock, &mut decoder).expect("an answer to the greeting");
    (sock, decoder, answer)
}

/// The next message on `sock`, owned; `None` when the connection closed.
fn next_message(sock: &TcpStream, decoder: &mut FrameDecoder) -> Option<Message<'static>> {
    loop {
        if let Some(f) = decoder.next_frame().unwrap() {
            return Some(match f.message {
                Message::ControlWelcome {
                    node_id,
                    incarnation,
                } => Message::ControlWelcome {
                    node_id,
                    incarnation,
                },
                Message::Error { code, message } => Message::Error {
                    code,
                    message: String::leak(message.to_string()),
                },
                other => panic!("unexpected {}", other.kind()),
            });
        }
        match decoder.read_from(&mut &*sock) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn greetings_as_a_live_node_id_or_with_another_incarnation_are_refused() {
    let _serial = serial();
    let mut p = start();
    // As node 2, another process: node 2 is live, connected and talking.
    let (_s, _d, answer) = greet(p.addr(1), 2, 0xdead_beef);
    let Message::Error { code, message } = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(code, ErrorCode::IdInUse);
    assert!(
        message.starts_with(&format!("node id 2 is already served at {}", p.addr(2))),
        "{message}"
    );
    // As node 1 itself, at node 1.
    let (_s, _d, answer) = greet(p.addr(1), 1, 0xdead_beef);
    assert!(
        matches!(answer, Message::Error { code: ErrorCode::IdInUse, message } if message.contains("node id 1 is already served at")),
        "{answer:?}"
    );
    let text = p.stderr(1);
    assert_eq!(
        lines_with(&text, "refused a second process of node 2").len(),
        1,
        "{text}"
    );

    // A node id of its own is welcomed; a status of another process on its connection
    // is answered with an error and closes it.
    let (sock, mut d, answer) = greet(p.addr(1), 9, 7);
    assert!(
        matches!(answer, Message::ControlWelcome { node_id: 1, .. }),
        "{answer:?}"
    );
    let status = ControlMsg::Status(NodeStatus {
        node: 9,
        incarnation: 8,
        streams: Vec::new(),
    })
    .encode();
    let mut frame = Vec::new();
    Message::Control { message: &status }
        .encode_into(RequestId(1), &mut frame)
        .unwrap();
    (&sock).write_all(&frame).unwrap();
    let answer = next_message(&sock, &mut d);
    assert!(
        matches!(answer, Some(Message::Error { code: ErrorCode::Unexpected, message }) if message.contains("a status of node 9 (incarnation 8) on the connection of node 9 (incarnation 7)")),
        "{answer:?}"
    );
    let mut rest = Vec::new();
    let _ = (&sock).read_to_end(&mut rest);
    assert!(
        p.stderr(1)
            .contains("control link from node 9: a status of node 9"),
        "{}",
        p.stderr(1)
    );
    // The cluster is unharmed.
    let mut c = connect(
        p.addr(1),
        &client_options(Duration::from_secs(5)),
        READY_WITHIN,
    )
    .unwrap();
    c.append(b"still committing").unwrap();
    p.assert_alive(1);
    p.assert_alive(2);
}
