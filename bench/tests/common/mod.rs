//! What the benchmarks' tiny-size tests share: a scratch directory, the `lockstepd`
//! binary, running `lockstep-bench`, reading its markdown tables and lines, and the
//! MariaDB servers a run leaves.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// An empty directory for one test under the build directory (a real disk, where /tmp
/// may be tmpfs), named after `name` and this process.
pub fn scratch(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

/// `lockstep-bench` with `args`, to add to and run with [`run`].
pub fn bench(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lockstep-bench"));
    c.args(args);
    c
}

/// The `lockstepd` binary of this build, built now if needed (it belongs to another
/// package of the workspace, so cargo does not build it for this one's tests).
pub fn lockstepd() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_lockstep-bench"));
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "lockstep", "--bin", "lockstepd"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build of lockstepd: {status}");
    let bin = bench.with_file_name("lockstepd");
    assert!(bin.is_file(), "no {}", bin.display());
    bin
}

/// Runs `cmd`; panics with its output unless it succeeds; returns its stdout and
/// stderr.
pub fn run(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().expect("run lockstep-bench");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// The trimmed cells of a markdown table row.
pub fn cells(line: &str) -> Vec<String> {
    line.trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

/// Why this machine cannot run a benchmark with MariaDB, if it cannot.
pub fn mariadb_missing() -> Option<String> {
    if !Path::new("/usr/sbin/mariadbd").exists() {
        return Some("no /usr/sbin/mariadbd (the Debian package mariadb-server)".into());
    }
    lockstep_sys::probe::io_uring().err()
}

/// The number right after `key` in `line`.
pub fn number_after(line: &str, key: &str) -> u64 {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("{key:?} in {line}"));
    line[at + key.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("a number after {key:?} in {line}"))
}

/// The text of `stdout`'s line that starts with `prefix`, after the prefix.
pub fn line_after<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in {stdout}"))
}

/// MariaDB servers whose data is under `dir`, still running.
pub fn servers_left(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            let cmdline = std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
            (comm.trim() == "mariadbd" && cmdline.contains(&needle))
                .then(|| cmdline.replace('\0', " "))
        })
        .collect()
}

/// Runs `lockstep-bench` with `args` and `--no-install --lockstepd BIN --dir DIR` in a
/// scratch directory named `name`, and checks that it was not skipped; its stdout and
/// the directory.
pub fn run_mariadb_bench(name: &str, args: &[&str]) -> (String, PathBuf) {
    let dir = scratch(name);
    let (stdout, _) = run(bench(args)
        .arg("--no-install")
        .arg("--lockstepd")
        .arg(lockstepd())
        .arg("--dir")
        .arg(&dir));
    assert!(!stdout.contains("skipped"), "{stdout}");
    (stdout, dir)
}

/// The lines of `stdout` that start with `prefix`.
pub fn lines_starting<'a>(stdout: &'a str, prefix: &str) -> Vec<&'a str> {
    stdout.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// Asserts that the failover table in `stdout` has a row containing `row`, with `count`
/// samples and positive p50, p90 and max.
pub fn assert_table_row(stdout: &str, row: &str, count: &str) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with('|') && l.contains(row))
        .unwrap_or_else(|| panic!("no table row {row:?} in {stdout}"));
    let cells = cells(line);
    assert_eq!(cells.len(), 5, "{line}");
    assert_eq!(cells[1], count, "{line}");
    for c in &cells[2..] {
        assert!(c.parse::<f64>().is_ok_and(|v| v > 0.0), "{line}");
    }
}
