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
