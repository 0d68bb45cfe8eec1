//! The simulated network: connections between any two nodes, messages with delays, and
//! the network's faults.
//!
//! Stream messages travel on a connection, as production's TCP links do: in order
//! (unless a reorder fault lets one overtake), and a connection that loses a message is
//! closed at both ends (TCP does not skip lost bytes; it resets). Messages still in
//! flight on a closed connection are never delivered, except by the late-delivery fault:
//! a frame of an old connection lands on the current one, as an old primary's late RDMA
//! WRITE can land in a member's ring after a new primary connected. That fault is what
//! makes the core's epoch checks, not the link identity, the last guard.
//!
//! What travels are encoded frames of the wire protocol ([`crate::wire`]), as
//! production's links carry them: the codec runs under every fault here. Control
//! messages (`Control` frames, for the cluster controller) travel as datagrams between
//! any two nodes, without a connection: they may be lost, delayed, duplicated and
//! reordered.
//!
//! Partitions block a direction between two nodes until a tick (or until healed), so
//! they can be asymmetric. Scenario tests add one-shot rules (drop, duplicate or hold
//! the next message of a kind on a link).

use std::collections::BTreeMap;

use crate::replication::NodeId;
use crate::sim::faults::{Fault, Faults};
use crate::sim::rng::Rng;
use crate::wire::{Frame, Kind, Message};

pub type ConnId = u64;

/// The connection id of control datagrams.
pub const NO_CONN: ConnId = 0;

/// Stale frames kept for the late-delivery fault.
const STALE_MAX: usize = 32;

/// The kind of an encoded frame (its header says; the network does not decode more).
pub fn kind_of(frame: &[u8]) -> Option<Kind> {
    frame.get(5).and_then(|&code| Kind::from_code(code))
}

/// A short description of a frame for the trace.
pub fn brief(frame: &[u8]) -> String {
    match Frame::parse(frame) {
        Ok(f) => match f.message {
            Message::Replicate {
                epoch,
                prev_lsn,
                commit_lsn,
                records,
                ..
            } => format!(
                "Replicate e{epoch} {}..={} commit {commit_lsn}",
                prev_lsn + 1,
                prev_lsn + records.len() as u64
            ),
            Message::Control { message } => format!("Control {} bytes", message.len()),
            other => format!("{other:?}"),
        },
        Err(e) => format!("a bad frame ({e})"),
    }
}

#[derive(Clone, Debug)]
pub struct Packet {
    pub at: u64,
    pub seq: u64,
    pub from: NodeId,
    pub to: NodeId,
    pub conn: ConnId,
    /// One encoded frame.
    pub frame: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Conn {
    dialer: NodeId,
    acceptor: NodeId,
    open: bool,
    /// Delivery tick of the last message in each direction (0: dialer to acceptor).
    fifo: [u64; 2],
}

/// A one-shot rule of a scenario: what happens to the next matching message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Drop,
    Duplicate,
    /// Kept aside until [`Network::release_held`].
    Hold,
    /// Arrives this many ticks late, overtaken by what is sent after it.
    Delay(u64),
}

/// The network's random fault rates, per mille per message.
#[derive(Clone, Copy, Debug)]
pub struct NetFaults {
    pub drop: u64,
    pub duplicate: u64,
    pub reorder: u64,
    /// A bit of the frame flipped on the way.
    pub corrupt: u64,
}

impl NetFaults {
    pub const NONE: NetFaults = NetFaults {
        drop: 0,
        duplicate: 0,
        reorder: 0,
        corrupt: 0,
    };
}

#[derive(Default)]
pub struct Network {
    queue: Vec<Packet>,
    seq: u64,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    /// Directed blocks: (from, to) -> until tick.
    blocked: BTreeMap<(NodeId, NodeId), u64>,
    rules: Vec<(NodeId, NodeId, Kind, Rule)>,
    held: Vec<Packet>,
    stale: Vec<Packet>,
    /// Connections closed since the last `take_closed`.
    closed: Vec<(ConnId, NodeId, NodeId)>,
}

impl Network {
    pub fn new() -> Network {
        Network {
            next_conn: NO_CONN + 1,
            ..Network::default()
        }
    }

    /// Opens a connection from `dialer` to `acceptor`.
    pub fn connect(&mut self, dialer: NodeId, acceptor: NodeId) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                dialer,
                acceptor,
                open: true,
                fifo: [0; 2],
            },
        );
        id
    }

    pub fn is_open(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.open)
    }

    /// The newest open connection between `a` and `b`, whoever dialled.
    pub fn open_conn(&self, a: NodeId, b: NodeId) -> Option<ConnId> {
        self.conns
            .iter()
            .rev()
            .find(|(_, c)| {
                c.open && ((c.dialer == a && c.acceptor == b) || (c.dialer == b && c.acceptor == a))
            })
            .map(|(id, _)| *id)
    }

    /// Closes a connection; both ends learn of it through [`Network::take_closed`].
    /// Its messages in flight from the dialer are kept as stale frames.
    pub fn close(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.open {
            return;
        }
        c.open = false;
        let (dialer, acceptor) = (c.dialer, c.acceptor);
        self.closed.push((conn, dialer, acceptor));
        let mut k = 0;
        while k < self.queue.len() {
            if self.queue[k].conn == conn {
                let p = self.queue.swap_remove(k);
                if p.from == dialer {
                    self.stale.push(p);
                }
            } else {
                k += 1;
            }
        }
        if self.stale.len() > STALE_MAX {
            let extra = self.stale.len() - STALE_MAX;
            self.stale.drain(..extra);
        }
    }

    /// Closes every connection of `node` (it crashed).
    pub fn close_all_of(&mut self, node: NodeId) {
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.open && (c.dialer == node || c.acceptor == node))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.close(id);
        }
        // Forget closed connections: they are never looked up again.
        self.conns.retain(|_, c| c.open);
    }

    /// Connections closed since the last call: (conn, dialer, acceptor).
    pub fn take_closed(&mut self) -> Vec<(ConnId, NodeId, NodeId)> {
        std::mem::take(&mut self.closed)
    }

    pub fn block(&mut self, from: NodeId, to: NodeId, until: u64) {
        let u = self.blocked.entry((from, to)).or_insert(0);
        *u = (*u).max(until);
        let crossing: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.open
                    && ((c.dialer == from && c.acceptor == to)
                        || (c.dialer == to && c.acceptor == from))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in crossing {
            self.close(id);
        }
    }

    pub fn blocked(&self, from: NodeId, to: NodeId, now: u64) -> bool {
        self.blocked.get(&(from, to)).is_some_and(|&u| now < u)
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    pub fn add_rule(&mut self, from: NodeId, to: NodeId, kind: Kind, rule: Rule) {
        self.rules.push((from, to, kind, rule));
    }

    fn take_rule(&mut self, from: NodeId, to: NodeId, kind: Kind) -> Option<Rule> {
        let i = self
            .rules
            .iter()
            .position(|&(f, t, k, _)| f == from && t == to && k == kind)?;
        Some(self.rules.remove(i).3)
    }

    /// Sends `frame` on `conn` (or as a datagram with [`NO_CONN`]). `faults` are the
    /// random rates in force (none in a quiet period). A corrupted frame has one bit
    /// flipped: the receiver's decoder refuses it.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        now: u64,
        rng: &mut Rng,
        rates: NetFaults,
        log: &mut Faults,
        from: NodeId,
        to: NodeId,
        conn: ConnId,
        mut frame: Vec<u8>,
    ) {
        if conn != NO_CONN && !self.is_open(conn) {
            return;
        }
        let kind = kind_of(&frame).expect("nodes send valid frames");
        let rule = self.take_rule(from, to, kind);
        let mut at = now + rng.range(1, 10);
        if rates.corrupt > 0 && rng.chance(rates.corrupt) {
            let bit = rng.index(frame.len() * 8);
            log.record(
                Fault::Corrupt,
                now,
                format!("n{from}->n{to} {} has bit {bit} flipped", brief(&frame)),
            );
            frame[bit / 8] ^= 1 << (bit % 8);
        }
        let packet = |at, seq| Packet {
            at,
            seq,
            from,
            to,
            conn,
            frame: frame.clone(),
        };
        if rule == Some(Rule::Hold) {
            self.seq += 1;
            self.held.push(packet(at, self.seq));
            return;
        }
        let lost = self.blocked(from, to, now)
            || rule == Some(Rule::Drop)
            || (rates.drop > 0 && rng.chance(rates.drop));
        if lost {
            if rule == Some(Rule::Drop) || !self.blocked(from, to, now) {
                log.record(
                    Fault::Drop,
                    now,
                    format!("n{from}->n{to} {} lost", brief(&frame)),
                );
            }
            if conn != NO_CONN {
                self.close(conn);
            }
            return;
        }
        if let Some(Rule::Delay(ticks)) = rule {
            at = now + ticks;
        }
        let reorder = matches!(rule, Some(Rule::Delay(_)))
            || (rates.reorder > 0 && rng.chance(rates.reorder));
        if conn != NO_CONN {
            let c = self.conns.get_mut(&conn).expect("open");
            let dir = usize::from(from != c.dialer);
            if reorder {
                log.record(
                    Fault::Reorder,
                    now,
                    format!("n{from}->n{to} {} overtakes", brief(&frame)),
                );
            } else {
                at = at.max(c.fifo[dir]);
                c.fifo[dir] = at;
            }
        }
        if rule == Some(Rule::Duplicate) || (rates.duplicate > 0 && rng.chance(rates.duplicate)) {
            log.record(
                Fault::Duplicate,
                now,
                format!("n{from}->n{to} {} twice", brief(&frame)),
            );
            self.seq += 1;
            let later = at + rng.range(0, 10);
            self.queue.push(packet(later, self.seq));
        }
        self.seq += 1;
        self.queue.push(packet(at, self.seq));
    }

    /// Messages due at `now`, in delivery order.
    pub fn due(&mut self, now: u64) -> Vec<Packet> {
        let mut due = Vec::new();
        let mut k = 0;
        while k < self.queue.len() {
            if self.queue[k].at <= now {
                due.push(self.queue.swap_remove(k));
            } else {
                k += 1;
            }
        }
        due.sort_by_key(|p| (p.at, p.seq));
        due
    }

    /// Puts back a message its receiver could not take yet.
    pub fn retry_later(&mut self, mut p: Packet, at: u64) {
        if p.conn == NO_CONN || self.is_open(p.conn) {
            p.at = at;
            self.queue.push(p);
        }
    }

    /// Messages of `conn` in flight.
    pub fn in_flight(&self, from: NodeId, to: NodeId, kind: Kind) -> usize {
        self.queue
            .iter()
            .filter(|p| p.from == from && p.to == to && kind_of(&p.frame) == Some(kind))
            .count()
    }

    /// The other end of `conn` from `node`.
    pub fn peer(&self, conn: ConnId, node: NodeId) -> Option<NodeId> {
        let c = self.conns.get(&conn)?;
        Some(if c.dialer == node {
            c.acceptor
        } else {
            c.dialer
        })
    }

    /// Delivers a stale frame of an old connection on the current connection between
    /// the same nodes, if there is one. Returns what it delivered.
    pub fn late_delivery(&mut self, now: u64, rng: &mut Rng) -> Option<String> {
        let candidates: Vec<usize> = (0..self.stale.len())
            .filter(|&i| {
                let p = &self.stale[i];
                self.open_conn(p.from, p.to).is_some()
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let i = candidates[rng.index(candidates.len())];
        let mut p = self.stale.swap_remove(i);
        let what = format!("n{}->n{} old {} lands late", p.from, p.to, brief(&p.frame));
        p.conn = self.open_conn(p.from, p.to).expect("checked");
        p.at = now + rng.range(0, 3);
        self.seq += 1;
        p.seq = self.seq;
        self.queue.push(p);
        Some(what)
    }

    /// Held messages are delivered late: each on the current connection between its
    /// nodes (if any), or on its own connection if that is still open.
    pub fn release_held(&mut self, now: u64) -> usize {
        let held = std::mem::take(&mut self.held);
        let mut n = 0;
        for mut p in held {
            let conn = if self.is_open(p.conn) {
                Some(p.conn)
            } else {
                self.open_conn(p.from, p.to)
            };
            if let Some(c) = conn {
                p.conn = c;
                p.at = now;
                self.seq += 1;
                p.seq = self.seq;
                self.queue.push(p);
                n += 1;
            }
        }
        n
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(commit_lsn: u64) -> Vec<u8> {
        let mut frame = Vec::new();
        let m = Message::Heartbeat {
            epoch: 1,
            commit_lsn,
        };
        m.encode_into(crate::wire::RequestId(0), &mut frame)
            .expect("encodes");
        frame
    }

    fn hb() -> Vec<u8> {
        heartbeat(0)
    }

    #[test]
    fn a_lost_message_closes_its_connection_and_voids_the_rest() {
        let (mut net, mut rng, mut log) = (Network::new(), Rng::new(1), Faults::default());
        let c = net.connect(0, 1);
        net.send(0, &mut rng, NetFaults::NONE, &mut log, 0, 1, c, hb());
        net.add_rule(0, 1, Kind::Heartbeat, Rule::Drop);
        net.send(0, &mut rng, NetFaults::NONE, &mut log, 0, 1, c, hb());
        assert!(!net.is_open(c));
        assert_eq!(net.take_closed(), vec![(c, 0, 1)]);
        assert!(
            net.due(100).is_empty(),
            "nothing of a closed connection arrives"
        );
        // The stale frame can land on a new connection between the same nodes.
        let c2 = net.connect(0, 1);
        assert!(net.late_delivery(100, &mut rng).is_some());
        let due = net.due(200);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].conn, c2);
    }

    #[test]
    fn in_order_unless_reordered_and_partitions_are_directed() {
        let (mut net, mut rng, mut log) = (Network::new(), Rng::new(3), Faults::default());
        let c = net.connect(0, 1);
        for commit in 0..20 {
            net.send(
                0,
                &mut rng,
                NetFaults::NONE,
                &mut log,
                0,
                1,
                c,
                heartbeat(commit),
            );
        }
        let got: Vec<u64> = net
            .due(1000)
            .into_iter()
            .map(|p| match Frame::parse(&p.frame).expect("a frame").message {
                Message::Heartbeat { commit_lsn, .. } => commit_lsn,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        net.block(1, 0, 50);
        assert!(net.blocked(1, 0, 10));
        assert!(!net.blocked(0, 1, 10));
        assert!(!net.is_open(c), "a blocked direction resets the connection");
        assert!(!net.blocked(1, 0, 50));
    }
}
