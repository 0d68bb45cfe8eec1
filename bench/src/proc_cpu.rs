//! CPU time from /proc: of a process (all its threads, living and exited), of some
//! threads of this process, of the children this process has waited for, and of the
//! whole machine. A benchmark reads them before and after a series, so the series'
//! cost in CPU per transaction can be reported, beside what the rest of the machine
//! (other users' builds on a shared machine) used meanwhile.
//!
//! Units: /proc counts in clock ticks of `USER_HZ`, which Linux fixes at 100 per second
//! for every interface to user space (the kernel's own HZ does not show through), so a
//! reading has a resolution of 10 ms.

use std::collections::HashMap;

use crate::Error;

/// Clock ticks per second of /proc/*/stat and /proc/stat.
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) process `pid` has used, all its threads together.
pub fn process_seconds(pid: u32) -> Result<f64, Error> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    let f = stat_fields(&text).ok_or_else(|| format!("{path}: not a stat line"))?;
    Ok((f[0] + f[1]) / USER_HZ)
}

/// CPU seconds of the children this process has waited for (`cutime + cstime`): a
/// child that ran and was reaped during a series adds its whole use.
pub fn waited_children_seconds() -> Result<f64, Error> {
    let path = "/proc/self/stat";
    let text = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
    let f = stat_fields(&text).ok_or_else(|| format!("{path}: not a stat line"))?;
    Ok((f[2] + f[3]) / USER_HZ)
}

/// CPU seconds of each thread of this process whose name starts with `prefix`, by
/// thread id. The kernel cuts a thread's name to 15 bytes, so `prefix` must be no
/// longer.
pub fn threads_seconds(prefix: &str) -> Result<HashMap<u32, f64>, Error> {
    assert!(prefix.len() <= 15, "thread names are cut to 15 bytes");
    let tasks =
        std::fs::read_dir("/proc/self/task").map_err(|e| format!("list /proc/self/task: {e}"))?;
    let mut out = HashMap::new();
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // A thread may end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let name = text
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map(|(n, _)| n)
            .unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        if let Some(f) = stat_fields(&text) {
            out.insert(tid, (f[0] + f[1]) / USER_HZ);
        }
    }
    Ok(out)
}

/// CPU seconds the threads of `after` used since `before` (a thread that started in
/// between counts from zero; one that ended in between is lost).
pub fn threads_delta(before: &HashMap<u32, f64>, after: &HashMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(tid, s)| s - before.get(tid).copied().unwrap_or(0.0))
        .filter(|d| *d > 0.0)
        .sum()
}

/// The machine's CPU time so far, all CPUs together (the `cpu` line of /proc/stat).
#[derive(Clone, Copy, Debug, Default)]
pub struct Machine {
    /// Seconds not idle and not waiting for I/O.
    pub busy_s: f64,
}

impl Machine {
    pub fn read() -> Result<Machine, Error> {
        let path = "/proc/stat";
        let text = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
        Machine::parse(&text).ok_or_else(|| format!("{path}: no cpu line").into())
    }

    fn parse(text: &str) -> Option<Machine> {
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time
        // is already inside user and nice.
        let total: f64 = v.iter().take(8).sum();
        let idle = v.get(3)? + v.get(4)?;
        Some(Machine {
            busy_s: (total - idle) / USER_HZ,
        })
    }
}

/// utime, stime, cutime and cstime (ticks) of a /proc stat line. The fields are
/// counted after the command name, which may itself hold spaces and parentheses.
fn stat_fields(text: &str) -> Option<[f64; 4]> {
    let (_, rest) = text.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 to 17 of proc(5); `rest` starts at field 3 (the state).
    let get = |n: usize| f.get(n - 3)?.parse::<f64>().ok();
    Some([get(14)?, get(15)?, get(16)?, get(17)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_past_odd_names() {
        let line = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 75 30 12 20 0 9 0 \
                    100 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(stat_fields(line), Some([250.0, 75.0, 30.0, 12.0]));
        assert_eq!(stat_fields("4242 (x) S 1"), None);
    }

    #[test]
    fn this_process_and_the_machine_are_readable_and_grow() {
        let me = process_seconds(std::process::id()).unwrap();
        let m0 = Machine::read().unwrap();
        // Some work of our own, enough for a few ticks.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(process_seconds(std::process::id()).unwrap() > me);
        let m1 = Machine::read().unwrap();
        assert!(m1.busy_s > m0.busy_s);
        let cpu = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let m = Machine::parse(cpu).unwrap();
        assert!((m.busy_s - 1.61).abs() < 1e-9);
    }

    #[test]
    fn thread_deltas_count_new_threads_from_zero() {
        let before = HashMap::from([(1, 1.0), (2, 5.0)]);
        let after = HashMap::from([(1, 1.5), (3, 0.25)]);
        assert!((threads_delta(&before, &after) - 0.75).abs() < 1e-9);
        assert!(threads_seconds("bench-nothread").unwrap().is_empty());
        // A named thread of this process is found while it lives (it names itself as
        // it starts: it says when it runs).
        let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("bench-cpu-probe".into())
            .spawn(move || {
                ready_tx.send(()).unwrap();
                rx.recv()
            })
            .unwrap();
        ready.recv().unwrap();
        let found = threads_seconds("bench-cpu-pro").unwrap();
        tx.send(()).unwrap();
        t.join().unwrap().unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
    }
}
