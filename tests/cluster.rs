//! A 3-node cluster in this process, on loopback: strong-sync appends, reads, status,
//! redirection by a secondary, and byte-identical logs.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::time::Duration;

use cluster::*;
use lockstep::client::{Client, ClientOptions};
use lockstep::server::Server;

#[test]
fn three_nodes_strong_sync_end_to_end() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let spec = ClusterSpec {
        nodes: 3,
        stream_toml: "mode = \"strong\"\n".into(),
    };
    let configs = write_configs(dir.path(), &spec);
    let servers: Vec<Server> = configs
        .iter()
        .map(|(p, _)| Server::start(load(p)).unwrap())
        .collect();
    let addrs: Vec<String> = configs.iter().map(|(_, a)| a.clone()).collect();
    // Connect to a secondary first: the client follows it to the primary.
    let opts = ClientOptions {
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let mut c = Client::connect(&[addrs[2].clone(), addrs[0].clone()], "s", opts).unwrap();
    let mut last = 0;
    for i in 0..200u32 {
        let payload = format!("record {i}");
        last = c.append(payload.as_bytes()).unwrap();
    }
    assert_eq!(last, 200);
    // Pipelined: many outstanding appends on one connection.
    let ids: Vec<_> = (0..100u32)
        .map(|i| {
            c.submit_append(&[format!("p{i}").as_bytes()], None)
                .unwrap()
        })
        .collect();
    let mut lsns: Vec<u64> = ids
        .into_iter()
        .map(|id| c.wait(id).unwrap().first_lsn)
        .collect();
    lsns.sort_unstable();
    assert_eq!(lsns, (201..=300).collect::<Vec<_>>());
    let (commit, recs) = c.read(1, 10).unwrap();
    assert!(commit >= 300);
    assert_eq!(recs[0].payload, b"record 0");
    let status = c.status().unwrap();
    assert_eq!(status["role"], "primary");
    assert!(status["commits"].as_u64().unwrap() >= 300, "{status}");
    // Every committed record is on every node, byte for byte.
    std::thread::sleep(Duration::from_millis(200));
    drop(c);
    for s in servers {
        s.shutdown();
    }
    let mut logs = Vec::new();
    for n in 1..=3 {
        let mut log =
            lockstep::log::Log::open(&stream_dir(dir.path(), n), Default::default(), 0).unwrap();
        assert!(
            log.durable_lsn() >= 300,
            "node {n} has {}",
            log.durable_lsn()
        );
        logs.push(log.read(1, 300, usize::MAX).unwrap());
    }
    assert_eq!(logs[0].len(), 300);
    assert!(
        logs[0] == logs[1] && logs[0] == logs[2],
        "committed prefixes differ"
    );
}

fn http_get(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn degrade_drops_a_stopped_member_as_a_recorded_event_and_metrics_show_it() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let spec = ClusterSpec {
        nodes: 3,
        stream_toml: "on_insufficient = \"degrade\"\nmin_sync = 1\nack_timeout_ms = 100\nrequest_timeout_ms = 3000\n".into(),
    };
    let configs = write_configs(dir.path(), &spec);
    let mut servers: Vec<Option<Server>> = configs
        .iter()
        .map(|(p, _)| Some(Server::start(load(p)).unwrap()))
        .collect();
    let admin = servers[0].as_ref().unwrap().admin_addr().unwrap();
    let opts = ClientOptions {
        timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let mut c = Client::connect(&[configs[0].1.clone()], "s", opts).unwrap();
    for i in 0..20u32 {
        c.append(format!("a{i}").as_bytes()).unwrap();
    }
    // Node 3 goes away: after the ack timeout it leaves the effective sync set, as an
    // event, and commits go on with node 2 (the append commits instead of ending in
    // doubt at the 3 s request timeout).
    servers[2].take().unwrap().shutdown();
    let lsn = c.append(b"after node 3 stopped").unwrap();
    assert_eq!(lsn, 21);
    let status = c.status().unwrap();
    assert!(status["events"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(status["sync_set_size"], 1, "{status}");
    assert_eq!(status["degraded"], false, "{status}");
    // Node 2 goes away too: below min_sync the stream commits on the primary alone, and
    // says so in its metrics.
    servers[1].take().unwrap().shutdown();
    c.append(b"primary alone").unwrap();
    std::thread::sleep(Duration::from_millis(250));
    let text = http_get(admin);
    assert!(
        text.contains("lockstep_degraded{node=\"1\",stream=\"s\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("lockstep_commits_total{node=\"1\",stream=\"s\"} 22"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE lockstep_commit_latency_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains(
            "lockstep_commit_latency_seconds_count{node=\"1\",stream=\"s\",phase=\"total\"} 22"
        ),
        "{text}"
    );
    drop(c);
    for s in servers.into_iter().flatten() {
        s.shutdown();
    }
}

#[test]
fn block_keeps_waiting_and_answers_in_doubt() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let spec = ClusterSpec {
        nodes: 3,
        stream_toml: "ack_timeout_ms = 100\nrequest_timeout_ms = 400\n".into(),
    };
    let configs = write_configs(dir.path(), &spec);
    let mut servers: Vec<Option<Server>> = configs
        .iter()
        .map(|(p, _)| Some(Server::start(load(p)).unwrap()))
        .collect();
    let opts = ClientOptions {
        timeout: Duration::from_millis(400),
        ..Default::default()
    };
    let mut c = Client::connect(&[configs[0].1.clone()], "s", opts).unwrap();
    assert_eq!(c.append(b"one").unwrap(), 1);
    servers[2].take().unwrap().shutdown();
    match c.append(b"two") {
        Err(lockstep::client::ClientError::InDoubt { first_lsn, .. }) => {
            assert_eq!(first_lsn, Some(2))
        }
        other => panic!("expected in doubt, got {other:?}"),
    }
    // Node 3 returns and catches up: the in-doubt record turns out committed.
    let (p, _) = &configs[2];
    servers[2] = Some(Server::start(load(p)).unwrap());
    let mut committed = 0;
    for _ in 0..100 {
        committed = c.status().unwrap()["commit_lsn"].as_u64().unwrap();
        if committed >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(committed >= 2, "commit lsn stayed at {committed}");
    assert_eq!(c.read(2, 1).unwrap().1[0].payload, b"two");
    drop(c);
    for s in servers.into_iter().flatten() {
        s.shutdown();
    }
}

#[test]
fn a_request_may_weaken_its_mode_but_not_strengthen_it() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let spec = ClusterSpec {
        nodes: 3,
        stream_toml: "mode = \"semi\"\n".into(),
    };
    let configs = write_configs(dir.path(), &spec);
    let servers: Vec<Server> = configs
        .iter()
        .map(|(p, _)| Server::start(load(p)).unwrap())
        .collect();
    let mut c = Client::connect(&[configs[0].1.clone()], "s", ClientOptions::default()).unwrap();
    let id = c
        .submit_append(&[b"async is weaker"], Some(lockstep::wire::Mode::Async))
        .unwrap();
    assert_eq!(c.wait(id).unwrap().first_lsn, 1);
    let id = c
        .submit_append(&[b"strong is stronger"], Some(lockstep::wire::Mode::Strong))
        .unwrap();
    match c.wait(id) {
        Err(lockstep::client::ClientError::Server { code, message, .. }) => {
            assert_eq!(code, lockstep::wire::ErrorCode::ModeNotAllowed);
            assert!(message.contains("stronger"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Nothing was appended by the refused request.
    assert_eq!(c.append(b"next").unwrap(), 2);
    drop(c);
    for s in servers {
        s.shutdown();
    }
}

/// A read below the first record retention kept is the client's to handle: the node
/// answers `out-of-range` (naming the log's range), not `internal`.
#[test]
fn a_read_below_the_retained_range_is_out_of_range() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let d = dir.path();
    // One node, 2 MiB segments, one sealed segment kept: a few megabytes of appends
    // leave the log's first records deleted.
    std::fs::write(
        d.join("profile.toml"),
        "description = \"retention test\"\n[log]\nsegment_bytes = 2097152\n",
    )
    .unwrap();
    let port = lockstep::kit::free_ports(1).expect("free loopback ports")[0];
    let addr = lockstep::kit::loopback(port);
    let mut toml = lockstep::kit::NodeToml::new(1, std::slice::from_ref(&addr));
    toml.keys = "profile = \"profile.toml\"\n".into();
    toml.sections =
        "[[streams]]\nname = \"s\"\nprimary = 1\nmode = \"async\"\nretain_segments = 1\n".into();
    let config = d.join("node1.toml");
    std::fs::write(&config, toml.text()).unwrap();
    let server = Server::start(load(&config)).unwrap();
    // The node prepares its spare segments as it starts; on a busy disk its welcome
    // may take longer than the default connect timeout.
    let opts = ClientOptions {
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let mut c = Client::connect(&[addr], "s", opts).unwrap();
    let payload = vec![7u8; 60 << 10];
    let mut last = 0;
    for _ in 0..120 {
        last = c.append_batch(&[&payload]).unwrap().last_lsn();
    }
    // Retention runs about once a second; a read from LSN 1 fails once it did.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let refusal = loop {
        match c.read(1, 1) {
            Ok(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(_) => panic!("retention deleted nothing of {last} records within 20 s"),
            Err(e) => break e,
        }
    };
    match refusal {
        lockstep::client::ClientError::Server { code, message, .. } => {
            assert_eq!(code, lockstep::wire::ErrorCode::OutOfRange, "{message}");
            assert!(message.contains("outside the log's range"), "{message}");
        }
        other => panic!("expected an out-of-range refusal, got {other:?}"),
    }
    // What retention kept is still read.
    let (commit, records) = c.read(last, 1).unwrap();
    assert_eq!(commit, last);
    assert_eq!(records[0].payload, payload);
    drop(c);
    server.shutdown();
}
