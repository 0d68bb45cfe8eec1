//! Clients committing records through lockstep's own [`Client`], closed-loop.
//!
//! A load is a number of appends kept outstanding on a number of connections, each
//! connection driven by its own thread (the calling thread when there is one). With one
//! outstanding append per connection, the connections are a [`crate::pool`] like any
//! other system's: [`Client::append`] waits for each commit before the next append.
//! With more, it keeps the connection's share
//! queued with [`Client::submit_append`], blocks in [`Client::wait`] for the oldest, then
//! collects whatever else has arrived with [`Client::poll`] and tops the pipeline up
//! again, so every reply batch is answered by one write of new requests.
//!
//! Latency runs from just before the submit to the moment the client hands back the
//! outcome. Only appends submitted after the warm-up are recorded; commits/s counts the
//! commits that completed within the measured window. When the window ends the driver
//! stops submitting and drains what is outstanding, so every series starts idle.
//!
//! Any append that is not committed (in doubt, refused, a lost connection) fails the
//! run: on a healthy loopback cluster that is a real error, not a slow result.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lockstep::client::Client;
use lockstep::wire::RequestId;
use serde::Serialize;

use crate::Error;
use crate::pool::{self, Arrival, Conn, Measured};
use crate::stats::{self, Window};

/// Appends kept outstanding, spread over connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Load {
    pub outstanding: usize,
    pub connections: usize,
}

impl Load {
    pub fn label(&self) -> String {
        match (self.outstanding, self.connections) {
            (1, 1) => "1 client".into(),
            (n, 1) => format!("{n} outstanding"),
            (n, c) => format!("{n} outstanding on {c} connections"),
        }
    }

    /// Appends outstanding on connection `i`.
    fn share(&self, i: usize) -> usize {
        self.outstanding / self.connections + usize::from(i < self.outstanding % self.connections)
    }
}

/// Runs `load` on `clients` (at least `load.connections` of them, all of one stream).
pub fn run(
    clients: &mut [Client],
    load: Load,
    payload: &[u8],
    window: Window,
) -> Result<Measured, Error> {
    assert!(load.connections >= 1);
    assert!(load.outstanding >= load.connections);
    assert!(clients.len() >= load.connections);
    if load.outstanding == load.connections {
        return pool::run(clients, load.connections, Arrival::Closed, payload, window);
    }
    let start = Instant::now();
    let warm_end = start + window.warm_up;
    let stop = warm_end + window.measure;
    let parts: Vec<(Histogram<u64>, u64)> = if load.connections == 1 {
        vec![drive(
            &mut clients[0],
            load.share(0),
            payload,
            warm_end,
            stop,
        )?]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = clients[..load.connections]
                .iter_mut()
                .enumerate()
                .map(|(i, c)| {
                    let n = load.share(i);
                    s.spawn(move || drive(c, n, payload, warm_end, stop))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a client thread panicked".into()))
                })
                .collect::<Result<Vec<_>, Error>>()
        })?
    };
    Measured::merge(parts, stop - warm_end)
}

/// One append at a time: lockstep's client as a connection of a [`crate::pool`].
impl Conn for Client {
    fn commit(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.append(payload)
            .map(|_| ())
            .map_err(|e| format!("append: {e}").into())
    }
}

/// One connection's closed loop with `outstanding` appends pipelined.
fn drive(
    client: &mut Client,
    outstanding: usize,
    payload: &[u8],
    warm_end: Instant,
    stop: Instant,
) -> Result<(Histogram<u64>, u64), Error> {
    assert!(outstanding > 1);
    let mut hist = stats::latency_histogram();
    let mut commits_in_window = 0;
    let mut done = |submitted: Instant, now: Instant| {
        if submitted >= warm_end {
            stats::record(&mut hist, now - submitted);
        }
        if now >= warm_end && now <= stop {
            commits_in_window += 1;
        }
    };
    let mut queue: VecDeque<(RequestId, Instant)> = VecDeque::with_capacity(outstanding);
    loop {
        if Instant::now() < stop {
            while queue.len() < outstanding {
                let id = client
                    .submit_append(&[payload], None)
                    .map_err(|e| format!("submit append: {e}"))?;
                queue.push_back((id, Instant::now()));
            }
        }
        let Some(&(oldest, submitted)) = queue.front() else {
            break;
        };
        client
            .wait(oldest)
            .map_err(|e| format!("append {oldest}: {e}"))?;
        done(submitted, Instant::now());
        queue.pop_front();
        while let Some((id, outcome)) = client.poll() {
            let now = Instant::now();
            outcome.map_err(|e| format!("append {id}: {e}"))?;
            // Replies come in commit order, which is submission order here: the match
            // is almost always at the front.
            let at = queue
                .iter()
                .position(|&(q, _)| q == id)
                .ok_or_else(|| format!("a reply to {id}, which is not outstanding"))?;
            let (_, submitted) = queue.remove(at).expect("found above");
            done(submitted, now);
        }
    }
    Ok((hist, commits_in_window))
}

/// How long a client waits for a commit before the benchmark calls it an error.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        let l = Load {
            outstanding: 64,
            connections: 3,
        };
        assert_eq!((0..3).map(|i| l.share(i)).sum::<usize>(), 64);
        assert_eq!(l.label(), "64 outstanding on 3 connections");
        let one = Load {
            outstanding: 1,
            connections: 1,
        };
        assert_eq!(one.label(), "1 client");
    }
}
