//! The admin endpoint: Prometheus text on `GET /metrics` (any path answers the same).
//! Sequential and blocking: it is read by a scraper every few seconds, not by clients.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::replication::NodeId;
use crate::server::Shared;
use crate::server::metrics::prometheus;

pub fn run(listener: TcpListener, node: NodeId, shared: Arc<Shared>) {
    for sock in listener.incoming() {
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        let Ok(sock) = sock else { continue };
        let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reader = BufReader::new(&sock);
        let mut line = String::new();
        // Read the request head; its content does not matter.
        for _ in 0..100 {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => {}
            }
        }
        let streams: Vec<_> = shared
            .metrics
            .iter()
            .flat_map(|m| m.lock().expect("metrics lock").clone())
            .collect();
        let body = prometheus(node, &streams);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = (&sock)
            .write_all(head.as_bytes())
            .and_then(|()| (&sock).write_all(body.as_bytes()));
    }
}
