//! Simulated clients: several of them append records of random sizes in random modes
//! (the stream's, or a weaker one per request; now and then a stronger one, which the
//! primary must refuse), read from every node, time out, and retry.
//!
//! A client follows production's client rules:
//! - An append that was refused before anything was appended (not the primary, full
//!   disk, changing role) is sent again, to the primary the node named.
//! - An append answered in doubt is never sent again as new: the client resolves it by
//!   LSN, reading the records back once the commit LSN passes them. Records there that
//!   are not its own mean the append was not committed (a new primary reused the LSNs).
//! - An append that gets no answer at all (the primary crashed) is in doubt without an
//!   LSN: the client gives it up and never sends it again.
//!
//! Every payload is unique (client, request, record), so the checker can tell a resend
//! from a new record.

use crate::replication::{Mode, NodeId};
use crate::sim::host::Out;
use crate::sim::rng::Rng;
use crate::sim::{Rec, Sim};

/// Most attempts of an append refused before anything was appended.
const ATTEMPTS_MAX: u32 = 8;
/// Most reads of an in-doubt append before the client gives up resolving it.
const RESOLVE_TRIES_MAX: u32 = 20;
/// Ticks between two tries (retries and resolution reads).
const RETRY_TICKS: u64 = 25;
/// Ticks a client waits beyond the request's own timeout before it gives up on an
/// answer.
const ANSWER_MARGIN_TICKS: u64 = 100;

/// Who is waiting for a request's answer: (client, the client's token).
pub type ClientRef = (usize, u64);

/// A node's answer to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Appended {
        first: u64,
        last: u64,
    },
    InDoubt {
        first: u64,
        last: u64,
    },
    NotPrimary {
        primary: NodeId,
    },
    /// Nothing was appended (full disk, failed log, no primary serving).
    Unavailable(String),
    ModeNotAllowed,
}

/// What a client asks a node to do.
#[derive(Clone, Debug)]
pub enum Op {
    Append {
        node: NodeId,
        token: u64,
        mode: Option<Mode>,
        timeout_ticks: u64,
        payloads: Vec<Vec<u8>>,
    },
    Read {
        node: NodeId,
        token: u64,
        from: u64,
        records_max: u64,
    },
}

/// How an append ended, as the client knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    Committed {
        first: u64,
        last: u64,
    },
    /// Resolved by LSN: the records are there, committed.
    ResolvedCommitted {
        first: u64,
        last: u64,
    },
    /// Resolved by LSN: other records are committed there.
    ResolvedLost {
        first: u64,
        last: u64,
    },
    /// In doubt and not resolved (the commit LSN never passed it, or no LSN known).
    InDoubt {
        first: Option<u64>,
    },
    /// Refused before anything was appended, and not retried (or out of attempts).
    Refused(String),
}

/// A finished append: what the checker and the report need.
#[derive(Clone, Debug)]
pub struct Finished {
    pub client: usize,
    pub token: u64,
    pub node: NodeId,
    pub mode: Option<Mode>,
    pub payloads: Vec<Vec<u8>>,
    pub issued: u64,
    pub ending: Ending,
}

#[derive(Clone, Debug)]
enum State {
    Idle,
    Appending {
        token: u64,
        node: NodeId,
        mode: Option<Mode>,
        payloads: Vec<Vec<u8>>,
        timeout_ticks: u64,
        issued: u64,
        /// Give up waiting for an answer at this tick.
        deadline: u64,
        /// Waiting for an answer (false: waiting to retry at `next_try`).
        sent: bool,
        next_try: u64,
        attempts: u32,
    },
    Resolving {
        token: u64,
        node: NodeId,
        mode: Option<Mode>,
        payloads: Vec<Vec<u8>>,
        issued: u64,
        first: u64,
        last: u64,
        next_try: u64,
        tries: u32,
    },
}

pub struct Client {
    pub id: usize,
    /// The node this client believes is the primary.
    target: NodeId,
    nodes: usize,
    state: State,
    next_token: u64,
    /// A scripted client only acts when told, and does not retry or resolve.
    scripted: bool,
    pub finished: Vec<Finished>,
}

impl Client {
    pub fn new(id: usize, nodes: usize, target: NodeId, scripted: bool) -> Client {
        Client {
            id,
            target,
            nodes,
            state: State::Idle,
            next_token: 1,
            scripted,
            finished: Vec::new(),
        }
    }

    pub fn idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// A new append of `payloads`, sent now; returns its token.
    pub fn append(
        &mut self,
        now: u64,
        mode: Option<Mode>,
        timeout_ticks: u64,
        payloads: Vec<Vec<u8>>,
    ) -> (u64, Op) {
        assert!(self.idle());
        let token = self.next_token;
        self.next_token += 1;
        let op = Op::Append {
            node: self.target,
            token,
            mode,
            timeout_ticks,
            payloads: payloads.clone(),
        };
        self.state = State::Appending {
            token,
            node: self.target,
            mode,
            payloads,
            timeout_ticks,
            issued: now,
            deadline: now + timeout_ticks + ANSWER_MARGIN_TICKS,
            sent: true,
            next_try: 0,
            attempts: 1,
        };
        (token, op)
    }

    /// Random payloads that no other record has: (client, token, index) first.
    pub fn payloads(&self, rng: &mut Rng) -> Vec<Vec<u8>> {
        let count = if rng.chance(100) {
            rng.range(5, 16)
        } else {
            rng.range(1, 4)
        };
        let token = self.next_token;
        (0..count)
            .map(|i| {
                let len = if rng.chance(50) {
                    rng.range(200, 1000)
                } else {
                    rng.range(0, 32)
                } as usize;
                let mut p = Vec::with_capacity(10 + len);
                p.extend_from_slice(&(self.id as u16).to_le_bytes());
                p.extend_from_slice(&(token as u32).to_le_bytes());
                p.extend_from_slice(&(i as u16).to_le_bytes());
                p.extend((0..len).map(|_| rng.next_u64() as u8));
                p
            })
            .collect()
    }

    /// What the client does this tick: maybe a new append or read (when `may_start`),
    /// a retry, a resolution read, or giving up on an answer.
    pub fn tick(
        &mut self,
        now: u64,
        rng: &mut Rng,
        stream_mode: Mode,
        may_start: bool,
    ) -> Option<Op> {
        match &mut self.state {
            State::Idle => {
                if self.scripted || !may_start {
                    return None;
                }
                if rng.chance(40) {
                    let mode = match rng.range(0, 19) {
                        0..=9 => None,
                        10..=18 => {
                            let weaker: Vec<Mode> = Mode::ALL
                                .into_iter()
                                .filter(|&m| m <= stream_mode)
                                .collect();
                            Some(weaker[rng.index(weaker.len())])
                        }
                        _ => Some(Mode::Strong),
                    };
                    let timeout = rng.range(200, 1500);
                    let payloads = self.payloads(rng);
                    return Some(self.append(now, mode, timeout, payloads).1);
                }
                if rng.chance(20) {
                    let node = rng.index(self.nodes) as NodeId;
                    return Some(Op::Read {
                        node,
                        token: 0,
                        from: rng.range(1, 200),
                        records_max: rng.range(1, 16),
                    });
                }
                None
            }
            State::Appending {
                token,
                node,
                mode,
                payloads,
                timeout_ticks,
                deadline,
                sent,
                next_try,
                ..
            } => {
                if *sent && now >= *deadline {
                    // No answer: the primary died with the request. Its fate is
                    // unknown and it has no LSN to ask about; it is never sent again.
                    self.finish(Ending::InDoubt { first: None });
                    return None;
                }
                if !*sent && now >= *next_try {
                    *sent = true;
                    *node = self.target;
                    *deadline = now + *timeout_ticks + ANSWER_MARGIN_TICKS;
                    return Some(Op::Append {
                        node: *node,
                        token: *token,
                        mode: *mode,
                        timeout_ticks: *timeout_ticks,
                        payloads: payloads.clone(),
                    });
                }
                None
            }
            State::Resolving {
                token,
                first,
                last,
                next_try,
                tries,
                ..
            } => {
                if now < *next_try {
                    return None;
                }
                if *tries >= RESOLVE_TRIES_MAX {
                    let first = *first;
                    self.finish(Ending::InDoubt { first: Some(first) });
                    return None;
                }
                *tries += 1;
                *next_try = now + RETRY_TICKS;
                Some(Op::Read {
                    node: self.target,
                    token: *token,
                    from: *first,
                    records_max: *last - *first + 1,
                })
            }
        }
    }

    fn finish(&mut self, ending: Ending) {
        let state = std::mem::replace(&mut self.state, State::Idle);
        let (token, node, mode, payloads, issued) = match state {
            State::Appending {
                token,
                node,
                mode,
                payloads,
                issued,
                ..
            }
            | State::Resolving {
                token,
                node,
                mode,
                payloads,
                issued,
                ..
            } => (token, node, mode, payloads, issued),
            State::Idle => unreachable!("finish of an idle client"),
        };
        self.finished.push(Finished {
            client: self.id,
            token,
            node,
            mode,
            payloads,
            issued,
            ending,
        });
    }

    /// A node answered request `token`.
    pub fn on_reply(&mut self, now: u64, from: NodeId, token: u64, reply: Reply) {
        let State::Appending {
            token: t,
            sent,
            next_try,
            attempts,
            ..
        } = &mut self.state
        else {
            return;
        };
        if *t != token || !*sent {
            return;
        }
        match reply {
            Reply::Appended { first, last } => self.finish(Ending::Committed { first, last }),
            Reply::InDoubt { first, last } => {
                if self.scripted {
                    return self.finish(Ending::InDoubt { first: Some(first) });
                }
                let state = std::mem::replace(&mut self.state, State::Idle);
                let State::Appending {
                    token,
                    mode,
                    payloads,
                    issued,
                    ..
                } = state
                else {
                    unreachable!()
                };
                self.state = State::Resolving {
                    token,
                    node: from,
                    mode,
                    payloads,
                    issued,
                    first,
                    last,
                    next_try: now + RETRY_TICKS,
                    tries: 0,
                };
            }
            Reply::NotPrimary { primary } => {
                self.target = primary;
                if self.scripted || *attempts >= ATTEMPTS_MAX {
                    return self.finish(Ending::Refused(format!("not the primary (n{primary})")));
                }
                *attempts += 1;
                *sent = false;
                *next_try = now + 1;
            }
            Reply::Unavailable(why) => {
                if self.scripted || *attempts >= ATTEMPTS_MAX {
                    return self.finish(Ending::Refused(why.to_string()));
                }
                *attempts += 1;
                *sent = false;
                *next_try = now + RETRY_TICKS;
            }
            Reply::ModeNotAllowed => self.finish(Ending::Refused("mode not allowed".into())),
        }
    }

    /// A read this client made to resolve request `token` came back.
    pub fn on_read(&mut self, token: u64, commit: u64, records: &[(u64, Rec)]) {
        let State::Resolving {
            token: t,
            first,
            last,
            payloads,
            ..
        } = &self.state
        else {
            return;
        };
        if *t != token || commit < *last || records.len() as u64 != *last - *first + 1 {
            return;
        }
        let (first, last) = (*first, *last);
        let ours = records
            .iter()
            .zip(payloads)
            .all(|((_, r), p)| &r.payload == p);
        self.finish(if ours {
            Ending::ResolvedCommitted { first, last }
        } else {
            Ending::ResolvedLost { first, last }
        });
    }

    /// An append waiting for an answer or a retry: (token, first issued).
    pub fn pending_append(&self) -> Option<(u64, u64)> {
        match &self.state {
            State::Appending { token, issued, .. } | State::Resolving { token, issued, .. } => {
                Some((*token, *issued))
            }
            State::Idle => None,
        }
    }
}

/// The clients' side of a run: their requests to the nodes, and how the checker and
/// the liveness rule learn of what became of them.
impl Sim {
    /// Client `client` appends `payloads` now; returns the request's token.
    pub fn client_append(
        &mut self,
        client: usize,
        mode: Option<Mode>,
        timeout_ticks: u64,
        payloads: Vec<Vec<u8>>,
    ) -> u64 {
        let (token, op) = self.clients[client].append(self.now, mode, timeout_ticks, payloads);
        self.execute(client, op);
        token
    }

    /// A new client that acts only when the script says, and first asks `target`.
    pub fn script_client(&mut self, target: NodeId) -> usize {
        let id = self.clients.len();
        self.clients
            .push(Client::new(id, self.nodes.len(), target, true));
        self.reported.push(0);
        id
    }

    /// Random unique payloads of client `client`.
    pub fn payloads(&mut self, client: usize) -> Vec<Vec<u8>> {
        self.clients[client].payloads(&mut self.rng)
    }

    /// How client `client`'s append `token` ended, if it did.
    pub fn ending(&self, client: usize, token: u64) -> Option<&Ending> {
        self.clients[client]
            .finished
            .iter()
            .find(|f| f.token == token)
            .map(|f| &f.ending)
    }

    /// Reads from node `id` as a client would, checked like every read.
    pub fn read(&mut self, id: NodeId, from: u64, records_max: u64) -> Option<(u64, Vec<Rec>)> {
        let (commit, recs) =
            self.nodes[id as usize].read(self.now, from, records_max, &self.net)?;
        self.stats.reads += 1;
        self.checker.on_read(&self.nodes, id, commit, &recs);
        self.check_violation();
        Some((commit, recs.into_iter().map(|(_, r)| r).collect()))
    }

    pub(crate) fn execute(&mut self, client: usize, op: Op) {
        match op {
            Op::Append {
                node,
                token,
                mode,
                timeout_ticks,
                payloads,
            } => {
                let mut out = Out::default();
                self.nodes[node as usize].client_append(
                    self.now,
                    (client, token),
                    mode,
                    timeout_ticks,
                    &payloads,
                    &self.net,
                    &mut out,
                );
                self.route(node, out);
            }
            Op::Read {
                node,
                token,
                from,
                records_max,
            } => {
                let read = self.nodes[node as usize].read(self.now, from, records_max, &self.net);
                let Some((commit, recs)) = read else {
                    return;
                };
                self.stats.reads += 1;
                self.checker.on_read(&self.nodes, node, commit, &recs);
                self.clients[client].on_read(token, commit, &recs);
                self.check_violation();
            }
        }
    }

    /// Hands the appends clients finished this step to the checker, and checks
    /// liveness in the quiet tail.
    pub(crate) fn settle_clients(&mut self) {
        let live_from = self.liveness_from();
        for c in 0..self.clients.len() {
            while self.reported[c] < self.clients[c].finished.len() {
                let f = self.clients[c].finished[self.reported[c]].clone();
                self.reported[c] += 1;
                match &f.ending {
                    Ending::Committed { first, .. } => {
                        self.stats.committed += 1;
                        self.checker
                            .on_acked(&self.nodes, f.node, *first, &f.payloads, f.mode);
                    }
                    Ending::ResolvedCommitted { .. } => self.stats.resolved_committed += 1,
                    Ending::ResolvedLost { .. } => self.stats.resolved_lost += 1,
                    Ending::InDoubt { .. } => self.stats.in_doubt += 1,
                    Ending::Refused(_) => self.stats.refused += 1,
                }
                let too_strong = f.mode.is_some_and(|m| m > self.settings.mode);
                if self.opts.faults
                    && f.issued >= live_from
                    && !too_strong
                    && !matches!(f.ending, Ending::Committed { .. })
                {
                    self.violate(format!(
                        "liveness: c{}#{} appended at t{} in the quiet tail ended {:?}",
                        f.client, f.token, f.issued, f.ending
                    ));
                }
                self.check_violation();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_doubt_is_resolved_by_lsn_never_resent() {
        let mut rng = Rng::new(5);
        let mut c = Client::new(0, 3, 0, false);
        let payloads = c.payloads(&mut rng);
        let n = payloads.len() as u64;
        let (token, _) = c.append(0, None, 100, payloads.clone());
        c.on_reply(
            10,
            0,
            token,
            Reply::InDoubt {
                first: 4,
                last: 3 + n,
            },
        );
        // Every later op is a read of exactly those LSNs, never an append.
        let mut reads = 0;
        for now in 11..2000 {
            match c.tick(now, &mut rng, Mode::Strong, false) {
                Some(Op::Append { .. }) => panic!("an in-doubt append was sent again"),
                Some(Op::Read {
                    from, records_max, ..
                }) => {
                    assert_eq!((from, records_max), (4, n));
                    reads += 1;
                    if reads == 3 {
                        let recs: Vec<(u64, Rec)> = payloads
                            .iter()
                            .enumerate()
                            .map(|(i, p)| {
                                (
                                    4 + i as u64,
                                    Rec {
                                        epoch: 1,
                                        payload: p.clone(),
                                    },
                                )
                            })
                            .collect();
                        c.on_read(token, 3 + n, &recs);
                    }
                }
                None => {}
            }
        }
        assert_eq!(reads, 3);
        assert_eq!(
            c.finished[0].ending,
            Ending::ResolvedCommitted {
                first: 4,
                last: 3 + n
            }
        );
    }

    #[test]
    fn refused_before_appending_is_retried_at_the_named_primary() {
        let mut rng = Rng::new(6);
        let mut c = Client::new(1, 3, 0, false);
        let (token, _) = c.append(0, None, 100, vec![vec![1]]);
        c.on_reply(1, 0, token, Reply::NotPrimary { primary: 2 });
        let op = (2..10).find_map(|now| c.tick(now, &mut rng, Mode::Strong, false));
        assert!(
            matches!(op, Some(Op::Append { node: 2, token: t, .. }) if t == token),
            "{op:?}"
        );
    }
}
