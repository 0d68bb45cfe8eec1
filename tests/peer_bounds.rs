//! What an authenticated peer can make a node allocate: a 3-node cluster of `lockstepd`
//! processes with a controller and a cluster secret; a fake peer passes the secret
//! handshake and floods node 1's control plane with control messages as large as the
//! protocol allows, over several connections at once. Node 1's peak resident memory
//! (`VmHWM` in `/proc/PID/status`) may grow by at most [`GROWTH_MAX_KIB`] meanwhile,
//! and the cluster keeps committing. A control message that does not decode gets the
//! connection closed.

#[path = "common/procs.rs"]
mod procs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lockstep::constants::CONTROL_MESSAGE_BYTES_MAX;
use lockstep::control::{ControlMsg, NodeStatus, StreamStatus};
use lockstep::server::auth::{self, Secret};
use lockstep::wire::{FrameDecoder, Message, RequestId};
use procs::*;

const SECRET: &str = "peer-bounds-cluster-secret-0123456789";

/// Connections the fake peer floods at once, and messages each sends.
const LINKS: usize = 4;
const MESSAGES_PER_LINK: usize = 200;

/// Growth of node 1's peak resident memory the flood may cause: each connection may
/// hold `CONTROL_LINK_QUEUED_BYTES_MAX` (8 MiB) of decoded messages, a frame being read
/// and one being decoded; the flood sends more than eight times this bound.
const GROWTH_MAX_KIB: u64 = 96 << 10;

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

/// A field of `/proc/PID/status` in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A control connection to `addr` as node `node`, past the secret's handshake.
fn control_link(addr: &str, node: u32) -> TcpStream {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut decoder = FrameDecoder::new();
    let secret = Secret::new(SECRET.as_bytes()).unwrap();
    auth::dial(&sock, &mut decoder, &secret, node).expect("the handshake passes");
    let mut hello = Vec::new();
    Message::ControlHello {
        node_id: node,
        incarnation: 7,
        addr: None,
    }
    .encode_into(RequestId(0), &mut hello)
    .unwrap();
    (&sock).write_all(&hello).unwrap();
    sock
}

/// One `Control` frame as large as the protocol allows: a status of node `node`
/// (process 7, as its connection greeted) that the controller decodes in full and
/// then ignores (the node is not a member).
fn big_control_frame(node: u32) -> Vec<u8> {
    let name_bytes = CONTROL_MESSAGE_BYTES_MAX - 1024;
    let msg = ControlMsg::Status(NodeStatus {
        node,
        incarnation: 7,
        streams: vec![StreamStatus {
            stream: "x".repeat(name_bytes),
            epoch: 1,
            primary: false,
            last_epoch: 0,
            last_lsn: 0,
            durable_lsn: 0,
            commit_lsn: 0,
        }],
    })
    .encode();
    assert!(msg.len() <= CONTROL_MESSAGE_BYTES_MAX);
    let mut frame = Vec::new();
    Message::Control { message: &msg }
        .encode_into(RequestId(1), &mut frame)
        .unwrap();
    frame
}

#[test]
fn a_control_flood_from_an_authenticated_peer_stays_within_a_memory_bound() {
    let _serial = serial();
    let mut p = start();
    let addrs: Vec<String> = (1..=NODES).map(|n| p.addr(n).to_string()).collect();
    let opts = client_options(Duration::from_secs(10));
    let mut client = connect(&addrs[0], &opts, READY_WITHIN).unwrap();
    client.append(b"before").unwrap();
    let pid = p.pid(1);
    let before = proc_kib(pid, "VmHWM");
    let started = Instant::now();
    let senders: Vec<_> = (0..LINKS)
        .map(|i| {
            let mut sock = control_link(&addrs[0], 9 + i as u32);
            sock.set_write_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let frame = big_control_frame(9 + i as u32);
            std::thread::spawn(move || {
                let mut sent = 0usize;
                for _ in 0..MESSAGES_PER_LINK {
                    if sock.write_all(&frame).is_err() {
                        break;
                    }
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    // The cluster keeps committing through the flood.
    let mut committed = 0;
    while senders.iter().any(|s| !s.is_finished()) {
        client.append(b"during").unwrap();
        committed += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent: usize = senders.into_iter().map(|s| s.join().unwrap()).sum();
    let after = proc_kib(pid, "VmHWM");
    eprintln!(
        "sent {sent} control messages of {} KiB in {:.1} s over {LINKS} connections; \
         node 1's peak resident memory {before} KiB before, {after} KiB after; \
         {committed} commits meanwhile",
        big_control_frame(9).len() >> 10,
        started.elapsed().as_secs_f64()
    );
    assert!(
        sent * big_control_frame(9).len() > (8 * GROWTH_MAX_KIB as usize) << 10,
        "the flood was too small to tell: {sent} messages"
    );
    assert!(
        after - before <= GROWTH_MAX_KIB,
        "node 1's peak resident memory grew by {} KiB (bound {GROWTH_MAX_KIB} KiB)",
        after - before
    );
    client.append(b"after").unwrap();
    p.assert_alive(1);
}

#[test]
fn a_control_message_that_does_not_decode_closes_the_connection() {
    let _serial = serial();
    let mut p = start();
    let mut sock = control_link(p.addr(1), 9);
    let mut frame = Vec::new();
    Message::Control {
        message: &[9, 9, 9],
    }
    .encode_into(RequestId(1), &mut frame)
    .unwrap();
    sock.write_all(&frame).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 256];
    let closed = loop {
        match sock.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) if Instant::now() < deadline => {}
            Err(_) => break false,
        }
    };
    assert!(closed, "node 1 kept the connection open");
    assert!(
        p.stderr(1).contains("control link from node 9"),
        "{}",
        p.stderr(1)
    );
    p.assert_alive(1);
}
