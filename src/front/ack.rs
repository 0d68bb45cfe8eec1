//! The semi-sync ACK: "I hold everything up to (file, position)".
//!
//! The front sends it only for transactions lockstep committed (the primary's and the
//! sync set's durable writes), never on receipt. ACKs are cumulative on the primary
//! (`Repl_semi_sync_master::report_reply_binlog` releases every waiting commit at or
//! below the position), so one ACK covers every transaction of a batch, and an ACK
//! that does not move forward is never sent.
//!
//! The packet is `0xEF`, the position (8 bytes), the file name; it goes on the dump
//! connection with sequence number 0, outside the dump's own packet sequence.

use std::cmp::Ordering;
use std::io::Write;
use std::net::TcpStream;

use mysql_common::packets::SemiSyncAckPacket;
use mysql_common::proto::MySerialize;

/// A position in the primary's binlog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinlogPos {
    pub file: String,
    pub pos: u64,
}

impl BinlogPos {
    /// Binlog files are numbered with a fixed-width suffix, so names compare in the
    /// order the primary wrote them; positions compare within a file.
    pub fn cmp_order(&self, other: &BinlogPos) -> Ordering {
        (self.file.as_str(), self.pos).cmp(&(other.file.as_str(), other.pos))
    }
}

impl std::fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// Writes ACKs on the dump connection; never twice for one position, never backwards.
pub struct AckWriter {
    socket: TcpStream,
    last: Option<BinlogPos>,
    sent: u64,
}

impl AckWriter {
    pub fn new(socket: TcpStream) -> AckWriter {
        AckWriter {
            socket,
            last: None,
            sent: 0,
        }
    }

    /// The furthest position ACKed.
    pub fn last(&self) -> Option<&BinlogPos> {
        self.last.as_ref()
    }

    /// ACKs sent.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// ACKs `at` if it is beyond the last ACK. Returns whether a packet was sent.
    pub fn ack(&mut self, at: &BinlogPos) -> std::io::Result<bool> {
        if self
            .last
            .as_ref()
            .is_some_and(|l| at.cmp_order(l) != Ordering::Greater)
        {
            return Ok(false);
        }
        self.socket.write_all(&packet(at))?;
        self.last = Some(at.clone());
        self.sent += 1;
        Ok(true)
    }
}

/// The whole ACK packet, header included.
pub fn packet(at: &BinlogPos) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + at.file.len());
    SemiSyncAckPacket::new(at.pos, at.file.as_bytes()).serialize(&mut body);
    let len = u32::try_from(body.len()).expect("an ACK is small");
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&len.to_le_bytes()[..3]);
    // Sequence number 0: the primary reads ACKs as new exchanges.
    out.push(0);
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ack_packet_is_magic_position_and_file_name() {
        let p = packet(&BinlogPos {
            file: "binlog.000002".into(),
            pos: 0x0102_0304,
        });
        let mut want = vec![22, 0, 0, 0, 0xef, 4, 3, 2, 1, 0, 0, 0, 0];
        want.extend_from_slice(b"binlog.000002");
        assert_eq!(p, want);
    }

    #[test]
    fn positions_order_by_file_then_offset() {
        let at = |f: &str, p| BinlogPos {
            file: f.into(),
            pos: p,
        };
        assert_eq!(
            at("b.000001", 900).cmp_order(&at("b.000002", 4)),
            Ordering::Less
        );
        assert_eq!(
            at("b.000002", 900).cmp_order(&at("b.000002", 4)),
            Ordering::Greater
        );
        assert_eq!(
            at("b.000002", 4).cmp_order(&at("b.000002", 4)),
            Ordering::Equal
        );
    }
}
