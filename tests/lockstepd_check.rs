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

/// The RDMA probe: on a host without a device (this one, in CI), `auto` says why in one
/// line and uses TCP; `rdma` is refused; `rdma-emu` needs no device. On a host with a
/// device the probe names it.
#[test]
fn the_rdma_probe_says_why_auto_uses_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let run = |transport: &str| {
        let profile = dir.path().join(format!("{transport}.toml"));
        std::fs::write(&profile, format!("transport = \"{transport}\"\n")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_lockstepd"))
            .args(["check", "--json", "--data-dir"])
            .arg(dir.path())
            .arg("--profile")
            .arg(&profile)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code().unwrap(), v)
    };
    let has_device = std::fs::read_dir("/sys/class/infiniband").is_ok_and(|d| d.count() > 0);
    let (code, v) = run("auto");
    let rdma = v["rdma"].as_str().unwrap();
    let line = v["transport"].as_str().unwrap();
    assert!(!line.contains('\n'), "one line: {line}");
    if has_device {
        // A device the kernel lists may still be unusable (no active port).
        assert!(
            rdma.starts_with("device ") || rdma.starts_with("no usable device ("),
            "{rdma}"
        );
        eprintln!("this host has RDMA devices: {rdma}; auto: {line}");
        return;
    }
    assert_eq!(code, 0, "{v:#}");
    assert!(
        rdma.starts_with("no device (") || rdma.starts_with("no libibverbs ("),
        "{rdma}"
    );
    assert_eq!(line, format!("rdma: {rdma}; using tcp"));
    let (code, v) = run("rdma");
    assert_eq!(code, 1, "rdma without a device: {v:#}");
    assert!(v["transport"].as_str().unwrap().contains("needs a device"));
    let (code, v) = run("rdma-emu");
    assert_eq!(code, 0, "{v:#}");
    assert!(
        v["transport"]
            .as_str()
            .unwrap()
            .starts_with("transport: rdma-emu")
    );
}
