//! The wire codec against valid, broken and hostile input.
//!
//! The mutation loop is seeded and deterministic: a failure prints the seed and the
//! iteration, and `WIRE_FUZZ_SEED=<seed>` replays it (`WIRE_FUZZ_ITERATIONS` changes
//! the count, 200 000 by default).

use std::time::Instant;

use lockstep::constants::{FRAME_HEADER_BYTES, FRAME_READ_CHUNK_BYTES};
use lockstep::wire::{
    ErrorCode, FrameDecoder, Kind, MAGIC, Message, Mode, Payloads, RecordRef, Records, RequestId,
    Role, VERSION, WireError,
};

static BATCH: [&[u8]; 3] = [b"first record", b"", b"third, a bit longer than the others"];
static ONE: [&[u8]; 1] = [&[0xff; 700]];
static RECORDS: [RecordRef<'static>; 3] = [
    RecordRef {
        lsn: 41,
        epoch: 6,
        payload: b"a",
    },
    RecordRef {
        lsn: 42,
        epoch: 7,
        payload: b"",
    },
    RecordRef {
        lsn: 43,
        epoch: 7,
        payload: b"payload of record 43",
    },
];

/// Valid messages, at least one of every kind, with the optional fields both ways.
fn samples() -> Vec<Message<'static>> {
    let mut v = vec![
        Message::ClientHello { stream: "orders" },
        Message::Append {
            mode: None,
            timeout_ms: 5000,
            payloads: Payloads::new(&BATCH),
        },
        Message::Append {
            mode: Some(Mode::Async),
            timeout_ms: 0,
            payloads: Payloads::new(&ONE),
        },
        Message::Read {
            from_lsn: 1,
            records_max: 100,
            bytes_max: 1 << 20,
        },
        Message::Status,
        Message::Welcome {
            node_id: 3,
            role: Role::Secondary,
            epoch: 9,
            primary: Some("10.0.0.1:7000"),
        },
        Message::Welcome {
            node_id: 1,
            role: Role::Primary,
            epoch: 9,
            primary: None,
        },
        Message::Appended {
            first_lsn: 17,
            count: 3,
        },
        Message::InDoubt {
            first_lsn: 20,
            count: 1,
            reason: "commit timed out after 5000 ms",
        },
        Message::NotPrimary {
            epoch: 10,
            primary: Some("node-2.example:7000"),
        },
        Message::NotPrimary {
            epoch: 10,
            primary: None,
        },
        Message::Records {
            commit_lsn: 50,
            records: Records::new(&RECORDS),
        },
        Message::Records {
            commit_lsn: 0,
            records: Records::empty(),
        },
        Message::StatusReply {
            json: r#"{"commit_lsn":43,"role":"primary"}"#,
        },
        Message::PeerHello {
            stream: "orders",
            node_id: 2,
            epoch: 7,
        },
        Message::Replicate {
            epoch: 7,
            prev_lsn: 40,
            prev_epoch: 6,
            commit_lsn: 39,
            records: Records::new(&RECORDS),
        },
        Message::Heartbeat {
            epoch: 7,
            commit_lsn: 43,
        },
        Message::Truncate {
            epoch: 9,
            after_lsn: 41,
            after_epoch: 8,
        },
        Message::Rebase {
            epoch: 9,
            base_lsn: 4096,
            base_epoch: 8,
        },
        Message::PeerWelcome {
            node_id: 2,
            epoch: 7,
            last_lsn: 43,
            last_epoch: 7,
            durable_lsn: 42,
        },
        Message::Ack {
            epoch: 7,
            received_lsn: 43,
            durable_lsn: 43,
        },
        Message::Refuse {
            epoch: 8,
            last_lsn: 40,
            reason: "epoch 7 is older than 8",
        },
        Message::RingOffer {
            setup: b"\x08\x00rdma-emu offer",
        },
        Message::RingSwitch,
        Message::RingAccept {
            setup: b"\x01 accept",
        },
        Message::ControlHello {
            node_id: 3,
            incarnation: 0x1234_5678_9abc,
            addr: Some("10.0.0.3:7003"),
        },
        Message::ControlHello {
            node_id: 3,
            incarnation: 0x1234_5678_9abc,
            addr: None,
        },
        Message::Control {
            message: b"\x02{\"Fence\":{\"stream\":\"orders\",\"epoch\":9}}",
        },
        Message::AuthHello {
            node_id: 4,
            nonce: &[0x11; 32],
        },
        Message::AuthChallenge {
            nonce: &[0x22; 32],
            proof: &[0x33; 32],
        },
        Message::AuthProof { proof: &[0x44; 32] },
        Message::JoinRequest {
            node_id: 4,
            addr: "10.0.0.4:7004",
        },
        Message::Joined {
            config: b"{\"version\":12}",
        },
        Message::ControlWelcome {
            node_id: 2,
            incarnation: 0x1234_5678_9abd,
        },
    ];
    for code in ErrorCode::ALL {
        v.push(Message::Error {
            code,
            message: "a reason",
        });
    }
    v
}

fn encode(m: &Message<'_>, id: u64) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode_into(RequestId(id), &mut out)
        .expect("valid sample encodes");
    out
}

/// Recomputes the checksum of a frame after a test changed it on purpose.
fn reseal(frame: &mut [u8]) {
    let crc = checksum(frame);
    frame[20..24].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(frame: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&frame[..20]), &frame[FRAME_HEADER_BYTES..])
}

fn decode_one(bytes: &[u8]) -> Result<Option<(RequestId, Kind)>, WireError> {
    let mut d = FrameDecoder::new();
    d.extend(bytes);
    let f = d.next_frame()?;
    Ok(f.map(|f| (f.id, f.message.kind())))
}

#[test]
fn every_kind_round_trips() {
    let samples = samples();
    for kind in Kind::ALL {
        assert!(
            samples.iter().any(|m| m.kind() == kind),
            "no sample of {kind}"
        );
    }
    for (i, m) in samples.iter().enumerate() {
        let id = 1000 + i as u64;
        let bytes = encode(m, id);
        let mut d = FrameDecoder::new();
        d.extend(&bytes);
        let frame = d.next_frame().unwrap().expect("a whole frame");
        assert_eq!(frame.id, RequestId(id));
        assert_eq!(&frame.message, m);
        // One encoding per message: the decoded message re-encodes to the same bytes.
        assert_eq!(encode(&frame.message, id), bytes);
        assert!(d.next_frame().unwrap().is_none());
        d.finish().unwrap();
    }
}

#[test]
fn frames_split_at_every_point_and_in_random_chunks_decode_in_order() {
    let samples = samples();
    let mut stream = Vec::new();
    for (i, m) in samples.iter().enumerate() {
        m.encode_into(RequestId(i as u64 + 1), &mut stream).unwrap();
    }
    let mut rng = Rng(11);
    for round in 0..50 {
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = if round == 0 { 1 } else { 1 + rng.below(97) };
            let (chunk, tail) = rest.split_at(n.min(rest.len()));
            rest = tail;
            d.extend(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                assert_eq!(&f.message, &samples[f.id.0 as usize - 1]);
                got.push(f.id.0);
            }
        }
        d.finish().unwrap();
        assert_eq!(got, (1..=samples.len() as u64).collect::<Vec<_>>());
    }
}

/// A truncated frame is not an error while the connection is open: the decoder waits
/// for the rest. `finish` (called at end of file) reports it.
#[test]
fn a_truncated_frame_waits_and_is_an_error_only_at_the_end() {
    for m in samples() {
        let bytes = encode(&m, 5);
        for cut in 0..bytes.len() {
            let mut d = FrameDecoder::new();
            d.extend(&bytes[..cut]);
            assert!(
                d.next_frame().unwrap().is_none(),
                "{} cut at {cut}",
                m.kind()
            );
            match d.finish() {
                Ok(()) => assert_eq!(cut, 0),
                Err(e) => assert_eq!(e, WireError::Truncated { buffered: cut }),
            }
            d.extend(&bytes[cut..]);
            assert_eq!(d.next_frame().unwrap().unwrap().message, m);
        }
    }
}

#[test]
fn garbage_is_refused_at_its_first_byte() {
    assert_eq!(
        decode_one(b"\0\0\0\0\0\0\0\0").unwrap_err(),
        WireError::BadMagic {
            offset: 0,
            found: 0,
            expected: MAGIC[0]
        }
    );
    let err = decode_one(b"LSX").unwrap_err();
    assert_eq!(
        err,
        WireError::BadMagic {
            offset: 2,
            found: b'X',
            expected: MAGIC[2]
        }
    );
    assert_eq!(
        err.to_string(),
        "not a lockstep frame: magic byte 2 is 0x58, expected 0x57"
    );
}

#[test]
fn an_oversized_length_is_refused_before_the_body_arrives() {
    for (kind, len) in [
        (Kind::Heartbeat, 17u32),
        (Kind::Append, Kind::Append.body_bytes_max() as u32 + 1),
        (Kind::Replicate, u32::MAX),
        (Kind::Status, 1),
    ] {
        let mut header = encode(&Message::Status, 1)[..FRAME_HEADER_BYTES].to_vec();
        header[5] = kind.code();
        header[16..20].copy_from_slice(&len.to_le_bytes());
        let mut d = FrameDecoder::new();
        // Only the header up to the length field: no body, not even the checksum.
        d.extend(&header[..20]);
        let err = d.next_frame().unwrap_err();
        assert_eq!(
            err,
            WireError::TooLarge {
                kind,
                len: len as usize,
                max: kind.body_bytes_max()
            }
        );
        assert!(d.buffer_bytes() <= FRAME_READ_CHUNK_BYTES);
        assert!(
            err.to_string()
                .contains(&format!("{kind} frame body of {len} bytes"))
        );
    }
}

#[test]
fn wrong_version_unknown_kind_and_flags_are_refused() {
    let good = encode(&Message::Status, 1);
    let mut v = good.clone();
    v[4] = VERSION + 1;
    assert_eq!(
        decode_one(&v[..5]).unwrap_err(),
        WireError::BadVersion {
            found: 2,
            supported: 1
        }
    );
    let mut v = good.clone();
    v[5] = 0x7f;
    assert_eq!(
        decode_one(&v[..6]).unwrap_err(),
        WireError::UnknownKind { found: 0x7f }
    );
    let mut v = good.clone();
    v[7] = 0x80;
    reseal(&mut v);
    assert_eq!(
        decode_one(&v).unwrap_err(),
        WireError::UnknownFlags { found: 0x8000 }
    );
}

#[test]
fn a_bad_checksum_is_refused() {
    let m = Message::Appended {
        first_lsn: 9,
        count: 1,
    };
    let mut v = encode(&m, 3);
    let expected = u32::from_le_bytes(v[20..24].try_into().unwrap());
    v[FRAME_HEADER_BYTES] ^= 1;
    let actual = checksum(&v);
    assert_eq!(
        decode_one(&v).unwrap_err(),
        WireError::BadChecksum {
            kind: Kind::Appended,
            expected,
            actual
        }
    );
    // A changed request id is caught too: the header is covered.
    let mut v = encode(&m, 3);
    v[8] ^= 4;
    assert!(matches!(
        decode_one(&v).unwrap_err(),
        WireError::BadChecksum { .. }
    ));
}

/// Bodies with a valid checksum that break a rule of their kind.
#[test]
fn malformed_bodies_are_refused_with_the_reason() {
    let body_error = |m: &Message<'_>, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut v = encode(m, 1);
        edit(&mut v);
        let len = (v.len() - FRAME_HEADER_BYTES) as u32;
        v[16..20].copy_from_slice(&len.to_le_bytes());
        reseal(&mut v);
        match decode_one(&v) {
            Err(WireError::Malformed { kind, reason }) => {
                assert_eq!(kind, m.kind());
                reason
            }
            other => panic!("{}: expected Malformed, got {other:?}", m.kind()),
        }
    };
    let heartbeat = Message::Heartbeat {
        epoch: 1,
        commit_lsn: 1,
    };
    let error = Message::Error {
        code: ErrorCode::Internal,
        message: "",
    };
    assert_eq!(
        body_error(&error, &|v| v.push(0)),
        "1 trailing bytes after the last field (at offset 4)"
    );
    assert_eq!(
        body_error(&heartbeat, &|v| v.truncate(v.len() - 1)),
        "the body ends inside commit_lsn: 8 bytes needed at offset 8, 7 left"
    );
    let replicate = samples()
        .into_iter()
        .find(|m| m.kind() == Kind::Replicate)
        .unwrap();
    // The second record's lsn (42) sits after the fixed fields (36 bytes) and the first
    // record (20 + 1 bytes).
    let lsn2 = FRAME_HEADER_BYTES + 36 + 21;
    assert_eq!(
        body_error(&replicate, &|v| v[lsn2] = 44),
        "record 1 has lsn 44 after lsn 41: records must be contiguous"
    );
    assert_eq!(
        body_error(&replicate, &|v| v[lsn2 + 8] = 5),
        "record 1 (lsn 42) has epoch 5 after epoch 6: epochs never decrease"
    );
    assert_eq!(
        body_error(&replicate, &|v| v[FRAME_HEADER_BYTES + 8] = 39),
        "the first record has lsn 41, expected prev_lsn + 1 = 40"
    );
    assert_eq!(
        body_error(&replicate, &|v| v[FRAME_HEADER_BYTES] = 6),
        "record lsn 43 has epoch 7, newer than the frame's epoch 6"
    );
    let hello = Message::ClientHello { stream: "orders" };
    assert_eq!(
        body_error(&hello, &|v| v[FRAME_HEADER_BYTES + 2] = b'/'),
        "invalid stream name \"/rders\": '/' is not one of [A-Za-z0-9_.-]"
    );
    assert!(
        body_error(&hello, &|v| v[FRAME_HEADER_BYTES + 2] = 0xc3)
            .starts_with("stream is not valid UTF-8")
    );
    assert_eq!(
        body_error(&error, &|v| v[FRAME_HEADER_BYTES] = 0xee),
        "unknown error code 238"
    );
    let ack = Message::Ack {
        epoch: 1,
        received_lsn: 5,
        durable_lsn: 5,
    };
    assert_eq!(
        body_error(&ack, &|v| v[FRAME_HEADER_BYTES + 16] = 6),
        "durable_lsn 6 is beyond received_lsn 5"
    );
    let append = Message::Append {
        mode: None,
        timeout_ms: 1,
        payloads: Payloads::new(&BATCH),
    };
    assert_eq!(
        body_error(&append, &|v| v[FRAME_HEADER_BYTES + 9] = 0xff),
        "the body ends inside payload: 255 bytes needed at offset 13, 55 left"
    );
}

#[test]
fn the_encoder_refuses_what_the_decoder_would() {
    let mut out = Vec::new();
    let gap = [RECORDS[0], RECORDS[2]];
    let err = Message::Replicate {
        epoch: 7,
        prev_lsn: 40,
        prev_epoch: 6,
        commit_lsn: 0,
        records: Records::new(&gap),
    }
    .encode_into(RequestId(1), &mut out)
    .unwrap_err();
    assert!(
        matches!(
            err,
            WireError::Malformed {
                kind: Kind::Replicate,
                ..
            }
        ),
        "{err}"
    );
    let err = Message::Control { message: &[] }
        .encode_into(RequestId(1), &mut out)
        .unwrap_err();
    assert!(
        err.to_string().contains("control message of 0 bytes"),
        "{err}"
    );
    let err = Message::ClientHello { stream: "../etc" }
        .encode_into(RequestId(1), &mut out)
        .unwrap_err();
    assert!(err.to_string().contains("starts with a dot"), "{err}");
    let err = Message::NotPrimary {
        epoch: 1,
        primary: Some(""),
    }
    .encode_into(RequestId(1), &mut out)
    .unwrap_err();
    assert!(err.to_string().contains("empty address"), "{err}");
    assert!(out.is_empty());
}

/// splitmix64: small, seedable, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }
}

/// Where the check of each header field sits, for "refused at the first bad byte".
fn field_end(e: &WireError) -> Option<usize> {
    match e {
        WireError::BadMagic { offset, .. } => Some(offset + 1),
        WireError::BadVersion { .. } => Some(5),
        WireError::UnknownKind { .. } => Some(6),
        WireError::UnknownFlags { .. } => Some(8),
        WireError::TooLarge { .. } => Some(20),
        _ => None,
    }
}

/// Applies one random mutation to `v`.
fn mutate(rng: &mut Rng, v: &mut Vec<u8>) {
    let len = v.len();
    match rng.below(8) {
        0 => {
            let bit = rng.below(len * 8);
            v[bit / 8] ^= 1 << (bit % 8);
        }
        1 => {
            let i = rng.below(len);
            v[i] = rng.next() as u8;
        }
        2 => v.truncate(rng.below(len)),
        3 => {
            let declared = (len - FRAME_HEADER_BYTES) as u32;
            let new = match rng.below(6) {
                0 => u32::MAX,
                1 => rng.next() as u32,
                2 => 0,
                3 => declared.wrapping_add(1),
                4 => declared.wrapping_sub(1),
                _ => rng.below(1 << 23) as u32,
            };
            v[16..20].copy_from_slice(&new.to_le_bytes());
        }
        4 => {
            let i = rng.below(len + 1);
            v.insert(i, rng.next() as u8);
        }
        5 => {
            v.remove(rng.below(len));
        }
        6 => {
            // A length field or count inside the body set to an extreme.
            if len > FRAME_HEADER_BYTES + 4 {
                let i = FRAME_HEADER_BYTES + rng.below(len - FRAME_HEADER_BYTES - 3);
                let value: u32 = [0, 1, u32::MAX, 0xffff, rng.next() as u32][rng.below(5)];
                v[i..i + 4].copy_from_slice(&value.to_le_bytes());
            }
        }
        _ => {
            let i = rng.below(len);
            let n = 1 + rng.below(16).min(len - i - 1);
            for b in &mut v[i..i + n] {
                *b = rng.next() as u8;
            }
        }
    }
}

/// Feeds `bytes` to a fresh decoder in random chunks and checks every frame and error.
fn check_decoding(rng: &mut Rng, bytes: &[u8], ctx: &dyn Fn() -> String) {
    let mut d = FrameDecoder::new();
    let mut fed = 0;
    let mut consumed = 0;
    let mut reencoded = Vec::new();
    let bytewise = rng.chance(4);
    while fed < bytes.len() {
        let n = if bytewise { 1 } else { 1 + rng.below(200) };
        let before = fed;
        fed = (fed + n).min(bytes.len());
        d.extend(&bytes[before..fed]);
        loop {
            match d.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    let body_len =
                        u32::from_le_bytes(bytes[consumed + 16..consumed + 20].try_into().unwrap());
                    let raw = &bytes[consumed..consumed + FRAME_HEADER_BYTES + body_len as usize];
                    let crc = u32::from_le_bytes(raw[20..24].try_into().unwrap());
                    assert_eq!(checksum(raw), crc, "frame with a bad checksum: {}", ctx());
                    reencoded.clear();
                    frame.message.encode_into(frame.id, &mut reencoded).unwrap();
                    assert_eq!(
                        reencoded,
                        raw,
                        "decoded frame re-encodes differently: {}",
                        ctx()
                    );
                    consumed += raw.len();
                }
                Err(e) => {
                    if let Some(end) = field_end(&e) {
                        assert!(
                            before < consumed + end,
                            "{e} reported late (after {before} bytes): {}",
                            ctx()
                        );
                    }
                    assert_eq!(d.next_frame().unwrap_err(), e, "not poisoned: {}", ctx());
                    assert_eq!(d.buffered(), 0);
                    return;
                }
            }
        }
        assert!(d.buffered() <= bytes.len() - consumed);
    }
    match d.finish() {
        Ok(()) => assert_eq!(consumed, bytes.len(), "{}", ctx()),
        Err(e) => assert_eq!(
            e,
            WireError::Truncated {
                buffered: bytes.len() - consumed
            },
            "{}",
            ctx()
        ),
    }
}

#[test]
fn mutated_frames_never_panic_never_pass_a_bad_checksum_and_never_poison_a_fresh_decoder() {
    let seed = std::env::var("WIRE_FUZZ_SEED").map_or(0x5eed_1234, |s| s.parse().unwrap());
    let iterations: usize =
        std::env::var("WIRE_FUZZ_ITERATIONS").map_or(200_000, |s| s.parse().unwrap());
    let samples = samples();
    let frames: Vec<Vec<u8>> = (samples.iter().enumerate())
        .map(|(i, m)| encode(m, i as u64 + 1))
        .collect();
    let mut rng = Rng(seed);
    let mut refused = 0usize;
    let started = Instant::now();
    let mut v = Vec::new();
    for iteration in 0..iterations {
        let i = rng.below(frames.len());
        v.clear();
        if rng.chance(8) {
            // A valid frame ahead of the damaged one must still come out.
            v.extend_from_slice(&frames[rng.below(frames.len())]);
        }
        let mut tail = frames[i].clone();
        for _ in 0..1 + rng.below(3) {
            if tail.len() > FRAME_HEADER_BYTES {
                mutate(&mut rng, &mut tail);
            }
        }
        // Half of the damaged frames get a valid checksum, so the body rules are
        // exercised and not just the checksum.
        if rng.chance(2) && tail.len() >= FRAME_HEADER_BYTES {
            reseal(&mut tail);
        }
        v.extend_from_slice(&tail);
        let ctx = || format!("seed {seed} iteration {iteration} sample {i}");
        check_decoding(&mut rng, &v, &ctx);
        if decode_one(&tail).is_err() {
            refused += 1;
        }
        if iteration % 64 == 0 {
            let j = rng.below(frames.len());
            let (id, kind) = decode_one(&frames[j]).unwrap().unwrap();
            assert_eq!((id.0, kind), (j as u64 + 1, samples[j].kind()));
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{iterations} mutations in {elapsed:?} (seed {seed}); {refused} refused at once, \
         the rest incomplete or still valid"
    );
    // Most mutations must be caught outright; a decoder that accepted everything
    // would fail here even if the checks above were too weak.
    assert!(
        refused > iterations / 2,
        "only {refused} of {iterations} refused"
    );
}
