//! Unit tests of the codec's limits and buffer handling. Round trips, mutations and
//! the error of each kind of bad input are in `tests/wire_fuzz.rs`.

use super::*;
use crate::constants::{
    AUTH_BYTES, CONTROL_MESSAGE_BYTES_MAX, FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX,
    FRAME_READ_CHUNK_BYTES, FRAME_RECORDS_MAX, NODE_ADDR_BYTES_MAX, RING_SETUP_BYTES_MAX,
    STATUS_JSON_BYTES_MAX, STREAM_NAME_BYTES_MAX, WIRE_TEXT_BYTES_MAX,
};

const PAYLOAD: usize = FRAME_PAYLOAD_BYTES_MAX / FRAME_RECORDS_MAX;
const _: () = assert!(PAYLOAD * FRAME_RECORDS_MAX == FRAME_PAYLOAD_BYTES_MAX);

fn encode(m: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode_into(RequestId(7), &mut out).expect("encode");
    out
}

/// Calls `f` with the largest valid message of every kind.
fn with_maximal_messages(f: impl Fn(Message<'_>)) {
    let name = "s".repeat(STREAM_NAME_BYTES_MAX);
    let addr = "a".repeat(NODE_ADDR_BYTES_MAX);
    let text = "t".repeat(WIRE_TEXT_BYTES_MAX);
    let json = "j".repeat(STATUS_JSON_BYTES_MAX);
    let control = vec![0xc7u8; CONTROL_MESSAGE_BYTES_MAX];
    let payload = vec![0xabu8; PAYLOAD];
    let payloads = vec![&payload[..]; FRAME_RECORDS_MAX];
    let records: Vec<RecordRef<'_>> = (1..=FRAME_RECORDS_MAX as u64)
        .map(|lsn| RecordRef {
            lsn,
            epoch: 3,
            payload: &payload,
        })
        .collect();
    let messages = [
        Message::ClientHello { stream: &name },
        Message::Append {
            mode: Some(Mode::Semi),
            timeout_ms: 1,
            payloads: Payloads::new(&payloads),
        },
        Message::Read {
            from_lsn: 1,
            records_max: 1,
            bytes_max: 1,
        },
        Message::Status,
        Message::Welcome {
            node_id: 1,
            role: Role::Learner,
            epoch: 1,
            primary: Some(&addr),
        },
        Message::Appended {
            first_lsn: 1,
            count: 1,
        },
        Message::InDoubt {
            first_lsn: 1,
            count: 1,
            reason: &text,
        },
        Message::NotPrimary {
            epoch: 1,
            primary: Some(&addr),
        },
        Message::Records {
            commit_lsn: FRAME_RECORDS_MAX as u64,
            records: Records::new(&records),
        },
        Message::StatusReply { json: &json },
        Message::Error {
            code: ErrorCode::Internal,
            message: &text,
        },
        Message::PeerHello {
            stream: &name,
            node_id: 1,
            epoch: 1,
        },
        Message::Replicate {
            epoch: 3,
            prev_lsn: 0,
            prev_epoch: 0,
            commit_lsn: 0,
            records: Records::new(&records),
        },
        Message::Heartbeat {
            epoch: 1,
            commit_lsn: 1,
        },
        Message::Truncate {
            epoch: 2,
            after_lsn: 7,
            after_epoch: 1,
        },
        Message::Rebase {
            epoch: 2,
            base_lsn: 7,
            base_epoch: 1,
        },
        Message::PeerWelcome {
            node_id: 1,
            epoch: 1,
            last_lsn: 1,
            last_epoch: 1,
            durable_lsn: 1,
        },
        Message::Ack {
            epoch: 1,
            received_lsn: 1,
            durable_lsn: 1,
        },
        Message::Refuse {
            epoch: 1,
            last_lsn: 1,
            reason: &text,
        },
        Message::RingOffer {
            setup: &[5; RING_SETUP_BYTES_MAX],
        },
        Message::RingSwitch,
        Message::RingAccept {
            setup: &[6; RING_SETUP_BYTES_MAX],
        },
        Message::ControlHello {
            node_id: u32::MAX,
            incarnation: u64::MAX,
            addr: Some(&addr),
        },
        Message::Control { message: &control },
        Message::AuthHello {
            node_id: u32::MAX,
            nonce: &[1; AUTH_BYTES],
        },
        Message::AuthChallenge {
            nonce: &[2; AUTH_BYTES],
            proof: &[3; AUTH_BYTES],
        },
        Message::AuthProof {
            proof: &[4; AUTH_BYTES],
        },
        Message::JoinRequest {
            node_id: 4,
            addr: &addr,
        },
        Message::Joined { config: &control },
        Message::ControlWelcome {
            node_id: u32::MAX,
            incarnation: u64::MAX,
        },
    ];
    assert_eq!(messages.len(), Kind::ALL.len());
    for m in messages {
        f(m);
    }
}

#[test]
fn maximal_messages_reach_their_kinds_limit_exactly() {
    with_maximal_messages(|m| {
        let frame = encode(&m);
        let kind = m.kind();
        assert_eq!(
            frame.len(),
            FRAME_HEADER_BYTES + kind.body_bytes_max(),
            "{kind}"
        );
        let mut d = FrameDecoder::new();
        d.extend(&frame);
        let got = d.next_frame().expect("decode").expect("complete");
        assert_eq!(got.message, m, "{kind}");
    });
}

#[test]
fn one_more_byte_or_record_is_refused_on_encode_and_leaves_out_unchanged() {
    let mut out = b"earlier frame".to_vec();
    let json = "j".repeat(STATUS_JSON_BYTES_MAX + 1);
    let err = Message::StatusReply { json: &json }
        .encode_into(RequestId(1), &mut out)
        .unwrap_err();
    assert!(
        matches!(
            err,
            WireError::TooLarge {
                kind: Kind::StatusReply,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(out, b"earlier frame");

    let empty: &[u8] = &[];
    let payloads = vec![empty; FRAME_RECORDS_MAX + 1];
    let err = Message::Append {
        mode: None,
        timeout_ms: 0,
        payloads: Payloads::new(&payloads),
    }
    .encode_into(RequestId(1), &mut out)
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "malformed Append message: {} records exceed the limit of {FRAME_RECORDS_MAX} per frame",
            FRAME_RECORDS_MAX + 1
        )
    );
    assert_eq!(out, b"earlier frame");
}

#[test]
fn encoding_into_a_buffer_with_capacity_does_not_allocate() {
    let payload = [1u8; 100];
    let payloads = [&payload[..]; 3];
    let m = Message::Append {
        mode: None,
        timeout_ms: 5,
        payloads: Payloads::new(&payloads),
    };
    let mut out = Vec::with_capacity(4096);
    let ptr = out.as_ptr();
    for _ in 0..10 {
        m.encode_into(RequestId(9), &mut out).unwrap();
    }
    assert_eq!(out.as_ptr(), ptr);
    assert_eq!(out.capacity(), 4096);
}

/// A reader that returns at most `chunk` bytes per call, like a socket.
struct Trickle<'a> {
    bytes: &'a [u8],
    chunk: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

#[test]
fn socket_reads_keep_the_buffer_within_one_frame_and_one_chunk() {
    let payload = vec![7u8; PAYLOAD];
    let payloads = vec![&payload[..]; FRAME_RECORDS_MAX];
    let big = Message::Append {
        mode: None,
        timeout_ms: 0,
        payloads: Payloads::new(&payloads),
    };
    let mut bytes = Vec::new();
    for id in 1..=3 {
        big.encode_into(RequestId(id), &mut bytes).unwrap();
        Message::Status
            .encode_into(RequestId(100 + id), &mut bytes)
            .unwrap();
    }
    let limit = FRAME_HEADER_BYTES + Kind::Append.body_bytes_max() + FRAME_READ_CHUNK_BYTES;
    let mut src = Trickle {
        bytes: &bytes,
        chunk: 40_000,
    };
    let mut d = FrameDecoder::new();
    let mut ids = Vec::new();
    while d.read_from(&mut src).unwrap() > 0 {
        assert!(
            d.buffer_bytes() <= limit,
            "buffer grew to {}",
            d.buffer_bytes()
        );
        while let Some(f) = d.next_frame().unwrap() {
            assert_eq!(
                f.message.kind(),
                if f.id.0 > 100 {
                    Kind::Status
                } else {
                    Kind::Append
                }
            );
            ids.push(f.id.0);
        }
    }
    d.finish().unwrap();
    assert_eq!(ids, [1, 101, 2, 102, 3, 103]);
}

#[test]
fn a_poisoned_decoder_repeats_its_error_and_drops_input() {
    let mut d = FrameDecoder::new();
    d.extend(b"GET / HTTP/1.1\r\n");
    let err = d.next_frame().unwrap_err();
    assert_eq!(
        err,
        WireError::BadMagic {
            offset: 0,
            found: b'G',
            expected: b'L'
        }
    );
    let mut ok = Vec::new();
    Message::Status.encode_into(RequestId(1), &mut ok).unwrap();
    d.extend(&ok);
    assert_eq!(d.buffered(), 0);
    assert_eq!(d.next_frame().unwrap_err(), err);
    assert_eq!(d.finish().unwrap_err(), err);
    assert_eq!(d.error(), Some(&err));
}

#[test]
fn a_frame_put_back_comes_again() {
    let mut bytes = Vec::new();
    Message::Heartbeat {
        epoch: 1,
        commit_lsn: 2,
    }
    .encode_into(RequestId(5), &mut bytes)
    .unwrap();
    Message::Heartbeat {
        epoch: 1,
        commit_lsn: 3,
    }
    .encode_into(RequestId(6), &mut bytes)
    .unwrap();
    let mut d = FrameDecoder::new();
    d.extend(&bytes);
    assert_eq!(d.next_frame().unwrap().unwrap().id, RequestId(5));
    d.rewind_last();
    assert_eq!(d.next_frame().unwrap().unwrap().id, RequestId(5));
    assert_eq!(d.next_frame().unwrap().unwrap().id, RequestId(6));
    // The last frame emptied the buffer; putting it back restores it.
    d.rewind_last();
    assert_eq!(d.next_frame().unwrap().unwrap().id, RequestId(6));
    assert!(d.next_frame().unwrap().is_none());
}

#[test]
fn a_hello_decoder_refuses_a_large_frame_at_its_header_and_lifts_the_bound_after() {
    use crate::constants::HELLO_BODY_BYTES_MAX;
    let big = Message::Control {
        message: &[7u8; 4096],
    };
    let frame = encode(&big);
    let mut d = FrameDecoder::limit_bodies(HELLO_BODY_BYTES_MAX);
    // The header alone is enough to refuse it; nothing of the body is waited for.
    d.extend(&frame[..FRAME_HEADER_BYTES]);
    match d.next_frame() {
        Err(WireError::TooLarge { max, .. }) => assert_eq!(max, HELLO_BODY_BYTES_MAX),
        other => panic!("{other:?}"),
    }
    // A hello passes, and after it the kinds' own limits hold again.
    let mut d = FrameDecoder::limit_bodies(HELLO_BODY_BYTES_MAX);
    d.extend(&encode(&Message::ControlHello {
        node_id: 2,
        incarnation: 9,
        addr: None,
    }));
    d.extend(&frame);
    assert!(matches!(
        d.next_frame().unwrap().unwrap().message,
        Message::ControlHello { .. }
    ));
    d.lift_body_limit();
    assert_eq!(d.next_frame().unwrap().unwrap().message, big);
}

#[test]
fn lsns_and_epochs_beyond_their_bound_are_refused() {
    use crate::constants::{EPOCH_MAX, LSN_MAX};
    let ok = Message::Rebase {
        epoch: EPOCH_MAX,
        base_lsn: LSN_MAX,
        base_epoch: 1,
    };
    let frame = encode(&ok);
    assert_eq!(Frame::parse(&frame).unwrap().message, ok);
    for bad in [
        Message::Rebase {
            epoch: 3,
            base_lsn: u64::MAX,
            base_epoch: 1,
        },
        Message::Heartbeat {
            epoch: EPOCH_MAX + 1,
            commit_lsn: 1,
        },
        Message::Truncate {
            epoch: 3,
            after_lsn: LSN_MAX + 1,
            after_epoch: 1,
        },
    ] {
        let mut out = Vec::new();
        let e = bad.encode_into(RequestId(1), &mut out).unwrap_err();
        assert!(e.to_string().contains("beyond the largest"), "{e}");
    }
}
