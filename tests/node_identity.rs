//! One process per node id, on real `lockstepd` processes: a 3-node cluster with a
//! controller and a cluster secret serves appends while a second process of node 2 is
//! started on node 2's data directory: the directory's lock refuses it, naming the
//! holder's pid, and appends keep committing throughout.

#[path = "common/procs.rs"]
mod procs;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use procs::*;

const SECRET: &str = "node-identity-cluster-secret-0123456789";

/// A cluster with a controller whose nodes prove they know `SECRET`.
fn start() -> Procs {
    let layout = Layout::new_with(&|_| "secret_file = \"secret\"\n".into(), &|_| {
        "mode = \"strong\"\n[control]\n".into()
    });
    let secret = layout.dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    Procs::start_layout(layout)
}

/// Runs `lockstepd --config config` to its end (at most `within`).
fn run_lockstepd(config: &Path, within: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstepd"))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the second process still runs after {within:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The lines of `text` that contain `what`.
fn lines_with<'a>(text: &'a str, what: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(what)).collect()
}

/// A workload on node 1 (the primary) that must keep committing while `f` runs.
fn keeps_committing(p: &Procs, f: impl FnOnce()) {
    let work = Workload::start(
        p.addr(1),
        4,
        client_options(Duration::from_secs(5)),
        Duration::from_secs(60),
    );
    assert!(
        work.wait_for_more(20, Duration::from_secs(10)),
        "no commits before"
    );
    f();
    assert!(
        work.wait_for_more(50, Duration::from_secs(10)),
        "commits stopped after the second process"
    );
    let report = work.stop();
    assert_eq!(report.in_doubt, 0, "{report:?}");
    assert_eq!(report.failed, 0, "{:?}", report.failures);
}

#[test]
fn a_second_process_on_the_same_data_directory_is_refused_naming_the_holder() {
    let _serial = serial();
    let mut p = start();
    let pid = p.pid(2);
    let config = p.layout.configs[1].clone();
    keeps_committing(&p, || {
        let o = run_lockstepd(&config, Duration::from_secs(20));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        let refusal = lines_with(&err, "is in use by another process");
        assert_eq!(refusal.len(), 1, "{err}");
        eprintln!("the second process said: {}", refusal[0]);
        assert!(refusal[0].contains(&format!("(pid {pid})")), "{err}");
        assert!(
            refusal[0].contains("node 2 is already served from it"),
            "{err}"
        );
        // Refused before it touched anything: no other line of substance.
        assert!(lines_with(&err, "listening on").is_empty(), "{err}");
    });
    p.assert_alive(2);
    let lock = std::fs::read_to_string(p.layout.dir.path().join("node2").join("LOCK")).unwrap();
    assert_eq!(lock, format!("pid {pid}\n"));
}
