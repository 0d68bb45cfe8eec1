//! The writer's credits on a member's ring: how far it may write without overwriting
//! bytes the member has not consumed.
//!
//! Credits follow positions, never counts: the writer has placed everything below
//! `written`, the member has consumed everything below `consumed` (the contiguous ring
//! position it reports in its ack slot), and the writer may place bytes up to
//! `consumed + ring_bytes`. A report that goes backwards or past `written` is a protocol
//! error (a confused or forged member), never a reason to write over unread bytes. A
//! full ring is back-pressure: the writer keeps its records until room returns.

/// Positions are absolute byte counts since the ring was set up; offsets in the ring
/// are positions modulo its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credits {
    ring_bytes: u64,
    written: u64,
    consumed: u64,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    #[error("member reports consumed ring position {reported}, behind {consumed}")]
    Backwards { reported: u64, consumed: u64 },
    #[error("member reports consumed ring position {reported}, past the written {written}")]
    PastWritten { reported: u64, written: u64 },
}

impl Credits {
    pub fn new(ring_bytes: u64) -> Credits {
        assert!(ring_bytes > 0);
        Credits {
            ring_bytes,
            written: 0,
            consumed: 0,
        }
    }

    /// Bytes that may be placed now.
    pub fn room(&self) -> u64 {
        self.ring_bytes - (self.written - self.consumed)
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Takes `bytes` of room at the written position; false (and nothing taken) when
    /// the ring lacks the room.
    pub fn take(&mut self, bytes: u64) -> bool {
        if bytes > self.room() {
            return false;
        }
        self.written += bytes;
        assert!(self.written - self.consumed <= self.ring_bytes);
        true
    }

    /// The member consumed everything below `reported`.
    pub fn on_consumed(&mut self, reported: u64) -> Result<(), CreditError> {
        if reported < self.consumed {
            return Err(CreditError::Backwards {
                reported,
                consumed: self.consumed,
            });
        }
        if reported > self.written {
            return Err(CreditError::PastWritten {
                reported,
                written: self.written,
            });
        }
        self.consumed = reported;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_follows_the_consumed_position() {
        // (take or consume, amount, expected result, room after)
        let steps: &[(&str, u64, bool, u64)] = &[
            ("take", 600, true, 424),
            ("take", 500, false, 424),
            ("take", 424, true, 0),
            ("take", 1, false, 0),
            ("consume", 100, true, 100),
            ("consume", 100, true, 100),
            ("take", 100, true, 0),
            ("consume", 1124, true, 1024),
            ("consume", 1000, false, 1024),
            ("consume", 1125, false, 1024),
        ];
        let mut c = Credits::new(1024);
        for (i, &(op, n, ok, room)) in steps.iter().enumerate() {
            let got = match op {
                "take" => c.take(n),
                _ => c.on_consumed(n).is_ok(),
            };
            assert_eq!(got, ok, "step {i}: {op} {n}");
            assert_eq!(c.room(), room, "step {i}: room");
        }
    }
}
