//! A blocking Rust client for one stream of a lockstep cluster, on std only.
//!
//! [`Client::connect`] tries every node at once and keeps the connection of the
//! primary, or else of the first node in order that answered (a node that accepts
//! connections but never answers costs no connect timeout); the connection is bound to
//! the stream (`ClientHello` → `Welcome`) and kept open.
//!
//! Appends are pipelined: [`Client::submit_append`] queues a request and returns its
//! [`RequestId`] without waiting; queued requests are written when the client waits,
//! polls or [`Client::flush`]es (and early, once a burst fills the send buffer).
//! [`Client::wait`] and [`Client::poll`] match replies to requests by id, in whatever
//! order the node answers. At most `outstanding_max` requests are outstanding, counting
//! answered ones not yet collected; submitting at that bound first reads replies.
//!
//! What the client does about each outcome, and why:
//! - `NotPrimary`: the node did nothing, so resending is safe. Once the node has
//!   answered every other request sent to it, the client connects to the primary the
//!   node named (or else to the next configured address) and resends the refused
//!   requests there in their original order. Each request follows at most
//!   `redirects_max` redirects.
//! - `InDoubt`, no reply within the timeout, or a connection lost with the append in
//!   flight: the append may or may not be committed. It becomes
//!   [`ClientError::InDoubt`] and is never resent, since resending could append it
//!   twice. Its fate can be read back by LSN.
//! - A node that sends nothing while requests wait on it: after `connect_timeout` the
//!   client asks the other nodes who the primary is; a primary of a newer epoch ends
//!   the silent node's requests at once (appends in doubt) and takes the next ones. A
//!   node still silent when a request times out is left: the next request connects
//!   anew (a node answers what it cannot commit in time itself, so silence means it
//!   is stopped or cut off).
//! - `Error`: surfaced as [`ClientError::Server`] with the node's code and message.
//!
//! Reads and status requests are answered by whichever node the client is connected
//! to; a node that refuses them with `NotPrimary` redirects them like appends.
//!
//! Thread safety and clean-up: a `Client` is one connection, used from one thread at a
//! time (`&mut self`); it may be moved between threads. Dropping it closes the
//! connection; appends still outstanding then have an unknown fate.

mod connection;
mod error;
pub mod pipeline;
mod request;

use std::collections::BTreeMap;
use std::io::Write;
use std::mem;
use std::time::{Duration, Instant};

use crate::constants::FRAME_PAYLOAD_BYTES_MAX;
use crate::log::Record;
pub use error::ClientError;

use connection::{Conn, is_timeout, receive};
use request::{Answer, InFlight, Op, Pending, Reply, appended};

use crate::wire::{Message, Mode, Payloads, RequestId, Role, check_stream_name};

/// Queued request bytes at which a submit writes them at once, so a long burst of
/// submits does not pile up in memory before the next wait.
const SEND_BUFFER_BYTES: usize = 64 << 10;

/// Frame buffers kept for reuse by later requests. Only buffers of at most
/// `SEND_BUFFER_BYTES` are kept, so the pool never holds more than 4 MiB.
const SPARE_FRAMES_MAX: usize = 64;

/// How a [`Client`] behaves.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How long the node may wait for an append's commit before it answers `InDoubt`;
    /// sent with every append.
    pub timeout: Duration,
    /// How much longer than `timeout` the client waits for any reply before it gives up
    /// on the request itself (an append then is in doubt).
    pub reply_grace: Duration,
    /// Bound on each TCP connect and on the node's `Welcome`.
    pub connect_timeout: Duration,
    /// Most requests outstanding at once, answered ones not yet collected included.
    pub outstanding_max: usize,
    /// Most `NotPrimary` redirects one request follows (it follows them until its
    /// `timeout` in any case, backing off from the second on).
    pub redirects_max: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(5),
            reply_grace: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            outstanding_max: 1024,
            redirects_max: 64,
        }
    }
}

/// A committed append: LSNs `first_lsn ..= last_lsn()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub first_lsn: u64,
    pub count: u32,
}

impl Appended {
    pub fn last_lsn(&self) -> u64 {
        self.first_lsn + u64::from(self.count) - 1
    }
}

/// The node the client is connected to, as its `Welcome` described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The address the client connected to.
    pub addr: String,
    pub node_id: u32,
    pub role: Role,
    pub epoch: u64,
    /// Where the node believes the primary is.
    pub primary: Option<String>,
}

/// A client of one stream. See the module docs.
pub struct Client {
    addrs: Vec<String>,
    stream: String,
    options: ClientOptions,
    conn: Option<Conn>,
    /// The address of the latest connection, so the next one starts after it.
    last_addr: Option<String>,
    next_id: u64,
    /// Requests written to (or queued for) the current connection.
    in_flight: BTreeMap<u64, InFlight>,
    /// Requests refused as not primary, to resend on the next connection in id order.
    refused: BTreeMap<u64, Pending>,
    /// Outcomes not yet collected.
    done: BTreeMap<u64, Result<Reply, ClientError>>,
    /// The primary named by the newest `NotPrimary`, and its epoch.
    hint: Option<String>,
    /// When the other nodes were last asked who the primary is (see [`Client::probe`]).
    probed_at: Option<Instant>,
    hint_epoch: u64,
    spare_frames: Vec<Vec<u8>>,
    /// Appends ask the node to wait for their commit up to the stream's own
    /// `request_timeout_ms` instead of `options.timeout` (see
    /// [`Client::use_stream_timeout`]).
    stream_timeout: bool,
}

impl Client {
    /// Connects to the first of `addrs` ("host:port") that takes a connection for
    /// `stream`, trying them in order.
    pub fn connect<A: ToString>(
        addrs: &[A],
        stream: &str,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        check_stream_name(stream)?;
        if addrs.is_empty() {
            return Err(ClientError::NoAddress);
        }
        let mut client = Client {
            addrs: addrs.iter().map(ToString::to_string).collect(),
            stream: stream.to_owned(),
            options,
            conn: None,
            last_addr: None,
            next_id: 1,
            in_flight: BTreeMap::new(),
            refused: BTreeMap::new(),
            done: BTreeMap::new(),
            hint: None,
            probed_at: None,
            hint_epoch: 0,
            stream_timeout: false,
            spare_frames: Vec::new(),
        };
        client.conn = Some(client.open_any(None)?);
        Ok(client)
    }

    /// The node of the current connection; `None` between a lost connection and the
    /// next request.
    pub fn node(&self) -> Option<&NodeInfo> {
        self.conn.as_ref().map(|c| &c.node)
    }

    /// Requests submitted and not yet collected.
    pub fn outstanding(&self) -> usize {
        self.in_flight.len() + self.refused.len() + self.done.len()
    }

    /// Queues an append of `payloads` (one record each, consecutive LSNs) without
    /// waiting for it. `mode` may weaken the stream's commit mode for this append.
    pub fn submit_append(
        &mut self,
        payloads: &[&[u8]],
        mode: Option<Mode>,
    ) -> Result<RequestId, ClientError> {
        let timeout_ms = if self.stream_timeout {
            0
        } else {
            u32::try_from(self.options.timeout.as_millis()).unwrap_or(u32::MAX)
        };
        let message = Message::Append {
            mode,
            timeout_ms,
            payloads: Payloads::new(payloads),
        };
        // A batch that encodes has at most FRAME_RECORDS_MAX payloads, so the count fits.
        let count = u32::try_from(payloads.len()).unwrap_or(u32::MAX);
        self.submit(Op::Append { count }, &message)
    }

    /// From now on appends let the node wait for their commit as long as the stream's
    /// `request_timeout_ms` says (the wire's timeout 0), rather than `options.timeout`;
    /// the client still gives up on a reply after `options.timeout + reply_grace`, so
    /// that should be the longer.
    pub fn use_stream_timeout(&mut self) {
        self.stream_timeout = true;
    }

    /// Waits for the outcome of the append `id`.
    pub fn wait(&mut self, id: RequestId) -> Result<Appended, ClientError> {
        self.wait_reply(id).and_then(|reply| appended(id, reply))
    }

    /// Writes queued requests and collects one outcome if one is ready, without
    /// waiting for replies. Outcomes come in request-id order among those ready.
    pub fn poll(&mut self) -> Option<(RequestId, Result<Appended, ClientError>)> {
        if self.done.is_empty() {
            self.step(false);
        }
        let (id, outcome) = self.done.pop_first()?;
        let id = RequestId(id);
        Some((id, outcome.and_then(|reply| appended(id, reply))))
    }

    /// Writes queued requests now.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.settle();
        self.flush_now()
    }

    /// Appends one record and waits for its commit; returns its LSN.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, ClientError> {
        Ok(self.append_batch(&[payload])?.first_lsn)
    }

    /// Appends records as consecutive LSNs and waits for their commit.
    pub fn append_batch(&mut self, payloads: &[&[u8]]) -> Result<Appended, ClientError> {
        let id = self.submit_append(payloads, None)?;
        self.wait(id)
    }

    /// Reads up to `records_max` committed records from `from_lsn`; returns the node's
    /// commit LSN and the records.
    pub fn read(
        &mut self,
        from_lsn: u64,
        records_max: u32,
    ) -> Result<(u64, Vec<Record>), ClientError> {
        let message = Message::Read {
            from_lsn,
            records_max,
            bytes_max: FRAME_PAYLOAD_BYTES_MAX as u32,
        };
        let id = self.submit(Op::Read, &message)?;
        match self.wait_reply(id)? {
            Reply::Records {
                commit_lsn,
                records,
            } => Ok((commit_lsn, records)),
            _ => unreachable!("answer() pairs a read only with Records"),
        }
    }

    /// The node's view of the stream.
    pub fn status(&mut self) -> Result<serde_json::Value, ClientError> {
        let id = self.submit(Op::Status, &Message::Status)?;
        match self.wait_reply(id)? {
            Reply::Status(v) => Ok(v),
            _ => unreachable!("answer() pairs a status request only with StatusReply"),
        }
    }

    fn submit(&mut self, op: Op, message: &Message<'_>) -> Result<RequestId, ClientError> {
        let id = RequestId(self.next_id);
        let mut frame = self.spare_frames.pop().unwrap_or_default();
        message
            .encode_into(id, &mut frame)
            .map_err(|source| ClientError::Invalid {
                op: op.name(),
                source,
            })?;
        self.next_id += 1;
        self.make_room()?;
        let pending = Pending {
            op,
            frame,
            redirects: 0,
            submitted: Instant::now(),
        };
        if !self.refused.is_empty() {
            // The current node refused earlier requests as not primary: this one goes
            // to the next node with them, after them.
            self.refused.insert(id.0, pending);
            return Ok(id);
        }
        if self.conn.is_none() {
            self.conn = Some(self.open_any(None)?);
        }
        self.send(id.0, pending);
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.out.len() >= SEND_BUFFER_BYTES)
        {
            // A failure is recorded with every request in flight, this one included.
            let _ = self.flush_now();
        }
        Ok(id)
    }

    /// Reads replies while the outstanding requests are at the bound.
    fn make_room(&mut self) -> Result<(), ClientError> {
        while self.outstanding() >= self.options.outstanding_max.max(1) {
            if self.in_flight.is_empty() && self.refused.is_empty() {
                return Err(ClientError::Busy {
                    outstanding: self.outstanding(),
                });
            }
            self.step(true);
        }
        Ok(())
    }

    fn wait_reply(&mut self, id: RequestId) -> Result<Reply, ClientError> {
        loop {
            if let Some(outcome) = self.done.remove(&id.0) {
                return outcome;
            }
            if !self.in_flight.contains_key(&id.0) && !self.refused.contains_key(&id.0) {
                return Err(ClientError::UnknownRequest { id });
            }
            self.step(true);
        }
    }

    /// One turn: move on from a node that refused requests, write what is queued, read
    /// what arrived (waiting until the earliest deadline if `block`), time out what is
    /// late. Every failure lands in `done` with the requests it affects.
    fn step(&mut self, block: bool) {
        self.settle();
        if self.flush_now().is_err() {
            return;
        }
        let Some(deadline) = self.in_flight.values().map(|f| f.deadline).min() else {
            return;
        };
        let probe_at = self.probe_at();
        let conn = self
            .conn
            .as_mut()
            .expect("requests in flight have a connection");
        let until = probe_at.map_or(deadline, |p| p.min(deadline));
        match receive(
            &mut conn.socket,
            &mut conn.decoder,
            &mut conn.read_timeout,
            block.then_some(until),
        ) {
            Ok(0) => self.lose_connection("the node closed the connection"),
            Ok(_) => self.take_frames(),
            Err(e) if is_timeout(&e) => {}
            Err(e) => self.lose_connection(&format!("receive: {e}")),
        }
        let now = Instant::now();
        self.expire(now);
        // Only while waiting: `poll` never blocks on the probe's connects.
        if block && self.probe_at().is_some_and(|p| now >= p) {
            self.probe();
        }
    }

    /// When to ask the other nodes who the primary is: once the node of the connection
    /// sent nothing for `connect_timeout` (the time a node may take to answer a hello)
    /// while requests wait on it, and again each `connect_timeout` after a probe.
    /// `None` without requests in flight or other nodes to ask.
    fn probe_at(&self) -> Option<Instant> {
        let conn = self.conn.as_ref()?;
        if self.in_flight.is_empty() || self.addrs.iter().all(|a| *a == conn.node.addr) {
            return None;
        }
        let quiet_since = self
            .probed_at
            .map_or(conn.heard_at, |p| p.max(conn.heard_at));
        Some(quiet_since + self.options.connect_timeout)
    }

    /// The node of the connection is silent: if another node is the primary of a newer
    /// epoch, the silent one can commit nothing more (its members refuse its epoch), so
    /// its requests end now (appends in doubt: a member may hold them, and the new
    /// primary may commit them) instead of at their timeout, and the client moves to
    /// the new primary.
    fn probe(&mut self) {
        self.probed_at = Some(Instant::now());
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let (current, epoch) = (conn.node.addr.clone(), conn.node.epoch);
        let others: Vec<String> = self
            .addrs
            .iter()
            .filter(|a| **a != current)
            .cloned()
            .collect();
        let hellos: Vec<RequestId> = others
            .iter()
            .map(|_| {
                self.next_id += 1;
                RequestId(self.next_id - 1)
            })
            .collect();
        let (found, _, _) = open_parallel(&others, &hellos, &self.stream, &self.options);
        let Some((addr, newer)) =
            found.filter(|(_, c)| c.node.role == Role::Primary && c.node.epoch > epoch)
        else {
            return;
        };
        self.lose_connection(&format!(
            "it sent nothing for {:?}, and {addr} is the primary of epoch {}",
            self.options.connect_timeout, newer.node.epoch
        ));
        self.last_addr = Some(addr);
        self.conn = Some(newer);
        self.probed_at = None;
    }

    /// Once the current node refused requests as not primary and has answered all
    /// others, connects to the next node and resends the refused ones, in order.
    fn settle(&mut self) {
        if self.refused.is_empty() || !self.in_flight.is_empty() {
            return;
        }
        self.conn = None;
        // The first redirect goes at once; later ones (a failover in progress) back off,
        // 10 ms doubling up to 200 ms.
        let redirects = self
            .refused
            .values()
            .map(|p| p.redirects)
            .max()
            .unwrap_or(0);
        if redirects > 1 {
            let ms = (5u64 << redirects.min(6)).min(200);
            std::thread::sleep(Duration::from_millis(ms));
        }
        let hint = self.hint.take();
        match self.open_any(hint) {
            Ok(conn) => {
                self.conn = Some(conn);
                for (id, pending) in mem::take(&mut self.refused) {
                    self.send(id, pending);
                }
            }
            Err(e) => {
                let reason = e.to_string();
                for (id, mut pending) in mem::take(&mut self.refused) {
                    // No node reachable now: try again until the request's timeout.
                    if pending.submitted.elapsed() < self.options.timeout
                        && pending.redirects < self.options.redirects_max
                    {
                        pending.redirects += 1;
                        self.refused.insert(id, pending);
                        continue;
                    }
                    let op = pending.op.name();
                    let reason = reason.clone();
                    self.complete(id, pending, Err(ClientError::RedirectFailed { op, reason }));
                }
            }
        }
    }

    /// Queues a request's frame on the current connection.
    fn send(&mut self, id: u64, pending: Pending) {
        let conn = self.conn.as_mut().expect("send needs a connection");
        conn.out.extend_from_slice(&pending.frame);
        let deadline = Instant::now() + self.options.timeout + self.options.reply_grace;
        self.in_flight.insert(id, InFlight { pending, deadline });
    }

    fn flush_now(&mut self) -> Result<(), ClientError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        if conn.out.is_empty() {
            return Ok(());
        }
        let written = conn.socket.write_all(&conn.out);
        conn.out.clear();
        if let Err(source) = written {
            let err = ClientError::Io {
                addr: conn.node.addr.clone(),
                op: "send",
                source,
            };
            self.lose_connection(&err.to_string());
            return Err(err);
        }
        Ok(())
    }

    fn take_frames(&mut self) {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            let (id, answer) = match conn.decoder.next_frame() {
                Ok(None) => return,
                Ok(Some(frame)) => {
                    conn.heard_at = Instant::now();
                    let id = frame.id;
                    match Answer::from_message(frame.message) {
                        Ok(answer) => (id, answer),
                        Err(reason) => return self.lose_connection(&reason),
                    }
                }
                Err(e) => return self.lose_connection(&e.to_string()),
            };
            self.answer(id, answer);
        }
    }

    fn answer(&mut self, id: RequestId, answer: Answer) {
        let Some(InFlight { pending, deadline }) = self.in_flight.remove(&id.0) else {
            match answer {
                Answer::Refused { code, message } if id == RequestId::UNSOLICITED => {
                    self.lose_connection(&format!("the node ended the session ({code}): {message}"))
                }
                _ if id != RequestId::UNSOLICITED && id.0 < self.next_id => {
                    // A late reply to a request the client already gave up on.
                }
                _ => self
                    .lose_connection(&format!("a reply to request {id}, which is not in flight")),
            }
            return;
        };
        let addr = self.addr();
        let op = pending.op;
        let outcome = match (answer, op) {
            (Answer::Reply(Reply::Appended(a)), Op::Append { count }) if a.count == count => {
                Ok(Reply::Appended(a))
            }
            (Answer::Reply(r @ Reply::Records { .. }), Op::Read) => Ok(r),
            (Answer::Reply(r @ Reply::Status(_)), Op::Status) => Ok(r),
            (
                Answer::InDoubt {
                    first_lsn,
                    count: n,
                    reason,
                },
                Op::Append { count },
            ) if n == count => Err(ClientError::InDoubt {
                addr,
                first_lsn: Some(first_lsn),
                count,
                reason,
            }),
            (Answer::Refused { code, message }, op) => Err(ClientError::Server {
                addr,
                op: op.name(),
                code,
                message,
            }),
            (Answer::BadStatus(reason), Op::Status) => Err(ClientError::Protocol {
                addr,
                op: "status",
                reason,
            }),
            (Answer::NotPrimary { epoch, primary }, _) => {
                return self.not_primary(id.0, pending, epoch, primary);
            }
            (_, op) => {
                // A reply that does not fit its request: the request's fate is unknown,
                // like that of every other request on this connection.
                self.in_flight.insert(id.0, InFlight { pending, deadline });
                return self.lose_connection(&format!(
                    "the reply to request {id} does not fit its {} request",
                    op.name()
                ));
            }
        };
        self.complete(id.0, pending, outcome);
    }

    fn not_primary(&mut self, id: u64, mut pending: Pending, epoch: u64, primary: Option<String>) {
        // Advice from a node that knows an older epoch is stale; keep the newer one.
        if epoch >= self.hint_epoch {
            self.hint_epoch = epoch;
            self.hint.clone_from(&primary);
        }
        // During a failover nodes refuse for a while (no primary yet, or one that has
        // not heard of its promotion): follow redirects until the request's timeout,
        // with at most `redirects_max` of them.
        let out_of_time = pending.submitted.elapsed() >= self.options.timeout;
        if pending.redirects >= self.options.redirects_max || out_of_time {
            let err = ClientError::Redirects {
                op: pending.op.name(),
                addr: self.addr(),
                redirects: pending.redirects,
                epoch,
                primary,
            };
            return self.complete(id, pending, Err(err));
        }
        pending.redirects += 1;
        self.refused.insert(id, pending);
    }

    /// Closes the connection. Appends in flight become in doubt; other requests fail.
    /// Requests refused as not primary stay queued: the node did nothing with them.
    fn lose_connection(&mut self, reason: &str) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let addr = conn.node.addr;
        for (id, InFlight { pending, .. }) in mem::take(&mut self.in_flight) {
            let err = match pending.op {
                Op::Append { count } => ClientError::InDoubt {
                    addr: addr.clone(),
                    first_lsn: None,
                    count,
                    reason: format!("the connection was lost: {reason}"),
                },
                op => ClientError::Disconnected {
                    addr: addr.clone(),
                    op: op.name(),
                    reason: reason.to_owned(),
                },
            };
            self.complete(id, pending, Err(err));
        }
    }

    /// Gives up on requests past their deadline. The connection stays open for others,
    /// unless the node sent nothing at all since a late request went out: a node answers
    /// an append it cannot commit in time itself (in doubt, at the request's timeout),
    /// so one that stays silent past the grace is stopped or cut off, and the next
    /// request goes to a node that answers.
    fn expire(&mut self, now: Instant) {
        let late: Vec<u64> = (self.in_flight.iter())
            .filter(|(_, f)| f.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        let after = self.options.timeout + self.options.reply_grace;
        let silent = self.conn.as_ref().is_some_and(|c| {
            late.iter()
                .any(|id| c.heard_at + after < self.in_flight[id].deadline)
        });
        for id in late {
            let InFlight { pending, .. } = self.in_flight.remove(&id).expect("listed above");
            let addr = self.addr();
            let err = match pending.op {
                Op::Append { count } => ClientError::InDoubt {
                    addr,
                    first_lsn: None,
                    count,
                    reason: format!("no reply within {after:?}"),
                },
                op => ClientError::Timeout {
                    addr,
                    op: op.name(),
                    after,
                },
            };
            self.complete(id, pending, Err(err));
        }
        if silent {
            self.lose_connection(&format!("the node sent nothing for {after:?}"));
        }
    }

    fn complete(&mut self, id: u64, pending: Pending, outcome: Result<Reply, ClientError>) {
        if self.spare_frames.len() < SPARE_FRAMES_MAX
            && pending.frame.capacity() <= SEND_BUFFER_BYTES
        {
            let mut frame = pending.frame;
            frame.clear();
            self.spare_frames.push(frame);
        }
        self.done.insert(id, outcome);
    }

    fn addr(&self) -> String {
        self.conn
            .as_ref()
            .map_or_else(String::new, |c| c.node.addr.clone())
    }

    /// Connects to `hint`, then to the configured addresses starting after the latest
    /// one; returns the first connection that completes the hello.
    fn open_any(&mut self, hint: Option<String>) -> Result<Conn, ClientError> {
        let n = self.addrs.len();
        let start = (self.last_addr.as_ref())
            .and_then(|last| self.addrs.iter().position(|a| a == last))
            .map_or(0, |i| i + 1);
        let mut candidates: Vec<String> = Vec::new();
        for addr in hint
            .into_iter()
            .chain((0..n).map(|i| self.addrs[(start + i) % n].clone()))
        {
            if !candidates.contains(&addr) {
                candidates.push(addr);
            }
        }
        let hellos: Vec<RequestId> = candidates
            .iter()
            .map(|_| {
                self.next_id += 1;
                RequestId(self.next_id - 1)
            })
            .collect();
        let (chosen, tried, last) = if candidates.len() == 1 {
            match Conn::open(&candidates[0], &self.stream, hellos[0], &self.options) {
                Ok(conn) => (Some((candidates[0].clone(), conn)), Vec::new(), None),
                Err(e) => (None, candidates.clone(), Some(e)),
            }
        } else {
            open_parallel(&candidates, &hellos, &self.stream, &self.options)
        };
        match chosen {
            Some((addr, conn)) => {
                self.last_addr = Some(addr);
                Ok(conn)
            }
            None => Err(ClientError::Unreachable {
                tried,
                last: Box::new(last.unwrap_or(ClientError::NoAddress)),
            }),
        }
    }
}

/// After the first node answered, how long a connect still waits for the primary to
/// answer too (a node that is not the primary only redirects the appends).
const PRIMARY_WAIT: Duration = Duration::from_millis(50);

/// Connects to every candidate at once, so that a node that accepts connections but
/// never answers (stopped, or cut off) costs no `connect_timeout` before the next one
/// is tried. Takes the first candidate (the node a redirect named) as soon as it
/// answers as the primary; else, once the first node answered and [`PRIMARY_WAIT`]
/// passed (or every candidate ended), the primary of the newest epoch that answered
/// (first in candidate order among equals), or the first that answered at all. Returns the address and connection chosen, or the
/// addresses tried and the last error.
fn open_parallel(
    candidates: &[String],
    hellos: &[RequestId],
    stream: &str,
    options: &ClientOptions,
) -> (Option<(String, Conn)>, Vec<String>, Option<ClientError>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut failed: Vec<(usize, ClientError)> = Vec::new();
    for (i, (addr, hello)) in candidates.iter().zip(hellos).enumerate() {
        let (to_main, addr, stream, options, hello) = (
            tx.clone(),
            addr.clone(),
            stream.to_owned(),
            options.clone(),
            *hello,
        );
        let spawned = std::thread::Builder::new()
            .name("lockstep-connect".into())
            .spawn(move || {
                // The receiver may be gone (another node was chosen): nothing to do.
                let _ = to_main.send((i, Conn::open(&addr, &stream, hello, &options)));
            });
        if let Err(source) = spawned {
            failed.push((
                i,
                ClientError::Io {
                    addr: candidates[i].clone(),
                    op: "connect",
                    source,
                },
            ));
        }
    }
    drop(tx);
    let mut answered: Vec<Option<Conn>> = candidates.iter().map(|_| None).collect();
    let mut primaries: Vec<usize> = Vec::new();
    // A connect ends within its own timeout; the grace covers thread start-up.
    let mut deadline = Instant::now() + options.connect_timeout + Duration::from_millis(100);
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok((i, Ok(conn))) => {
                let primary = conn.node.role == Role::Primary;
                if primary && i == 0 {
                    return (Some((candidates[i].clone(), conn)), Vec::new(), None);
                }
                if answered.iter().all(Option::is_none) {
                    deadline = deadline.min(Instant::now() + PRIMARY_WAIT);
                }
                answered[i] = Some(conn);
                if primary {
                    primaries.push(i);
                }
            }
            Ok((i, Err(e))) => failed.push((i, e)),
            Err(_) => break,
        }
    }
    // Of several nodes that call themselves primary (one of them stale), the one of the
    // newest epoch; of one epoch, the first in order (a node a redirect named first).
    if let Some(&i) = primaries.iter().min_by_key(|&&i| {
        let epoch = answered[i].as_ref().map_or(0, |c| c.node.epoch);
        (std::cmp::Reverse(epoch), i)
    }) {
        let conn = answered[i].take().expect("an answered connection");
        return (Some((candidates[i].clone(), conn)), Vec::new(), None);
    }
    if let Some(i) = answered.iter().position(Option::is_some) {
        let conn = answered[i].take().expect("an answered connection");
        return (Some((candidates[i].clone(), conn)), Vec::new(), None);
    }
    failed.sort_by_key(|(i, _)| *i);
    let tried = candidates.to_vec();
    (None, tried, failed.pop().map(|(_, e)| e))
}
