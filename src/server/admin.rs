//! The admin endpoint: Prometheus text on `GET /metrics` (any other GET answers the
//! same), `GET /members` (JSON: the controller's configuration and every member's
//! roles, epochs and log positions, for `lockstep members`), and
//! `POST /switchover?stream=NAME&to=NODE`, which asks the cluster's
//! controller to move the stream's primary role to NODE without losing anything
//! (`lockstep switchover`). Sequential and blocking: it is used by a scraper every few
//! seconds and by operators, not by clients.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use std::sync::mpsc::SyncSender;

use crate::control::Request;
use crate::replication::NodeId;
use crate::server::Shared;
use crate::server::control_loop::ToControl;
use crate::server::metrics::prometheus;

/// The answer to `POST /switchover?...`: (status line, body).
fn switchover(target: &str, control: Option<&SyncSender<ToControl>>) -> (&'static str, String) {
    let Some(control) = control else {
        return (
            "409 Conflict",
            "this node runs no controller: switchover needs a [control] section\n".into(),
        );
    };
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let (mut stream, mut to) = (None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("stream", v)) => stream = Some(v.to_string()),
            Some(("to", v)) => to = v.parse::<NodeId>().ok(),
            _ => {}
        }
    }
    let (Some(stream), Some(to)) = (stream, to) else {
        return (
            "400 Bad Request",
            "expected /switchover?stream=NAME&to=NODE\n".into(),
        );
    };
    let asked = control.try_send(ToControl::Request(Request::Switchover {
        stream: stream.clone(),
        to,
    }));
    match asked {
        Ok(()) => (
            "202 Accepted",
            format!("switchover of {stream} to node {to} asked\n"),
        ),
        Err(_) => (
            "503 Service Unavailable",
            "the node's control loop is busy: ask again\n".into(),
        ),
    }
}

pub fn run(
    listener: TcpListener,
    node: NodeId,
    shared: Arc<Shared>,
    control: Option<SyncSender<ToControl>>,
) {
    for sock in listener.incoming() {
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        let Ok(sock) = sock else { continue };
        let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reader = BufReader::new(&sock);
        let mut line = String::new();
        let mut request = String::new();
        // Read the request head: only its first line matters.
        for i in 0..100 {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) if i == 0 => request = line.trim().to_string(),
                Ok(_) => {}
            }
        }
        let mut words = request.split_whitespace();
        if let (Some("POST"), Some(target)) = (words.next(), words.next()) {
            let (status, body) = if target.starts_with("/switchover") {
                switchover(target, control.as_ref())
            } else {
                ("404 Not Found", format!("no such action: {target}\n"))
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = (&sock)
                .write_all(head.as_bytes())
                .and_then(|()| (&sock).write_all(body.as_bytes()));
            continue;
        }
        if let (Some("GET"), Some("/members")) = (
            request.split_whitespace().next(),
            request.split_whitespace().nth(1),
        ) {
            let view = shared.members.lock().expect("members lock").clone();
            let (status, body) = match view {
                Some(v) => ("200 OK", v.to_string()),
                None => (
                    "409 Conflict",
                    "\"this node runs no controller: no [control] section\"".to_string(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = (&sock)
                .write_all(head.as_bytes())
                .and_then(|()| (&sock).write_all(body.as_bytes()));
            continue;
        }
        let streams: Vec<_> = shared
            .metrics
            .iter()
            .flat_map(|m| m.lock().expect("metrics lock").clone())
            .collect();
        if let (Some("GET"), Some("/fronts")) = (
            request.split_whitespace().next(),
            request.split_whitespace().nth(1),
        ) {
            let body =
                serde_json::Value::Array(shared.fronts.iter().map(|f| f.to_json()).collect())
                    .to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = (&sock)
                .write_all(head.as_bytes())
                .and_then(|()| (&sock).write_all(body.as_bytes()));
            continue;
        }
        let mut body = prometheus(node, &streams);
        body.push_str(&crate::front::metrics::prometheus(node, &shared.fronts));
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = (&sock)
            .write_all(head.as_bytes())
            .and_then(|()| (&sock).write_all(body.as_bytes()));
    }
}
