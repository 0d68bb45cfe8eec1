//! The client against fake nodes built on the wire codec: one thread per fake node
//! with a listener on 127.0.0.1, answering as each test scripts it.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use lockstep::client::{Appended, Client, ClientError, ClientOptions};
use lockstep::log::Record;
use lockstep::wire::{ErrorCode, FrameDecoder, Message, Mode, RecordRef, Records, RequestId, Role};

/// A stream name the fake nodes do not host.
const UNKNOWN_STREAM: &str = "no-such-stream";

/// A fake node: what it received, and where it listens.
struct Fake {
    addr: String,
    /// The payloads of every `Append` received, one entry per append request.
    appends: Arc<Mutex<Vec<Vec<Vec<u8>>>>>,
    /// Connections accepted.
    connections: Arc<Mutex<usize>>,
}

impl Fake {
    fn appends(&self) -> Vec<Vec<Vec<u8>>> {
        self.appends.lock().unwrap().clone()
    }

    fn append_count(&self) -> usize {
        self.appends.lock().unwrap().len()
    }
}

/// What a fake node does with a request after the hello: it writes replies (or
/// nothing) into the buffer; returning `false` closes the connection.
trait Script: FnMut(RequestId, &Message<'_>, &mut Vec<u8>) -> bool + Send + 'static {}
impl<F: FnMut(RequestId, &Message<'_>, &mut Vec<u8>) -> bool + Send + 'static> Script for F {}

/// Starts a fake node that welcomes clients as node `node_id` (refusing the stream
/// `UNKNOWN_STREAM`) and runs `script` on every other request. It serves one
/// connection at a time, as many as come.
fn fake(node_id: u32, script: impl Script) -> Fake {
    fake_in_epoch(node_id, 5, script)
}

/// A fake node that welcomes clients as the primary of `epoch`.
fn fake_in_epoch(node_id: u32, epoch: u64, script: impl Script) -> Fake {
    fake_at("127.0.0.1:0", node_id, epoch, script)
}

/// A fake node listening on `addr`.
fn fake_at(addr: &str, node_id: u32, epoch: u64, mut script: impl Script) -> Fake {
    let listener = TcpListener::bind(addr).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let appends = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(Mutex::new(0));
    let fake = Fake {
        addr,
        appends: appends.clone(),
        connections: connections.clone(),
    };
    thread::spawn(move || {
        for socket in listener.incoming() {
            *connections.lock().unwrap() += 1;
            serve(node_id, epoch, socket.unwrap(), &appends, &mut script);
        }
    });
    fake
}

fn serve(
    node_id: u32,
    epoch: u64,
    mut socket: TcpStream,
    appends: &Mutex<Vec<Vec<Vec<u8>>>>,
    script: &mut impl Script,
) {
    let mut decoder = FrameDecoder::new();
    let mut out = Vec::new();
    loop {
        match decoder.read_from(&mut socket) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while let Some(frame) = decoder.next_frame().expect("the client sends valid frames") {
            let keep = match frame.message {
                Message::ClientHello { stream } if stream == UNKNOWN_STREAM => {
                    let refusal = Message::Error {
                        code: ErrorCode::UnknownStream,
                        message: "this node hosts no such stream",
                    };
                    reply(&mut out, frame.id, refusal);
                    true
                }
                Message::ClientHello { .. } => {
                    let welcome = Message::Welcome {
                        node_id,
                        role: Role::Primary,
                        epoch,
                        primary: None,
                    };
                    reply(&mut out, frame.id, welcome);
                    true
                }
                ref m => {
                    if let Message::Append { payloads, .. } = m {
                        let batch = payloads.iter().map(<[u8]>::to_vec).collect();
                        appends.lock().unwrap().push(batch);
                    }
                    script(frame.id, m, &mut out)
                }
            };
            socket.write_all(&out).unwrap();
            out.clear();
            if !keep {
                return;
            }
        }
    }
}

fn reply(out: &mut Vec<u8>, id: RequestId, m: Message<'_>) {
    m.encode_into(id, out)
        .expect("the fake node sends valid frames");
}

/// A script that commits every append at the next LSNs.
fn committing() -> impl Script {
    let mut next_lsn = 1u64;
    move |id, m, out| {
        if let Message::Append { payloads, .. } = m {
            let count = payloads.len() as u32;
            reply(
                out,
                id,
                Message::Appended {
                    first_lsn: next_lsn,
                    count,
                },
            );
            next_lsn += u64::from(count);
        }
        true
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_millis(1500),
        reply_grace: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    }
}

fn connect(addrs: &[&str]) -> Client {
    Client::connect(addrs, "orders", options()).expect("connect")
}

#[test]
fn pipelined_appends_answered_out_of_order_are_matched_by_id() {
    // The node answers only once it holds three appends, and then in reverse order: a
    // client that waited for each reply before sending the next would time out.
    let mut held: Vec<(RequestId, Appended)> = Vec::new();
    let mut next_lsn = 1;
    let node = fake(1, move |id, m, out| {
        if let Message::Append { payloads, .. } = m {
            let count = payloads.len() as u32;
            held.push((
                id,
                Appended {
                    first_lsn: next_lsn,
                    count,
                },
            ));
            next_lsn += u64::from(count);
            if held.len() == 3 {
                for (id, a) in held.drain(..).rev() {
                    let appended = Message::Appended {
                        first_lsn: a.first_lsn,
                        count: a.count,
                    };
                    reply(out, id, appended);
                }
            }
        }
        true
    });
    let mut client = connect(&[&node.addr]);
    assert_eq!(client.node().unwrap().node_id, 1);
    let a = client.submit_append(&[b"a"], None).unwrap();
    let b = client
        .submit_append(&[b"b1", b"b2"], Some(Mode::Semi))
        .unwrap();
    let c = client.submit_append(&[b"c"], None).unwrap();
    assert_eq!(client.outstanding(), 3);
    assert_eq!(
        client.wait(b).unwrap(),
        Appended {
            first_lsn: 2,
            count: 2
        }
    );
    assert_eq!(
        client.wait(a).unwrap(),
        Appended {
            first_lsn: 1,
            count: 1
        }
    );
    let (id, outcome) = client.poll().expect("c's reply came with the others");
    assert_eq!(id, c);
    assert_eq!(
        outcome.unwrap(),
        Appended {
            first_lsn: 4,
            count: 1
        }
    );
    assert!(client.poll().is_none());
    assert_eq!(client.outstanding(), 0);
    assert!(matches!(
        client.wait(a),
        Err(ClientError::UnknownRequest { id }) if id == a
    ));
    let sent = node.appends();
    assert_eq!(
        sent,
        [
            vec![b"a".to_vec()],
            vec![b"b1".to_vec(), b"b2".to_vec()],
            vec![b"c".to_vec()]
        ]
    );
}

#[test]
fn not_primary_redirects_to_the_named_primary_and_resends_once_in_order() {
    let primary = fake(2, committing());
    let primary_addr = primary.addr.clone();
    let secondary = fake(1, move |id, _, out| {
        let not_primary = Message::NotPrimary {
            epoch: 6,
            primary: Some(&primary_addr),
        };
        reply(out, id, not_primary);
        true
    });
    // Only the secondary is configured: the client must follow the hint.
    let mut client = connect(&[&secondary.addr]);
    let ids: Vec<RequestId> = (0..3u8)
        .map(|i| client.submit_append(&[&[i]], None).unwrap())
        .collect();
    let lsns: Vec<u64> = ids
        .iter()
        .map(|&id| client.wait(id).unwrap().first_lsn)
        .collect();
    assert_eq!(lsns, [1, 2, 3]);
    assert_eq!(secondary.append_count(), 3);
    assert_eq!(primary.appends(), [[vec![0u8]], [vec![1]], [vec![2]]]);
    let node = client.node().unwrap();
    assert_eq!(
        (node.node_id, node.addr.as_str()),
        (2, primary.addr.as_str())
    );
    // Later appends go straight to the primary.
    assert_eq!(client.append(b"next").unwrap(), 4);
    assert_eq!(secondary.append_count(), 3);
    assert_eq!(primary.append_count(), 4);
}

#[test]
fn redirects_are_bounded() {
    // Two nodes that each name the other as primary.
    let b_addr = Arc::new(Mutex::new(String::new()));
    let b_for_a = b_addr.clone();
    let a = fake(1, move |id, _, out| {
        let addr = b_for_a.lock().unwrap().clone();
        reply(
            out,
            id,
            Message::NotPrimary {
                epoch: 6,
                primary: Some(&addr),
            },
        );
        true
    });
    let a_addr = a.addr.clone();
    let b = fake(2, move |id, _, out| {
        reply(
            out,
            id,
            Message::NotPrimary {
                epoch: 6,
                primary: Some(&a_addr),
            },
        );
        true
    });
    *b_addr.lock().unwrap() = b.addr.clone();
    let mut client = Client::connect(
        &[&a.addr],
        "orders",
        ClientOptions {
            redirects_max: 2,
            ..options()
        },
    )
    .unwrap();
    match client.append(b"x") {
        Err(ClientError::Redirects {
            redirects,
            epoch,
            op,
            ..
        }) => {
            assert_eq!((redirects, epoch, op), (2, 6, "append"));
        }
        other => panic!("expected Redirects, got {other:?}"),
    }
    // Sent to a, then b, then a again: the first refusal and two redirects.
    assert_eq!(a.append_count() + b.append_count(), 3);
}

#[test]
fn in_doubt_is_surfaced_and_never_resent() {
    let node = fake(1, |id, m, out| {
        match m {
            Message::Append { .. } => reply(
                out,
                id,
                Message::InDoubt {
                    first_lsn: 7,
                    count: 1,
                    reason: "commit timed out after 1500 ms",
                },
            ),
            _ => reply(out, id, Message::StatusReply { json: "{}" }),
        }
        true
    });
    let mut client = connect(&[&node.addr]);
    let err = client.append(b"x").unwrap_err();
    match &err {
        ClientError::InDoubt {
            first_lsn,
            count,
            reason,
            addr,
        } => {
            assert_eq!((*first_lsn, *count), (Some(7), 1));
            assert_eq!(reason, "commit timed out after 1500 ms");
            assert_eq!(addr, &node.addr);
        }
        other => panic!("expected InDoubt, got {other:?}"),
    }
    assert!(
        err.to_string().contains("is in doubt (lsns 7..=7)"),
        "{err}"
    );
    // A round trip on the same connection: any resend would have arrived before it.
    client.status().unwrap();
    assert_eq!(node.append_count(), 1);
}

#[test]
fn a_timeout_is_in_doubt_and_not_resent() {
    let node = fake(1, |id, m, out| {
        // Appends get no answer at all; other requests are answered.
        if !matches!(m, Message::Append { .. }) {
            reply(
                out,
                id,
                Message::StatusReply {
                    json: "{\"ok\":true}",
                },
            );
        }
        true
    });
    let options = ClientOptions {
        timeout: Duration::from_millis(200),
        reply_grace: Duration::from_millis(100),
        ..options()
    };
    let mut client = Client::connect(&[&node.addr], "orders", options).unwrap();
    let started = Instant::now();
    let err = client.append(b"x").unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(
            err,
            ClientError::InDoubt {
                first_lsn: None,
                count: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        waited >= Duration::from_millis(300),
        "gave up after {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    // A node that sent nothing at all since the append went out is taken as stopped
    // or cut off: the next request connects again (here to the same node, the only
    // one), and the append was sent once.
    assert_eq!(client.status().unwrap()["ok"], true);
    assert_eq!(node.append_count(), 1);
    assert_eq!(*node.connections.lock().unwrap(), 2);
}

#[test]
fn a_lost_connection_makes_appends_in_doubt_and_the_next_request_reconnects() {
    let node = fake(1, |id, m, out| match m {
        // The node drops the connection on the append, without a reply.
        Message::Append { .. } => false,
        _ => {
            reply(out, id, Message::StatusReply { json: "{\"n\":1}" });
            true
        }
    });
    let mut client = connect(&[&node.addr]);
    match client.append(b"x") {
        Err(ClientError::InDoubt {
            first_lsn: None,
            reason,
            ..
        }) => {
            assert!(reason.contains("the connection was lost"), "{reason}");
        }
        other => panic!("expected InDoubt, got {other:?}"),
    }
    assert!(client.node().is_none());
    assert_eq!(client.status().unwrap()["n"], 1);
    assert_eq!(node.append_count(), 1);
    assert_eq!(*node.connections.lock().unwrap(), 2);
}

#[test]
fn an_error_reply_is_surfaced_with_its_code_and_message() {
    let node = fake(1, |id, _, out| {
        let refusal = Message::Error {
            code: ErrorCode::ModeNotAllowed,
            message: "the stream's mode is semi",
        };
        reply(out, id, refusal);
        true
    });
    let mut client = connect(&[&node.addr]);
    let id = client.submit_append(&[b"x"], Some(Mode::Strong)).unwrap();
    let err = client.wait(id).unwrap_err();
    match &err {
        ClientError::Server {
            code, message, op, ..
        } => {
            assert_eq!(
                (*code, message.as_str(), *op),
                (
                    ErrorCode::ModeNotAllowed,
                    "the stream's mode is semi",
                    "append"
                )
            );
        }
        other => panic!("expected Server, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "append on {}: refused (mode-not-allowed): the stream's mode is semi",
            node.addr
        )
    );
    assert_eq!(node.append_count(), 1);
}

#[test]
fn read_and_status_return_what_the_node_sent() {
    let node = fake(1, |id, m, out| {
        match *m {
            Message::Read {
                from_lsn,
                records_max,
                ..
            } => {
                let payloads: Vec<Vec<u8>> = (0..records_max as u64)
                    .map(|i| format!("record {}", from_lsn + i).into_bytes())
                    .collect();
                let records: Vec<RecordRef<'_>> = (payloads.iter().enumerate())
                    .map(|(i, p)| RecordRef {
                        lsn: from_lsn + i as u64,
                        epoch: 4,
                        payload: p,
                    })
                    .collect();
                let reply_records = Message::Records {
                    commit_lsn: 100,
                    records: Records::new(&records),
                };
                reply(out, id, reply_records);
            }
            Message::Status => reply(
                out,
                id,
                Message::StatusReply {
                    json: r#"{"commit_lsn":100,"role":"primary"}"#,
                },
            ),
            _ => unreachable!("this test sends no appends"),
        }
        true
    });
    let mut client = connect(&[&node.addr]);
    let (commit_lsn, records) = client.read(10, 2).unwrap();
    assert_eq!(commit_lsn, 100);
    assert_eq!(
        records,
        [
            Record {
                lsn: 10,
                epoch: 4,
                payload: b"record 10".to_vec()
            },
            Record {
                lsn: 11,
                epoch: 4,
                payload: b"record 11".to_vec()
            },
        ]
    );
    let status = client.status().unwrap();
    assert_eq!(status["commit_lsn"], 100);
    assert_eq!(status["role"], "primary");
}

#[test]
fn connect_skips_unreachable_nodes_and_reports_a_refused_stream() {
    // A port with nothing listening: bind, note the address, close.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let node = fake(9, committing());
    let mut client = connect(&[&dead, &node.addr]);
    assert_eq!(client.node().unwrap().node_id, 9);
    assert_eq!(client.append(b"x").unwrap(), 1);
    // The fake node serves one connection at a time.
    drop(client);

    match Client::connect(&[&node.addr], UNKNOWN_STREAM, options()) {
        Err(ClientError::Unreachable { tried, last }) => {
            assert_eq!(tried, std::slice::from_ref(&node.addr));
            assert!(
                matches!(
                    *last,
                    ClientError::Server {
                        code: ErrorCode::UnknownStream,
                        ..
                    }
                ),
                "{last:?}"
            );
        }
        Err(other) => panic!("expected Unreachable, got {other:?}"),
        Ok(_) => panic!("connected to a stream the node does not host"),
    }
    assert!(matches!(
        Client::connect(&[&node.addr], "../x", options()),
        Err(ClientError::StreamName(_))
    ));
}

#[test]
fn a_node_that_accepts_but_never_answers_does_not_hold_the_connect() {
    // A stopped node: the kernel accepts the connection, nobody answers the hello.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let held = held.clone();
        thread::spawn(move || {
            for socket in silent.incoming() {
                held.lock().unwrap().push(socket.unwrap());
            }
        });
    }
    let node = fake(4, committing());
    let started = Instant::now();
    // A connect timeout far above what a connect takes even on a loaded machine.
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(30),
        ..options()
    };
    let mut client = Client::connect(&[&silent_addr, &node.addr], "orders", options).unwrap();
    let took = started.elapsed();
    assert_eq!(client.node().unwrap().node_id, 4);
    // Every node is tried at once: the silent one does not hold the connect for the
    // 30 s timeout it would cost tried first in turn.
    assert!(took < Duration::from_secs(10), "connect took {took:?}");
    assert_eq!(client.append(b"x").unwrap(), 1);
}

#[test]
fn a_silent_primary_is_left_for_the_primary_of_a_newer_epoch_before_the_timeout() {
    // Where the new primary will listen: nothing yet.
    let new_addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    // The old primary (epoch 5) welcomes, then never answers again (stopped).
    let old = fake_in_epoch(1, 5, |_, _, _| true);
    let options = ClientOptions {
        timeout: Duration::from_secs(60),
        reply_grace: Duration::from_secs(1),
        connect_timeout: Duration::from_millis(100),
        ..options()
    };
    let mut client = Client::connect(&[&old.addr, &new_addr], "orders", options).unwrap();
    assert_eq!(client.node().unwrap().node_id, 1);
    // The new primary (epoch 6) comes up.
    let _new = fake_at(&new_addr, 2, 6, committing());
    let started = Instant::now();
    let first = client.append(b"a");
    // Asked after 100 ms of silence, the other node is the primary of a newer epoch:
    // the append at the old one is in doubt now, not at its 60 s timeout.
    assert!(
        matches!(first, Err(ClientError::InDoubt { .. })),
        "{first:?}"
    );
    assert_eq!(client.append(b"b").unwrap(), 1);
    assert_eq!(client.node().unwrap().node_id, 2);
    let took = started.elapsed();
    // Far from the 60 s timeout the silent node would have held it for.
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(old.append_count(), 1);
}

#[test]
fn outstanding_requests_are_bounded() {
    let node = fake(1, committing());
    let options = ClientOptions {
        outstanding_max: 2,
        ..options()
    };
    let mut client = Client::connect(&[&node.addr], "orders", options).unwrap();
    let a = client.submit_append(&[b"a"], None).unwrap();
    let b = client.submit_append(&[b"b"], None).unwrap();
    // At the bound, a submit reads the replies; both are then waiting to be collected,
    // so there is nothing more to read and the submit refuses.
    match client.submit_append(&[b"c"], None) {
        Err(ClientError::Busy { outstanding }) => assert_eq!(outstanding, 2),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(node.append_count(), 2);
    assert_eq!(client.wait(a).unwrap().first_lsn, 1);
    let c = client.submit_append(&[b"c"], None).unwrap();
    assert_eq!(client.wait(c).unwrap().first_lsn, 3);
    assert_eq!(client.wait(b).unwrap().first_lsn, 2);
    // A batch over the protocol's limits is refused before it is sent.
    let big = vec![0u8; lockstep::constants::PAYLOAD_BYTES_MAX + 1];
    assert!(matches!(
        client.submit_append(&[&big], None),
        Err(ClientError::Invalid { op: "append", .. })
    ));
    assert_eq!(node.append_count(), 3);
}
