//! What a raft message costs to decode, read from its protobuf encoding before it is
//! decoded.
//!
//! Decoding allocates per element, not per byte: every log entry becomes an `Entry`
//! struct, every value of a repeated field a slot of a vector, every field the schema
//! does not know an entry of the unknown-fields map. A message of a few bytes per
//! element (a 2 MiB message of empty entries) would decode into a hundred times its
//! size. [`elements`] counts these elements without allocating, so that a node can
//! refuse a message with too many before decoding it; the limit is the node's (see
//! `lockstep::constants::RAFT_MESSAGE_ELEMENTS_MAX`).
//!
//! It also checks the numbers (terms, indexes, node ids) against a bound, so that raft
//! never computes `term + 1` on a term a peer set near `u64::MAX` (with overflow checks
//! on, an abort).
//!
//! The schema is raft-proto's `eraftpb.proto`: `Message` (entries = 7, snapshot = 9),
//! `Entry`, `Snapshot` (metadata = 2), `SnapshotMetadata` (conf_state = 1) and
//! `ConfState` (repeated voters, learners, voters_outgoing, learners_next = 1 to 4).

/// The messages of the schema whose fields are counted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Schema {
    Message,
    Entry,
    Snapshot,
    SnapshotMetadata,
    ConfState,
}

impl Schema {
    /// Field numbers the schema knows, and the nested message of each that is one.
    fn field(self, number: u64) -> Option<Option<Schema>> {
        use Schema::*;
        match (self, number) {
            (Message, 7) => Some(Some(Entry)),
            (Message, 9) => Some(Some(Snapshot)),
            (Message, 1..=6 | 8 | 10..=16) => Some(None),
            (Entry, 1..=6) => Some(None),
            (Snapshot, 1) => Some(None),
            (Snapshot, 2) => Some(Some(SnapshotMetadata)),
            (SnapshotMetadata, 1) => Some(Some(ConfState)),
            (SnapshotMetadata, 2 | 3) => Some(None),
            (ConfState, 1..=5) => Some(None),
            _ => None,
        }
    }

    /// Whether each value of this field is an element of its own (a repeated field).
    fn repeated(self, number: u64) -> bool {
        matches!(
            (self, number),
            (Schema::Message, 7) | (Schema::ConfState, 1..=4)
        )
    }
}

/// Elements of the raft message encoded in `bytes` (a `ControlMsg` encoding, its tag
/// first), or `None` when `bytes` is not a raft message. An encoding that is not valid
/// protobuf is an error (decoding would refuse it too), and so is a number of the
/// schema above `number_max`.
pub fn elements(bytes: &[u8], number_max: u64) -> Result<Option<usize>, String> {
    match bytes.split_first() {
        Some((&super::message::TAG_RAFT, rest)) => {
            let mut scan = Scan {
                count: 0,
                number_max,
            };
            scan.message(rest, Schema::Message, 0)?;
            Ok(Some(scan.count))
        }
        _ => Ok(None),
    }
}

struct Scan {
    count: usize,
    number_max: u64,
}

/// Nesting of the schema is four deep; deeper is not raft's.
const DEPTH_MAX: usize = 4;

impl Scan {
    fn message(&mut self, mut bytes: &[u8], schema: Schema, depth: usize) -> Result<(), String> {
        if depth > DEPTH_MAX {
            return Err("a raft message nested deeper than its schema".into());
        }
        while !bytes.is_empty() {
            let key = varint(&mut bytes)?;
            let (number, wire) = (key >> 3, key & 7);
            if number == 0 {
                return Err("a raft message field numbered 0".into());
            }
            let known = schema.field(number);
            // A field the schema does not know is kept, one entry each.
            if known.is_none() {
                self.count += 1;
            }
            match wire {
                0 => {
                    let v = varint(&mut bytes)?;
                    if known.is_some() {
                        self.number(schema, number, v)?;
                    }
                    if schema.repeated(number) {
                        self.count += 1;
                    }
                }
                1 => skip(&mut bytes, 8)?,
                5 => skip(&mut bytes, 4)?,
                2 => {
                    let len = usize::try_from(varint(&mut bytes)?)
                        .map_err(|_| "a raft message field longer than memory".to_string())?;
                    if len > bytes.len() {
                        return Err(format!(
                            "a raft message field of {len} bytes where {} are left",
                            bytes.len()
                        ));
                    }
                    let (field, rest) = bytes.split_at(len);
                    bytes = rest;
                    match known {
                        Some(Some(nested)) => {
                            if schema.repeated(number) {
                                self.count += 1;
                            }
                            self.message(field, nested, depth + 1)?;
                        }
                        // Packed values of a repeated scalar field: one element each.
                        Some(None) if schema.repeated(number) => {
                            let mut packed = field;
                            while !packed.is_empty() {
                                let v = varint(&mut packed)?;
                                self.number(schema, number, v)?;
                                self.count += 1;
                            }
                        }
                        _ => {}
                    }
                }
                other => return Err(format!("a raft message field of wire type {other}")),
            }
        }
        Ok(())
    }

    /// A number of the schema: at most the bound (a message's `priority`, signed and
    /// unused by lockstep, is not a term or an index).
    fn number(&self, schema: Schema, field: u64, v: u64) -> Result<(), String> {
        if v > self.number_max && !(schema == Schema::Message && field == 16) {
            return Err(format!(
                "a raft message number {v} (field {field}) beyond {}",
                self.number_max
            ));
        }
        Ok(())
    }
}

fn skip(bytes: &mut &[u8], n: usize) -> Result<(), String> {
    if bytes.len() < n {
        return Err("a raft message cut inside a field".into());
    }
    *bytes = &bytes[n..];
    Ok(())
}

fn varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for i in 0..10 {
        let Some((&b, rest)) = bytes.split_first() else {
            return Err("a raft message cut inside a number".into());
        };
        *bytes = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a raft message number longer than ten bytes".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ControlMsg;
    use raft::eraftpb::{Entry, Message, MessageType, Snapshot};

    const MAX: u64 = 1 << 62;

    fn encoded(m: Message) -> Vec<u8> {
        ControlMsg::Raft(m).encode()
    }

    #[test]
    fn entries_and_repeated_values_are_counted_and_plain_fields_are_not() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.set_term(7);
        m.set_commit(3);
        let mut e = Entry::default();
        e.set_term(7);
        e.set_index(4);
        e.set_data(b"{\"Join\":{}}".to_vec().into());
        m.set_entries(vec![e; 5].into());
        assert_eq!(elements(&encoded(m.clone()), MAX).unwrap(), Some(5));
        let mut snap = Snapshot::default();
        snap.mut_metadata()
            .mut_conf_state()
            .set_voters(vec![1, 2, 3]);
        snap.mut_metadata().mut_conf_state().set_learners(vec![4]);
        snap.set_data(vec![9; 100].into());
        m.set_snapshot(snap);
        assert_eq!(elements(&encoded(m), MAX).unwrap(), Some(9));
        assert_eq!(
            elements(&ControlMsg::Status(status()).encode(), MAX).unwrap(),
            None
        );
    }

    fn status() -> crate::control::NodeStatus {
        crate::control::NodeStatus {
            node: 1,
            incarnation: 1,
            streams: Vec::new(),
        }
    }

    #[test]
    fn unknown_fields_count_and_broken_encodings_are_errors() {
        // Field 99 (unknown), varint, three times.
        let mut bytes = vec![super::super::message::TAG_RAFT];
        for _ in 0..3 {
            bytes.extend([0x98, 0x06, 0x01]);
        }
        assert_eq!(elements(&bytes, MAX).unwrap(), Some(3));
        // A length beyond the message.
        let bad = [super::super::message::TAG_RAFT, 0x3a, 0x7f];
        assert!(elements(&bad, MAX).is_err());
        // A group (wire type 3).
        let group = [super::super::message::TAG_RAFT, 0x3b];
        assert!(elements(&group, MAX).is_err());
        // A term near u64::MAX.
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.set_term(u64::MAX - 1);
        let e = elements(&encoded(m), MAX).unwrap_err();
        assert!(e.contains("field 4"), "{e}");
    }

    /// A message of empty entries, as many as 2 MiB hold: what the count refuses
    /// before decoding, and what decoding it would cost.
    #[test]
    fn a_message_of_empty_entries_counts_one_element_per_two_bytes() {
        let mut bytes = vec![super::super::message::TAG_RAFT];
        let n = 1 << 20;
        for _ in 0..n {
            bytes.extend([0x3a, 0x00]);
        }
        assert_eq!(elements(&bytes, MAX).unwrap(), Some(n));
        // What each of them would cost decoded: the struct, in the vector that holds
        // it (`lockstep::constants::RAFT_ELEMENT_BYTES_MAX` bounds it).
        assert!(
            std::mem::size_of::<Entry>() <= 256 / 2,
            "{}",
            std::mem::size_of::<Entry>()
        );
        let decoded = ControlMsg::decode(&bytes).unwrap();
        let ControlMsg::Raft(m) = decoded else {
            panic!("not raft")
        };
        assert_eq!(m.get_entries().len(), n);
    }
}
