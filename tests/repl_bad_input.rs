//! Bad input on a node's client port, on loopback, against a 3-node strong-sync cluster
//! run in this process (node 1 the primary of stream "s").
//!
//! For each bad input (garbage, a frame cut short by the end of the stream, an
//! oversized length, a wrong version, an unknown kind, unknown flags, a bad checksum, a
//! body that breaks its kind's rules, a valid message of the wrong kind, an unknown
//! stream) a raw TCP connection sends it, either as its first bytes (the acceptor's
//! handshake) or after a valid `ClientHello` (the shard's read path). The node must
//! answer with exactly one `Error` frame of the expected code and then close the
//! connection, within a bounded time. Meanwhile a well-behaved client on another
//! connection keeps committing: none of its appends may fail or end in doubt, and it
//! must make progress after every bad input.
//!
//! The frame layout used to build the bad frames is the one documented in
//! `lockstep::wire`: magic 4, version 1, kind 1, flags 2, request id 8, body length 4,
//! crc32c 4 (of bytes 0..20 and the body), then the body.

#[path = "common/procs.rs"]
mod procs;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use lockstep::wire::{ErrorCode, FrameDecoder, Message, Payloads, RequestId};
use procs::*;

/// How long a node may take to answer a bad input and close the connection.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// Request id of the frames the tests send.
const ID: RequestId = RequestId(77);
const HELLO_ID: RequestId = RequestId(1);

/// One bad input and the answer it must get.
struct Case {
    name: &'static str,
    /// Send a valid `ClientHello` (and read the `Welcome`) before the bad bytes.
    after_hello: bool,
    bytes: Vec<u8>,
    /// Close the sending direction after the bytes (the end of the stream).
    eof: bool,
    want: ErrorCode,
    /// The request id the `Error` must carry, when the node can know it.
    want_id: Option<RequestId>,
}

/// How the connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The node closed it (read returned 0).
    Closed,
    /// The node reset it.
    Reset,
    /// Still open when the time was up.
    Open,
    Failed(String),
}

/// A frame received, reduced to what the checks need.
#[derive(Debug)]
enum Got {
    Error {
        id: RequestId,
        code: ErrorCode,
        message: String,
    },
    Other {
        id: RequestId,
        kind: String,
    },
}

impl Got {
    fn describe(&self) -> String {
        match self {
            Got::Error { id, code, message } => format!("Error {id} {code} {message:?}"),
            Got::Other { id, kind } => format!("{kind} {id}"),
        }
    }
}

struct Answer {
    frames: Vec<Got>,
    /// Bytes that did not decode as frames, if any.
    undecodable: Option<String>,
    end: End,
    took: Duration,
}

fn encode(m: &Message<'_>, id: RequestId) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode_into(id, &mut out)
        .expect("a valid message encodes");
    out
}

/// Recomputes the checksum of a frame whose header or body a case changed, so that the
/// change is the only fault.
fn reseal(frame: &mut [u8]) {
    let crc = crc32c::crc32c_append(crc32c::crc32c(&frame[..20]), &frame[24..]);
    frame[20..24].copy_from_slice(&crc.to_le_bytes());
}

/// A frame of `kind` with `body` as given, correctly framed and checksummed.
fn frame(kind: u8, id: RequestId, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(24 + body.len());
    f.extend_from_slice(b"LSW1");
    f.push(1);
    f.push(kind);
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(&id.0.to_le_bytes());
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(body);
    reseal(&mut f);
    f
}

fn hello(stream: &str, id: RequestId) -> Vec<u8> {
    encode(&Message::ClientHello { stream }, id)
}

fn append() -> Vec<u8> {
    encode(
        &Message::Append {
            mode: None,
            timeout_ms: 0,
            payloads: Payloads::new(&[b"must not be appended"]),
        },
        ID,
    )
}

fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut g: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    // Not even the first byte of the magic: the node can refuse at once.
    if g[0] == b'L' {
        g[0] = 0;
    }
    g
}

/// The header-level faults, on a valid frame `f` (id `ID`).
fn header_cases(after_hello: bool, f: &[u8]) -> Vec<Case> {
    let patched = |at: usize, bytes: &[u8]| {
        let mut v = f.to_vec();
        v[at..at + bytes.len()].copy_from_slice(bytes);
        reseal(&mut v);
        v
    };
    let mut bad_crc = f.to_vec();
    bad_crc[20] ^= 0x01;
    let case = |name, bytes| Case {
        name,
        after_hello,
        bytes,
        eof: false,
        want: ErrorCode::Malformed,
        want_id: None,
    };
    vec![
        case("wrong version byte", patched(4, &[2])),
        case("unknown kind byte", patched(5, &[0x7f])),
        case("unknown flags", patched(6, &[1, 0])),
        // Only the header: the node must refuse the length, not wait for 4 GiB.
        case(
            "header announcing an oversized body",
            patched(16, &u32::MAX.to_le_bytes())[..24].to_vec(),
        ),
        case("bad checksum", bad_crc),
    ]
}

fn cases_before_hello(seed: u64) -> Vec<Case> {
    let mut cases = vec![Case {
        name: "random garbage",
        after_hello: false,
        bytes: garbage(seed, 4096),
        eof: false,
        want: ErrorCode::Malformed,
        want_id: None,
    }];
    cases.extend(header_cases(false, &hello(STREAM, ID)));
    let bad_name = b"../etc";
    let mut body = (bad_name.len() as u16).to_le_bytes().to_vec();
    body.extend_from_slice(bad_name);
    cases.push(Case {
        name: "ClientHello with an invalid stream name (valid checksum)",
        after_hello: false,
        bytes: frame(0x01, ID, &body),
        eof: false,
        want: ErrorCode::Malformed,
        want_id: None,
    });
    cases.push(Case {
        name: "ClientHello for an unknown stream",
        after_hello: false,
        bytes: hello("no-such-stream", ID),
        eof: false,
        want: ErrorCode::UnknownStream,
        want_id: Some(ID),
    });
    cases.push(Case {
        name: "PeerHello for an unknown stream",
        after_hello: false,
        bytes: encode(
            &Message::PeerHello {
                stream: "no-such-stream",
                node_id: 1,
                epoch: 1,
            },
            ID,
        ),
        eof: false,
        want: ErrorCode::UnknownStream,
        want_id: Some(ID),
    });
    cases
}

fn cases_after_hello(seed: u64) -> Vec<Case> {
    let mut cases = vec![Case {
        name: "random garbage after the hello",
        after_hello: true,
        bytes: garbage(seed ^ 0x5555, 4096),
        eof: false,
        want: ErrorCode::Malformed,
        want_id: None,
    }];
    cases.extend(header_cases(true, &append()));
    // Read { from_lsn: 0 } breaks a body rule; the checksum is right.
    let mut body = 0u64.to_le_bytes().to_vec();
    body.extend_from_slice(&10u32.to_le_bytes());
    body.extend_from_slice(&4096u32.to_le_bytes());
    cases.push(Case {
        name: "Read from lsn 0 (valid checksum)",
        after_hello: true,
        bytes: frame(0x03, ID, &body),
        eof: false,
        want: ErrorCode::Malformed,
        want_id: None,
    });
    // An Append whose payload count says 2 but holds one payload.
    let mut body = vec![0u8];
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&2u32.to_le_bytes());
    body.extend_from_slice(&3u32.to_le_bytes());
    body.extend_from_slice(b"abc");
    cases.push(Case {
        name: "Append with a payload count beyond its body (valid checksum)",
        after_hello: true,
        bytes: frame(0x02, ID, &body),
        eof: false,
        want: ErrorCode::Malformed,
        want_id: None,
    });
    cases
}

/// Frames cut short by the end of the stream.
fn truncated_cases() -> Vec<Case> {
    let h = hello(STREAM, ID);
    let a = append();
    vec![
        Case {
            name: "ClientHello cut short, then EOF",
            after_hello: false,
            bytes: h[..h.len() - 1].to_vec(),
            eof: true,
            want: ErrorCode::Malformed,
            want_id: None,
        },
        Case {
            name: "half a header, then EOF",
            after_hello: false,
            bytes: h[..12].to_vec(),
            eof: true,
            want: ErrorCode::Malformed,
            want_id: None,
        },
        Case {
            name: "Append cut short after the hello, then EOF",
            after_hello: true,
            bytes: a[..a.len() - 3].to_vec(),
            eof: true,
            want: ErrorCode::Malformed,
            want_id: None,
        },
    ]
}

/// Valid messages at the wrong point of the conversation. `ErrorCode::Unexpected` is
/// documented as the code for "a message that is valid but not at this point of the
/// conversation (for example a request before the hello)".
fn wrong_kind_cases() -> Vec<Case> {
    vec![
        Case {
            name: "Append before the hello",
            after_hello: false,
            bytes: append(),
            eof: false,
            want: ErrorCode::Unexpected,
            want_id: Some(ID),
        },
        Case {
            name: "Status before the hello",
            after_hello: false,
            bytes: encode(&Message::Status, ID),
            eof: false,
            want: ErrorCode::Unexpected,
            want_id: Some(ID),
        },
        Case {
            name: "a second ClientHello",
            after_hello: true,
            bytes: hello(STREAM, ID),
            eof: false,
            want: ErrorCode::Unexpected,
            want_id: Some(ID),
        },
        Case {
            name: "a secondary's Ack on a client connection",
            after_hello: true,
            bytes: encode(
                &Message::Ack {
                    epoch: 1,
                    received_lsn: 1,
                    durable_lsn: 1,
                },
                ID,
            ),
            eof: false,
            want: ErrorCode::Unexpected,
            want_id: Some(ID),
        },
    ]
}

/// Reads frames until the node closes the connection or `ANSWER_WITHIN` has passed.
fn collect(s: &mut TcpStream, dec: &mut FrameDecoder, started: Instant) -> End {
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    // Bounded by ANSWER_WITHIN: each read waits at most 50 ms.
    loop {
        match dec.read_from(s) {
            Ok(0) => return End::Closed,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if started.elapsed() >= ANSWER_WITHIN {
                    return End::Open;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return End::Reset,
            Err(e) => return End::Failed(e.to_string()),
        }
    }
}

fn frames(dec: &mut FrameDecoder) -> (Vec<Got>, Option<String>) {
    let mut out = Vec::new();
    loop {
        match dec.next_frame() {
            Ok(Some(f)) => out.push(match f.message {
                Message::Error { code, message } => Got::Error {
                    id: f.id,
                    code,
                    message: message.to_string(),
                },
                other => Got::Other {
                    id: f.id,
                    kind: other.kind().to_string(),
                },
            }),
            Ok(None) => {
                let rest = dec.finish().err().map(|e| e.to_string());
                return (out, rest);
            }
            Err(e) => return (out, Some(e.to_string())),
        }
    }
}

/// Sends one case on a new connection to `addr` and gathers the node's answer.
fn exchange(addr: &str, case: &Case) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_write_timeout(Some(ANSWER_WITHIN))
        .expect("write timeout");
    if case.after_hello {
        s.write_all(&hello(STREAM, HELLO_ID)).expect("send hello");
        let mut dec = FrameDecoder::new();
        let started = Instant::now();
        s.set_read_timeout(Some(ANSWER_WITHIN))
            .expect("read timeout");
        // Bounded: each read waits at most ANSWER_WITHIN, and the loop ends by then.
        let welcomed = loop {
            if let Some(f) = dec.next_frame().expect("the node sends valid frames") {
                break matches!(f.message, Message::Welcome { .. }) && f.id == HELLO_ID;
            }
            let n = dec.read_from(&mut s).unwrap_or(0);
            if n == 0 || started.elapsed() >= ANSWER_WITHIN {
                break false;
            }
        };
        assert!(welcomed, "{}: no Welcome to a valid hello", case.name);
        assert_eq!(dec.buffered(), 0, "{}: frames after the Welcome", case.name);
    }
    let started = Instant::now();
    // The node may close the connection before it read everything: that is allowed.
    let _ = s.write_all(&case.bytes);
    if case.eof {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut dec = FrameDecoder::new();
    let end = collect(&mut s, &mut dec, started);
    let took = started.elapsed();
    let (frames, undecodable) = frames(&mut dec);
    Answer {
        frames,
        undecodable,
        end,
        took,
    }
}

/// What is wrong with the answer to `case`, if anything.
fn judge(case: &Case, a: &Answer) -> Option<String> {
    let mut wrong = Vec::new();
    match a.frames.as_slice() {
        [Got::Error { id, code, message }] => {
            if *code != case.want {
                wrong.push(format!(
                    "Error code {code} ({message:?}), expected {}",
                    case.want
                ));
            }
            if let Some(want) = case.want_id
                && *id != want
            {
                wrong.push(format!("Error with request id {id}, expected {want}"));
            }
        }
        [] => wrong.push(format!("no Error frame, expected {}", case.want)),
        more => {
            let got: Vec<String> = more.iter().map(Got::describe).collect();
            wrong.push(format!("expected one Error frame, got {}", got.join(", ")));
        }
    }
    if let Some(u) = &a.undecodable {
        wrong.push(format!("bytes that are no frame: {u}"));
    }
    if !matches!(a.end, End::Closed | End::Reset) {
        wrong.push(format!(
            "connection not closed within {ANSWER_WITHIN:?}: {:?}",
            a.end
        ));
    }
    (!wrong.is_empty()).then(|| {
        format!(
            "{} ({} hello): {} [ended {:?} after {:?}]",
            case.name,
            if case.after_hello { "after" } else { "before" },
            wrong.join("; "),
            a.end,
            a.took
        )
    })
}

/// Runs `cases` against the primary of a new cluster while a well-behaved client
/// commits on another connection; returns the cases answered wrongly. Panics if the
/// well-behaved client fails, ends in doubt or stalls.
fn run(cases: &[Case]) -> Vec<String> {
    let _serial = serial();
    let layout = Layout::new("mode = \"strong\"\n");
    let mut servers = layout.start_in_process();
    let addr = layout.addr(1).to_string();
    let opts = client_options(Duration::from_secs(5));
    connect(&addr, &opts, READY_WITHIN).expect("connect to the primary");
    let w = Workload::start(&addr, 4, opts, Duration::from_secs(60));
    assert!(
        w.wait_for_more(50, Duration::from_secs(10)),
        "the well-behaved client commits nothing"
    );
    let before = w.acked();
    let mut failures = Vec::new();
    for case in cases {
        let a = exchange(&addr, case);
        if let Some(f) = judge(case, &a) {
            failures.push(f);
        }
        assert!(
            w.wait_for_more(5, Duration::from_secs(5)),
            "the well-behaved client stopped committing after: {}",
            case.name
        );
    }
    let during = w.acked() - before;
    let report = w.stop();
    assert_eq!(
        (report.in_doubt, report.failed),
        (0, 0),
        "the well-behaved client saw failures: {:?}",
        report.failures
    );
    assert!(during >= 5 * cases.len() as u64);
    // What it was told is committed reads back from the primary.
    let mut c =
        connect(&addr, &client_options(Duration::from_secs(5)), READY_WITHIN).expect("connect");
    let &(lsn, ctr) = report.acked.last().expect("commits");
    let (commit, recs) = c.read(lsn, 1).expect("read back");
    assert!(commit >= lsn);
    assert!(recs[0].payload == payload_of(ctr));
    drop(c);
    servers.stop_all();
    failures
}

fn assert_all_answered(kind: &str, failures: &[String], cases: usize) {
    assert!(
        failures.is_empty(),
        "{} of {cases} {kind} cases answered wrongly:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

#[test]
fn malformed_first_frames_get_an_error_and_a_close() {
    let (_, seed) = Rng::from_env("LOCKSTEP_GARBAGE_SEED");
    eprintln!("LOCKSTEP_GARBAGE_SEED={seed}");
    let cases = cases_before_hello(seed);
    let failures = run(&cases);
    assert_all_answered("before-hello", &failures, cases.len());
}

#[test]
fn malformed_frames_after_the_hello_get_an_error_and_a_close() {
    let (_, seed) = Rng::from_env("LOCKSTEP_GARBAGE_SEED");
    eprintln!("LOCKSTEP_GARBAGE_SEED={seed}");
    let cases = cases_after_hello(seed);
    let failures = run(&cases);
    assert_all_answered("after-hello", &failures, cases.len());
}

#[test]
fn frames_cut_short_by_eof_get_an_error_and_a_close() {
    let cases = truncated_cases();
    let failures = run(&cases);
    assert_all_answered("truncated", &failures, cases.len());
}

#[test]
fn valid_frames_of_the_wrong_kind_get_unexpected_and_a_close() {
    let cases = wrong_kind_cases();
    let failures = run(&cases);
    assert_all_answered("wrong-kind", &failures, cases.len());
}

/// A raw connection that reads nothing back does not hold up the node: the garbage is
/// refused and a well-behaved client still commits. (The reply may be lost to the
/// reset; only the close and the progress are checked.)
#[test]
fn garbage_flood_is_refused_without_harm() {
    let _serial = serial();
    let layout = Layout::new("mode = \"strong\"\n");
    let mut servers = layout.start_in_process();
    let addr = layout.addr(1).to_string();
    let opts = client_options(Duration::from_secs(5));
    let mut c = connect(&addr, &opts, READY_WITHIN).expect("connect to the primary");
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_write_timeout(Some(ANSWER_WITHIN))
        .expect("write timeout");
    s.write_all(&hello(STREAM, HELLO_ID)).expect("send hello");
    // Up to 64 MiB of garbage, more than the socket buffers hold: the node must refuse
    // it at the first bad byte and close, so a write fails (reset or broken pipe) long
    // before all of it is sent.
    let chunk = garbage(1, 1 << 20);
    let refused = (0..64).any(|_| s.write_all(&chunk).is_err());
    assert!(
        refused,
        "the node took 64 MiB of garbage without closing the connection"
    );
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(ANSWER_WITHIN))
        .expect("read timeout");
    // Whatever is left to read ends with a close or a reset, never a timeout.
    for _ in 0..64 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert!(
                    !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                    "the connection stayed open"
                );
                break;
            }
        }
    }
    assert!(c.append(b"after the flood").is_ok());
    drop(c);
    servers.stop_all();
}
