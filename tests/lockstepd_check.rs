//! `lockstepd check`: start-up probes and recovery of every stream of a data directory.

mod common;

use std::process::Command;

use common::*;
use lockstep::log::Log;

fn check(dir: &std::path::Path) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_lockstepd"))
        .args(["check", "--json", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), v)
}

#[test]
fn recovers_streams_and_refuses_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = ring();
    for name in ["orders", "users"] {
        let mut log = Log::open(&dir.path().join("streams").join(name), small(), 1).unwrap();
        fill(&mut log, &mut ring, 2, 500, 9);
    }
    // A torn tail in one stream: recovered, and said so.
    let users = dir.path().join("streams/users");
    let (first, path) = segments(&users).pop().unwrap();
    let &(_, off, _) = offsets(&path, first).last().unwrap();
    flip_bit(&path, off + 40);
    let (code, v) = check(dir.path());
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["streams"][0]["stream"], "orders");
    assert_eq!(v["streams"][0]["durable_lsn"], 500);
    assert_eq!(v["streams"][0]["last_epoch"], 2);
    assert_eq!(v["streams"][1]["durable_lsn"], 499);
    assert!(
        v["streams"][1]["notes"][0]
            .as_str()
            .unwrap()
            .contains("cut torn tail")
    );

    // Corruption before the tail: the node must not start.
    let orders = dir.path().join("streams/orders");
    let (first, path) = segments(&orders).pop().unwrap();
    let recs = offsets(&path, first);
    flip_bit(&path, recs[recs.len() / 2].1 + 33);
    let (code, v) = check(dir.path());
    assert_eq!(code, 1);
    assert_eq!(v["ok"], false);
    let err = v["streams"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("corrupt") && err.contains(&format!("offset {}", recs[recs.len() / 2].1)),
        "{err}"
    );
}

#[test]
fn bad_profile_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.toml");
    std::fs::write(&profile, "[log]\nsegment_bytes = 12\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lockstepd"))
        .args(["check", "--data-dir"])
        .arg(dir.path())
        .arg("--profile")
        .arg(&profile)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("segment_bytes = 12"));
}
