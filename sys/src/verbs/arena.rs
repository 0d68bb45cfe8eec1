//! Room in a queue pair's registered send memory, handed out and taken back in order.
//!
//! The NIC reads a write's bytes from registered memory until the write completes. A
//! queue pair therefore copies each write into its send arena and keeps the [`Span`]
//! it got until the write's completion is reaped: only then is the room handed out
//! again. Spans are taken in posting order and come back in any order, but room is
//! reused only behind the oldest span still out, so bytes the NIC may still read are
//! never overwritten. A span never wraps the arena's end (the arena skips to its start,
//! as the ring does).

use std::collections::VecDeque;

/// Alignment of every span: a cache line, so two writes never share one.
pub const SPAN_ALIGN: u64 = 64;

/// Bytes of the arena a posted write holds until its completion. Not `Clone`: one
/// write, one span.
#[derive(Debug, PartialEq, Eq)]
pub struct Span {
    /// Offset in the arena.
    pub offset: u64,
    pub len: u64,
    /// Absolute position where the span ends (room behind it is free once it is back).
    end: u64,
}

/// The bookkeeping of an arena of `capacity` bytes.
#[derive(Debug)]
pub struct Arena {
    capacity: u64,
    /// Absolute position of the next span.
    head: u64,
    /// Spans out, oldest first: (end position, returned).
    out: VecDeque<(u64, bool)>,
    /// Absolute position below which everything is free.
    tail: u64,
}

impl Arena {
    pub fn new(capacity: u64) -> Arena {
        assert!(capacity > 0);
        assert!(capacity.is_multiple_of(SPAN_ALIGN));
        Arena {
            capacity,
            head: 0,
            out: VecDeque::new(),
            tail: 0,
        }
    }

    /// Room for `len` bytes, or `None` while spans still out hold it.
    pub fn take(&mut self, len: u64) -> Option<Span> {
        let len = len.max(1).next_multiple_of(SPAN_ALIGN);
        if len > self.capacity {
            return None;
        }
        let off = self.head % self.capacity;
        let start = if off + len > self.capacity {
            self.head + (self.capacity - off)
        } else {
            self.head
        };
        let end = start + len;
        if end - self.tail > self.capacity {
            return None;
        }
        self.head = end;
        self.out.push_back((end, false));
        Some(Span {
            offset: start % self.capacity,
            len,
            end,
        })
    }

    /// A span is back (its write completed): its room, and that of every older span
    /// already back, is free again.
    pub fn give_back(&mut self, span: Span) {
        let i = self
            .out
            .iter()
            .position(|(end, back)| *end == span.end && !back)
            .expect("a span of this arena, given back once");
        self.out[i].1 = true;
        while let Some(&(end, true)) = self.out.front() {
            self.tail = end;
            self.out.pop_front();
        }
        if self.out.is_empty() {
            // Nothing out: start the next span at the arena's start again.
            self.tail = self.head;
        }
    }

    /// Bytes handed out and not yet free.
    pub fn in_use(&self) -> u64 {
        self.head - self.tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_comes_back_only_behind_the_oldest_span_out() {
        let mut a = Arena::new(1024);
        let s1 = a.take(400).unwrap();
        let s2 = a.take(400).unwrap();
        assert_eq!(s1.offset, 0);
        assert_eq!(s2.offset, 448);
        assert!(a.take(400).is_none(), "full");
        // The younger span back first frees nothing: the older one is still read.
        a.give_back(s2);
        assert!(a.take(400).is_none());
        a.give_back(s1);
        assert_eq!(a.in_use(), 0);
        let s3 = a.take(400).unwrap();
        assert_eq!(s3.len, 448);
    }

    #[test]
    fn a_span_never_wraps_the_end() {
        let mut a = Arena::new(1024);
        let s1 = a.take(640).unwrap();
        let s2 = a.take(256).unwrap();
        assert_eq!(s2.offset, 640);
        a.give_back(s1);
        // 128 bytes left at the end: a 256-byte span starts the next lap.
        let s3 = a.take(256).unwrap();
        assert_eq!(s3.offset, 0);
        assert!(s3.offset + s3.len <= 1024);
        // The skipped end counts as used until the spans before it are back.
        assert!(a.take(512).is_none());
        a.give_back(s2);
        let s4 = a.take(512).unwrap();
        assert_eq!(s4.offset, 256);
        a.give_back(s3);
        a.give_back(s4);
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    fn a_write_larger_than_the_arena_gets_no_room() {
        let mut a = Arena::new(1024);
        assert!(a.take(1025).is_none());
        assert!(a.take(1024).is_some());
    }

    #[test]
    fn many_laps_with_completions_in_order_keep_every_span_inside() {
        let mut a = Arena::new(4096);
        let mut out = VecDeque::new();
        for i in 0..10_000u64 {
            let len = 1 + (i * 37) % 1500;
            while a.in_use() + len.next_multiple_of(SPAN_ALIGN) * 2 > 4096 {
                a.give_back(out.pop_front().unwrap());
            }
            let s = a.take(len).unwrap();
            assert!(s.offset + s.len <= 4096);
            assert_eq!(s.offset % SPAN_ALIGN, 0);
            out.push_back(s);
        }
    }
}
