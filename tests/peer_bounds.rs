//! What an authenticated peer can make a node allocate, on real `lockstepd` processes:
//! a 3-node cluster with a controller and a cluster secret, and a fake peer that
//! passes the secret's handshake (the crate's own `auth::dial`) and then misbehaves:
//! - floods node 1's control plane with the largest control messages the bounds let
//!   through, over as many connections as a non-member may hold;
//! - sends a raft message of a million empty entries, a raft term near `u64::MAX`, a
//!   status of more streams than a node may host, a frame announcing more than the
//!   largest control message, one connection more than non-members may hold;
//! - opens more connections that never greet than the node serves handshakes for;
//! - greets node 2 as its primary and sends a `Replicate` larger than any log batch,
//!   and a `Rebase` to an LSN beyond the wire's bound (which aborted a node before).
//!
//! Each misbehaviour is answered with an `Error` frame and a close, and one line in
//! the node's log; the cluster keeps committing; the node's resident memory (`VmRSS`
//! in `/proc/PID/status`, sampled every 5 ms) stays within
//! `constants::PEER_INPUT_BYTES_MAX` of what it was before.

#[path = "common/procs.rs"]
mod procs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lockstep::constants::{
    CONTROL_LINKS_NONMEMBER_MAX, CONTROL_MESSAGE_BYTES_MAX, HANDSHAKES_MAX, PEER_INPUT_BYTES_MAX,
    STREAM_NAME_BYTES_MAX, STREAMS_MAX,
};
use lockstep::control::{ControlMsg, NodeStatus, StreamStatus};
use lockstep::server::auth::{self, Secret};
use lockstep::wire::{ErrorCode, FrameDecoder, Message, RecordRef, Records, RequestId};
use procs::*;

const SECRET: &str = "peer-bounds-cluster-secret-0123456789";

/// Messages each flooding connection sends.
const MESSAGES_PER_LINK: usize = 96;

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

/// A field of `/proc/PID/status` in KiB (`None` once the process is gone).
fn try_proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    try_proc_kib(pid, field).unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Samples a process's `VmRSS` every 5 ms until stopped; the highest seen, in KiB.
struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(proc_kib(pid, "VmRSS")));
        let (s, pk) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Some(rss) = try_proc_kib(pid, "VmRSS") else {
                    return;
                };
                pk.fetch_max(rss, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        RssWatch {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak_kib(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// A connection to `addr` as node `node`, past the secret's handshake.
fn authed(addr: &str, node: u32) -> (TcpStream, FrameDecoder) {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut decoder = FrameDecoder::new();
    let secret = Secret::new(SECRET.as_bytes()).unwrap();
    auth::dial(&sock, &mut decoder, &secret, node).expect("the handshake passes");
    (sock, decoder)
}

fn send(sock: &TcpStream, m: &Message<'_>) {
    let mut out = Vec::new();
    m.encode_into(RequestId(1), &mut out).unwrap();
    (&*sock).write_all(&out).unwrap();
}

/// What the node answered before it closed: `Some((code, message))` for an `Error`
/// frame, and whether the connection then closed.
fn error_then_close(
    sock: &TcpStream,
    decoder: &mut FrameDecoder,
) -> (Option<(ErrorCode, String)>, bool) {
    let mut error = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        while let Ok(Some(f)) = decoder.next_frame() {
            if let Message::Error { code, message } = f.message {
                error = Some((code, message.to_string()));
            }
        }
        if Instant::now() >= deadline {
            return (error, false);
        }
        match decoder.read_from(&mut &*sock) {
            Ok(0) => return (error, true),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (error, true),
            Err(_) => {}
        }
    }
}

/// A control connection to `addr` as node `node` (process 7), welcomed.
fn control_link(addr: &str, node: u32) -> (TcpStream, FrameDecoder) {
    let (sock, mut decoder) = authed(addr, node);
    send(
        &sock,
        &Message::ControlHello {
            node_id: node,
            incarnation: 7,
            addr: None,
        },
    );
    loop {
        if let Some(f) = decoder.next_frame().unwrap() {
            assert!(
                matches!(f.message, Message::ControlWelcome { .. }),
                "node {node}: {:?}",
                f.message
            );
            return (sock, decoder);
        }
        assert!(decoder.read_from(&mut &sock).unwrap() > 0, "closed");
    }
}

/// A status of node `node` (process 7) as large as the bounds let through: every
/// stream a node may host, each name as long as a name may be. The controller decodes
/// it in full and ignores it (the node is not a member).
fn big_status_frame(node: u32) -> Vec<u8> {
    let streams = (0..STREAMS_MAX)
        .map(|i| StreamStatus {
            stream: format!("{i:0>width$}", width = STREAM_NAME_BYTES_MAX),
            epoch: 1,
            primary: false,
            last_epoch: 0,
            last_lsn: 0,
            durable_lsn: 0,
            commit_lsn: 0,
        })
        .collect();
    let msg = ControlMsg::Status(NodeStatus {
        node,
        incarnation: 7,
        streams,
    })
    .encode();
    assert!(msg.len() <= CONTROL_MESSAGE_BYTES_MAX);
    let mut frame = Vec::new();
    Message::Control { message: &msg }
        .encode_into(RequestId(1), &mut frame)
        .unwrap();
    frame
}

/// A `Control` frame of raw controller message bytes.
fn control_frame(msg: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    Message::Control { message: msg }
        .encode_into(RequestId(1), &mut frame)
        .unwrap();
    frame
}

/// Sends `frame` on a fresh control connection as node `node`; returns the node's
/// `Error` and whether it closed the connection.
fn control_misbehaves(addr: &str, node: u32, frame: &[u8]) -> (ErrorCode, String) {
    let (mut sock, mut d) = control_link(addr, node);
    sock.write_all(frame).unwrap();
    let (error, closed) = error_then_close(&sock, &mut d);
    assert!(closed, "node kept the connection open after {error:?}");
    error.expect("an Error frame before the close")
}

/// A frame with raw fields: a header for `kind` with a body, the checksum made as the
/// protocol makes it, for bodies the encoder refuses to write.
fn raw_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(b"LSW1");
    f.push(1);
    f.push(kind);
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(&1u64.to_le_bytes());
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&f), body);
    f.extend_from_slice(&crc.to_le_bytes());
    f.extend_from_slice(body);
    f
}

#[test]
fn an_authenticated_peer_that_misbehaves_is_closed_and_the_node_stays_within_its_bound() {
    let _serial = serial();
    let mut p = start();
    let addr1 = p.addr(1).to_string();
    let opts = client_options(Duration::from_secs(10));
    let mut client = connect(&addr1, &opts, READY_WITHIN).unwrap();
    client.append(b"before").unwrap();
    let pid = p.pid(1);
    let before = proc_kib(pid, "VmRSS");
    let watch = RssWatch::start(pid);
    let started = Instant::now();

    // 1. A flood over as many connections as non-members may hold; the cluster keeps
    // committing through it.
    let frames: Vec<Vec<u8>> = (0..CONTROL_LINKS_NONMEMBER_MAX)
        .map(|i| big_status_frame(9 + i as u32))
        .collect();
    let links: Vec<(TcpStream, FrameDecoder)> = (0..CONTROL_LINKS_NONMEMBER_MAX)
        .map(|i| control_link(&addr1, 9 + i as u32))
        .collect();
    // One more non-member finds no room.
    let (sock, mut d) = authed(&addr1, 99);
    send(
        &sock,
        &Message::ControlHello {
            node_id: 99,
            incarnation: 7,
            addr: None,
        },
    );
    let (error, closed) = error_then_close(&sock, &mut d);
    assert!(closed);
    let (code, message) = error.expect("an error");
    assert_eq!(code, ErrorCode::Overloaded, "{message}");
    assert!(message.contains("non-members"), "{message}");
    let senders: Vec<_> = links
        .into_iter()
        .zip(frames)
        .map(|((mut sock, _), frame)| {
            sock.set_write_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            std::thread::spawn(move || {
                let mut sent = 0usize;
                for _ in 0..MESSAGES_PER_LINK {
                    if sock.write_all(&frame).is_err() {
                        break;
                    }
                    sent += frame.len();
                }
                sent
            })
        })
        .collect();
    let mut committed = 0;
    while senders.iter().any(|s| !s.is_finished()) {
        client.append(b"during").unwrap();
        committed += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let flooded: usize = senders.into_iter().map(|s| s.join().unwrap()).sum();
    assert!(
        flooded > 2 * PEER_INPUT_BYTES_MAX,
        "the flood was too small to tell: {flooded} bytes"
    );
    let flood_secs = started.elapsed().as_secs_f64();

    // 2. Messages that would cost more than their size, or break a bound.
    let mut empty_entries = vec![1u8]; // a raft message (its tag), of empty entries
    while empty_entries.len() + 2 <= CONTROL_MESSAGE_BYTES_MAX {
        empty_entries.extend([0x3a, 0x00]);
    }
    let (code, message) = control_misbehaves(&addr1, 20, &control_frame(&empty_entries));
    assert_eq!(code, ErrorCode::TooLarge, "{message}");
    assert!(
        message.contains("a raft message of 1048575 elements"),
        "{message}"
    );
    // A heartbeat of term u64::MAX - 1: raft would compute term + 1 on it.
    let mut huge_term = vec![1u8, 0x08, 8, 0x20];
    let mut v = u64::MAX - 1;
    while v >= 0x80 {
        huge_term.push((v as u8) | 0x80);
        v >>= 7;
    }
    huge_term.push(v as u8);
    let (code, message) = control_misbehaves(&addr1, 21, &control_frame(&huge_term));
    assert_eq!(code, ErrorCode::Malformed, "{message}");
    assert!(message.contains("beyond"), "{message}");
    let too_many = ControlMsg::Status(NodeStatus {
        node: 22,
        incarnation: 7,
        streams: vec![
            StreamStatus {
                stream: String::new(),
                epoch: 1,
                primary: false,
                last_epoch: 0,
                last_lsn: 0,
                durable_lsn: 0,
                commit_lsn: 0,
            };
            STREAMS_MAX + 1
        ],
    })
    .encode();
    let (code, message) = control_misbehaves(&addr1, 22, &control_frame(&too_many));
    assert_eq!(code, ErrorCode::TooLarge, "{message}");
    assert!(
        message.contains(&format!("at most {STREAMS_MAX}")),
        "{message}"
    );
    // A header announcing more than the largest control message: refused at once.
    let mut header = raw_frame(0x41, &[]);
    header[16..20].copy_from_slice(&(u32::MAX).to_le_bytes());
    let (code, message) = control_misbehaves(&addr1, 23, &header[..24]);
    assert_eq!(code, ErrorCode::TooLarge, "{message}");

    // 3. Connections that never greet: beyond the handshakes served, closed at once.
    let silent: Vec<TcpStream> = (0..HANDSHAKES_MAX + 16)
        .map(|_| TcpStream::connect(&addr1).unwrap())
        .collect();
    let mut closed_at_once = 0;
    for s in &silent {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut b = [0u8; 1];
        if matches!((&*s).read(&mut b), Ok(0)) {
            closed_at_once += 1;
        }
    }
    assert!(
        closed_at_once >= 16,
        "{closed_at_once} of {} silent connections closed at once",
        silent.len()
    );
    drop(silent);
    client.append(b"after the silent connections").unwrap();

    let peak = watch.peak_kib();
    let bound_kib = (PEER_INPUT_BYTES_MAX >> 10) as u64;
    eprintln!(
        "node 1: VmRSS {before} KiB before, peak {peak} KiB (growth {} KiB; bound {bound_kib} KiB); \
         flood of {} MiB over {CONTROL_LINKS_NONMEMBER_MAX} connections in {flood_secs:.1} s, \
         {committed} commits meanwhile",
        peak.saturating_sub(before),
        flooded >> 20,
    );
    assert!(
        peak.saturating_sub(before) <= bound_kib,
        "node 1's resident memory grew by {} KiB (bound {bound_kib} KiB)",
        peak - before
    );
    client.append(b"after").unwrap();
    // One line for each refused message.
    let log = p.stderr(1);
    for (node, what) in [
        (20, "a raft message of 1048575 elements"),
        (21, "beyond"),
        (22, "a status of 4097 streams"),
        (
            23,
            "Control frame body of 4294967295 bytes exceeds the limit",
        ),
    ] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("control link from node {node}:")))
            .collect();
        assert_eq!(lines.len(), 1, "node {node}: {log}");
        assert!(lines[0].contains(what), "{}", lines[0]);
    }
    p.assert_alive(1);
}

#[test]
fn a_peer_greeting_as_the_primary_with_records_no_batch_holds_or_a_wrapping_lsn_is_closed() {
    let _serial = serial();
    let mut p = start();
    let opts = client_options(Duration::from_secs(10));
    let mut client = connect(p.addr(1), &opts, READY_WITHIN).unwrap();
    client.append(b"before").unwrap();
    let status = wait_in_sync(&mut client, Duration::from_secs(10));
    let epoch = status["epoch"].as_u64().expect("epoch");
    let pid = p.pid(2);
    let before = proc_kib(pid, "VmRSS");
    let watch = RssWatch::start(pid);

    // As node 1 (the primary) to node 2: its greeting and the bad frame in one write,
    // so that the real primary, which connects again as soon as its link is replaced,
    // does not replace this one first (tried again if it did: closed without an error).
    let impersonate = |frame: &[u8]| {
        for _ in 0..5 {
            let (sock, mut d) = authed(p.addr(2), 1);
            let mut out = Vec::new();
            Message::PeerHello {
                stream: STREAM,
                node_id: 1,
                epoch,
            }
            .encode_into(RequestId(1), &mut out)
            .unwrap();
            out.extend_from_slice(frame);
            if (&sock).write_all(&out).is_err() {
                continue;
            }
            let (error, closed) = error_then_close(&sock, &mut d);
            if error.is_some() || !closed {
                return (error, closed);
            }
        }
        panic!("the real primary replaced every impersonating link");
    };
    let payload = vec![0x5au8; 512 << 10];
    let records: Vec<RecordRef<'_>> = (0..8u64)
        .map(|i| RecordRef {
            lsn: 1_000_001 + i,
            epoch,
            payload: &payload,
        })
        .collect();
    let mut replicate = Vec::new();
    Message::Replicate {
        epoch,
        prev_lsn: 1_000_000,
        prev_epoch: epoch,
        commit_lsn: 0,
        records: Records::new(&records),
    }
    .encode_into(RequestId(1), &mut replicate)
    .unwrap();
    let (error, closed) = impersonate(&replicate);
    assert!(closed, "{error:?}");
    let (code, message) = error.expect("an error");
    assert_eq!(code, ErrorCode::TooLarge, "{message}");
    assert!(
        message.contains("exceeds this member's log batch"),
        "{message}"
    );

    // A Rebase to LSN u64::MAX: the member would start its log over at u64::MAX + 1.
    let mut body = Vec::new();
    body.extend_from_slice(&epoch.to_le_bytes());
    body.extend_from_slice(&u64::MAX.to_le_bytes());
    body.extend_from_slice(&1u64.to_le_bytes());
    let (error, closed) = impersonate(&raw_frame(0x24, &body));
    assert!(closed, "{error:?}");
    let (code, message) = error.expect("an error");
    assert_eq!(code, ErrorCode::Malformed, "{message}");
    assert!(message.contains("beyond the largest LSN"), "{message}");

    // The primary connects again, and commits go on.
    for i in 0..20 {
        client.append(format!("after {i}").as_bytes()).unwrap();
    }
    wait_in_sync(&mut client, Duration::from_secs(10));
    let peak = watch.peak_kib();
    let bound_kib = (PEER_INPUT_BYTES_MAX >> 10) as u64;
    eprintln!(
        "node 2: VmRSS {before} KiB before, peak {peak} KiB (growth {} KiB; bound {bound_kib} KiB)",
        peak.saturating_sub(before)
    );
    assert!(peak.saturating_sub(before) <= bound_kib);
    let log = p.stderr(2);
    for what in ["exceeds this member's log batch", "beyond the largest LSN"] {
        assert_eq!(
            log.lines().filter(|l| l.contains(what)).count(),
            1,
            "{what}: {log}"
        );
    }
    p.assert_alive(2);
}
