//! A 3-node cluster in this process with its controller: the first primary is promoted
//! by the controller, a stopped primary is replaced by itself, acknowledged commits
//! survive, and the old primary rejoins as a follower.

#[path = "common/cluster.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cluster::*;
use lockstep::client::{Client, ClientOptions};
use lockstep::server::Server;

fn opts() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

/// Appends `payload` through any node, retrying while the cluster has no primary.
fn append_retrying(addrs: &[String], payload: &[u8], within: Duration) -> (u64, Duration) {
    let start = Instant::now();
    let mut last_err = String::new();
    while start.elapsed() < within {
        match Client::connect(addrs, "s", opts()).and_then(|mut c| c.append(payload)) {
            Ok(lsn) => return (lsn, start.elapsed()),
            Err(e) => last_err = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no commit within {within:?}: {last_err}");
}

/// The node serving as primary, as its published metrics say (they trail by up to a
/// publishing interval).
fn primary_of(servers: &[Option<Server>]) -> Option<usize> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let found = servers.iter().position(|s| {
            s.as_ref()
                .is_some_and(|s| s.metrics().iter().any(|m| m.role == "primary"))
        });
        if found.is_some() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn the_controller_promotes_replaces_a_stopped_primary_and_loses_nothing() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let spec = ClusterSpec {
        nodes: 3,
        stream_toml: "mode = \"strong\"\nack_timeout_ms = 200\n[control]\n".into(),
    };
    let configs = write_configs(dir.path(), &spec);
    let mut servers: Vec<Option<Server>> = configs
        .iter()
        .map(|(p, _)| Some(Server::start(load(p)).unwrap()))
        .collect();
    let addrs: Vec<String> = configs.iter().map(|(_, a)| a.clone()).collect();

    // The controller binds the configured primary to its process, in a new epoch.
    let (first, _) = append_retrying(&addrs, b"first", Duration::from_secs(10));
    let mut acked = vec![(first, b"first".to_vec())];
    let mut c = Client::connect(&addrs, "s", opts()).unwrap();
    for i in 0..200u32 {
        let p = format!("before {i}").into_bytes();
        acked.push((c.append(&p).unwrap(), p));
    }
    drop(c);
    let old = primary_of(&servers).expect("a primary serves");

    // Stop the primary: the controller fences its epoch and promotes another node.
    servers[old].take().unwrap().shutdown();
    let rest: Vec<String> = (0..3)
        .filter(|&i| i != old)
        .map(|i| addrs[i].clone())
        .collect();
    let (lsn, took) = append_retrying(&rest, b"after", Duration::from_secs(10));
    eprintln!("failover: first commit on the new primary {took:?} after the stop");
    acked.push((lsn, b"after".to_vec()));
    let new = primary_of(&servers).expect("a new primary serves");
    assert_ne!(new, old);

    // Every acknowledged commit is readable, byte for byte, from the new primary.
    let mut c = Client::connect(&rest, "s", opts()).unwrap();
    for (lsn, payload) in &acked {
        let (_, recs) = c.read(*lsn, 1).unwrap();
        assert_eq!(&recs[0].payload, payload, "lsn {lsn}");
    }
    drop(c);

    // The old primary comes back as a new process and follows the new primary; the
    // cluster commits with it in the sync set again.
    servers[old] = Some(Server::start(load(&configs[old].0)).unwrap());
    let (lsn, _) = append_retrying(&addrs, b"rejoined", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let caught_up = servers[old]
            .as_ref()
            .unwrap()
            .metrics()
            .iter()
            .any(|m| m.durable_lsn >= lsn);
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old primary did not catch up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for s in servers.into_iter().flatten() {
        s.shutdown();
    }
}

/// The admin token of the clusters here (each node reads it from `admin.token`).
const TOKEN: &str = "control-test-admin-token-0123456789";

/// Gives every node of `configs` the admin token: the key goes first in each file
/// (a top-level key after a [table] header would belong to that table).
fn with_admin_token(dir: &std::path::Path, configs: &[(std::path::PathBuf, String)]) {
    use std::os::unix::fs::PermissionsExt;
    let token = dir.join("admin.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    for (path, _) in configs {
        let text = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, format!("admin_token_file = \"admin.token\"\n{text}")).unwrap();
    }
}

/// Asks for a switchover through a node's admin endpoint, with the admin token;
/// returns the status line (the endpoint answers once the switchover is done or
/// refused).
fn ask_switchover(admin: std::net::SocketAddr, to: u32) -> String {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(admin).unwrap();
    write!(
        sock,
        "POST /v1/switchover?stream=s&to={to} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or("").to_string()
}

#[test]
fn switchover_moves_the_primary_and_loses_nothing() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let spec = ClusterSpec {
        nodes: 3,
        stream_toml: "mode = \"strong\"\n[control]\n".into(),
    };
    let configs = write_configs(dir.path(), &spec);
    with_admin_token(dir.path(), &configs);
    let servers: Vec<Option<Server>> = configs
        .iter()
        .map(|(p, _)| Some(Server::start(load(p)).unwrap()))
        .collect();
    let addrs: Vec<String> = configs.iter().map(|(_, a)| a.clone()).collect();
    let (first, _) = append_retrying(&addrs, b"first", Duration::from_secs(10));
    let mut acked = vec![(first, b"first".to_vec())];
    let old = primary_of(&servers).expect("a primary serves");
    let target = (old + 1) % 3;
    let admin = servers[target].as_ref().unwrap().admin_addr().unwrap();
    // The target may still be catching up as a learner (it joins the sync set once it
    // holds everything): the endpoint refuses a switchover to it until then (409,
    // "not in the sync set"), and the operator asks again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = ask_switchover(admin, target as u32 + 1);
        if status.contains(" 200 ") {
            break;
        }
        assert!(status.contains(" 409 "), "{status}");
        assert!(
            Instant::now() < deadline,
            "the switchover did not happen: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The endpoint answers once the configuration naming the target is committed; the
    // target's shard takes the role as it applies it, a moment later.
    let deadline = Instant::now() + Duration::from_secs(2);
    while primary_of(&servers) != Some(target) {
        assert!(
            Instant::now() < deadline,
            "the target does not serve as primary"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in 0..20u32 {
        let p = format!("after {i}").into_bytes();
        let (lsn, _) = append_retrying(&addrs, &p, Duration::from_secs(10));
        acked.push((lsn, p));
    }
    let mut c = Client::connect(&[addrs[target].clone()], "s", opts()).unwrap();
    for (lsn, payload) in &acked {
        let (_, recs) = c.read(*lsn, 1).unwrap();
        assert_eq!(&recs[0].payload, payload, "lsn {lsn}");
    }
    assert_eq!(
        c.status().unwrap()["role"],
        "primary",
        "the target serves as primary"
    );
    drop(c);
    // Every node's admin endpoint shows the same roles, every node heard from, and the
    // `lockstep members` table names the new primary.
    let view = get_members(admin);
    let roles = &view["config"]["streams"]["s"];
    assert_eq!(roles["primary"], target as u64 + 1, "{view}");
    let nodes = view["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["heard_ms_ago"].is_u64()), "{view}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["members", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("primary {}", target + 1)), "{text}");
    // One row per node, each UP with a role; the target's row says primary. (Whether
    // the others are in the sync set yet depends on how far they have caught up.)
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| node") && !l.starts_with("| -"))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    let target_id = (target + 1).to_string();
    for r in &rows {
        assert!(r[2].starts_with("UP"), "{text}");
        assert!(["primary", "sync", "learner"].contains(&r[3]), "{text}");
        assert_eq!(r[3] == "primary", r[0] == target_id, "{text}");
    }
    for s in servers.into_iter().flatten() {
        s.shutdown();
    }
}

fn get_members(admin: std::net::SocketAddr) -> serde_json::Value {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut sock = std::net::TcpStream::connect(admin).unwrap();
        write!(sock, "GET /members HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        sock.read_to_string(&mut answer).unwrap();
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let view: serde_json::Value = serde_json::from_str(body).unwrap();
        // The view is refreshed every 100 ms: wait for the switchover to show.
        let heard_all = view["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["heard_ms_ago"].is_u64()));
        if heard_all || Instant::now() > deadline {
            return view;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
