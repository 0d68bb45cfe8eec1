//! Watches the database primary's semi-sync state while a session runs, so that a
//! fallback to asynchronous replication is an alert, never silent.
//!
//! Every second it reads `Rpl_semi_sync_master_status` and `Rpl_semi_sync_master_no_tx`
//! over a connection of its own. Status OFF means the primary commits without waiting
//! for the front: a log line and `lockstep_front_semi_sync_on 0`. `no_tx` growing means
//! commits returned without any replica's ACK: a log line with the count and
//! `lockstep_front_unacked_commits_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::FrontSettings;
use super::connection::{Login, MyConn};
use super::metrics::FrontMetrics;

const EVERY: Duration = Duration::from_secs(1);

/// The watcher of one session; stops when dropped.
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    pub fn start(stream: &str, settings: &FrontSettings, metrics: &Arc<FrontMetrics>) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, metrics) = (Arc::clone(&stop), Arc::clone(metrics));
        let login = Login {
            addr: settings.upstream.clone(),
            user: settings.user.clone(),
            password: settings.password.clone(),
            database: None,
            connect_timeout: settings.connect_timeout,
            io_timeout: Some(EVERY * 5),
            packet_bytes_max: super::connection::PACKET_BYTES_DEFAULT,
        };
        let stream = stream.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("lockstep-front-watch-{stream}"))
            .spawn(move || watch(&stream, &login, &metrics, &flag))
            .ok();
        Watch { stop, thread }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(stream: &str, login: &Login, metrics: &FrontMetrics, stop: &AtomicBool) {
    let mut conn: Option<MyConn> = None;
    let mut no_tx: Option<u64> = None;
    let mut on: Option<bool> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        next = Instant::now() + EVERY;
        if conn.is_none() {
            conn = MyConn::connect(login).ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let pairs = match c.show("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%'") {
            Ok(p) => p,
            Err(_) => {
                conn = None;
                continue;
            }
        };
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        let now_on = get("Rpl_semi_sync_master_status").map(|v| v.eq_ignore_ascii_case("ON"));
        if let Some(now_on) = now_on {
            metrics
                .semi_sync_on
                .store(i64::from(now_on), Ordering::Relaxed);
            if on != Some(now_on) {
                if !now_on {
                    tracing::error!(
                        "ALERT: front of stream {stream}: {} fell back to \
                         asynchronous replication (Rpl_semi_sync_master_status = OFF): its \
                         commits return without lockstep holding them",
                        login.addr
                    );
                } else if on == Some(false) {
                    tracing::info!(
                        "front of stream {stream}: {} is semi-synchronous again",
                        login.addr
                    );
                }
                on = Some(now_on);
            }
        }
        if let Some(n) = get("Rpl_semi_sync_master_no_tx").and_then(|v| v.parse::<u64>().ok()) {
            if let Some(before) = no_tx
                && n > before
            {
                metrics
                    .no_ack_commits
                    .fetch_add(n - before, Ordering::Relaxed);
                tracing::error!(
                    "ALERT: front of stream {stream}: {} committed {} \
                     transactions without a semi-sync ACK (Rpl_semi_sync_master_no_tx {before} \
                     -> {n})",
                    login.addr,
                    n - before
                );
            }
            no_tx = Some(n);
        }
    }
}
