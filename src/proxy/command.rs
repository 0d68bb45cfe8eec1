//! The line-based control commands of the `lockstep-proxy` binary.
//!
//! Scripts connect to the control port and send one command per line; every command is
//! answered with exactly one line: `ok`, `error: <why>`, or the requested data. A bad
//! command never stops the proxy. Words are separated by spaces; `DIR` is `fwd`
//! (client to upstream), `back` (upstream to client) or `both`.
//!
//! | command | effect |
//! |---|---|
//! | `pass` | lift every fault (the same as `heal`) |
//! | `pass DIR` | lift the faults of `DIR`; withheld bytes are delivered |
//! | `delay DIR MS [JITTER_MS]` | hold each chunk `MS` (plus up to `JITTER_MS`) |
//! | `blackhole DIR` | withhold the bytes of `DIR`; the other direction flows |
//! | `drop DIR P` | cut a connection with probability `P` (0 to 1) per chunk read |
//! | `partition` | blackhole both directions and refuse new connections |
//! | `refuse` | refuse new connections and cut every current one |
//! | `accept` | accept new connections again (other faults unchanged) |
//! | `heal` | lift every fault; withheld bytes are delivered |
//! | `reset` | cut every current connection; answers `ok cut=N` |
//! | `stats` | one line of `key=value` counters (see [`ProxyStats`]) |
//! | `faults` | one line describing the current faults |
//! | `help` | one line listing the commands |
//! | `quit` | answers `ok` and closes this control connection |
//!
//! The `stats` line reads `forward_bytes=.. backward_bytes=.. connections_accepted=..
//! connections_refused=.. connections_cut=.. upstream_failures=.. connections_open=..
//! held_bytes=..`.

use std::fmt::Write as _;

use super::{Direction, DirectionFaults, FaultControl, Faults, ProxyStats};

/// Longest control line accepted, in bytes, newline included.
pub const LINE_BYTES_MAX: usize = 1024;

/// Longest delay or jitter a command may set: ten minutes. Longer holds are a typo,
/// not a fault.
pub const COMMAND_DELAY_MS_MAX: u64 = 600_000;

/// The directions a command applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Directions {
    One(Direction),
    Both,
}

impl Directions {
    fn each(self) -> &'static [Direction] {
        match self {
            Directions::One(Direction::Forward) => &[Direction::Forward],
            Directions::One(Direction::Backward) => &[Direction::Backward],
            Directions::Both => &Direction::BOTH,
        }
    }
}

/// One parsed control command.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Command {
    Pass(Option<Directions>),
    Delay {
        directions: Directions,
        delay_ms: u64,
        jitter_ms: u64,
    },
    Blackhole(Directions),
    Drop {
        directions: Directions,
        probability: f64,
    },
    Partition,
    Refuse,
    Accept,
    Heal,
    Reset,
    Stats,
    Faults,
    Help,
    Quit,
}

const HELP: &str = "commands: pass [DIR] | delay DIR MS [JITTER_MS] | blackhole DIR | \
                    drop DIR P | partition | refuse | accept | heal | reset | stats | \
                    faults | help | quit (DIR: fwd, back, both)";

/// Parses one control line (without its newline).
pub fn parse(line: &str) -> Result<Command, BadCommand> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&name, args)) = words.split_first() else {
        return Err(BadCommand("empty command; try `help`".into()));
    };
    let command = match name {
        "pass" => match args {
            [] => Command::Pass(None),
            [dir] => Command::Pass(Some(parse_directions(dir)?)),
            _ => return Err(usage("pass [DIR]")),
        },
        "delay" => match args {
            [dir, ms] | [dir, ms, _] => Command::Delay {
                directions: parse_directions(dir)?,
                delay_ms: parse_ms(ms)?,
                jitter_ms: args.get(2).map_or(Ok(0), |j| parse_ms(j))?,
            },
            _ => return Err(usage("delay DIR MS [JITTER_MS]")),
        },
        "blackhole" => match args {
            [dir] => Command::Blackhole(parse_directions(dir)?),
            _ => return Err(usage("blackhole DIR")),
        },
        "drop" => match args {
            [dir, p] => Command::Drop {
                directions: parse_directions(dir)?,
                probability: parse_probability(p)?,
            },
            _ => return Err(usage("drop DIR P")),
        },
        "partition" | "refuse" | "accept" | "heal" | "reset" | "stats" | "faults" | "help"
        | "quit"
            if !args.is_empty() =>
        {
            return Err(BadCommand(format!("`{name}` takes no arguments")));
        }
        "partition" => Command::Partition,
        "refuse" => Command::Refuse,
        "accept" => Command::Accept,
        "heal" => Command::Heal,
        "reset" => Command::Reset,
        "stats" => Command::Stats,
        "faults" => Command::Faults,
        "help" => Command::Help,
        "quit" => Command::Quit,
        _ => return Err(BadCommand(format!("unknown command `{name}`; try `help`"))),
    };
    Ok(command)
}

/// Carries out one command and returns its one-line answer (without newline).
pub fn execute(control: &FaultControl, command: Command) -> String {
    match command {
        Command::Pass(None) | Command::Heal => control.heal(),
        Command::Pass(Some(dirs)) => dirs.each().iter().for_each(|&d| control.pass(d)),
        Command::Delay {
            directions,
            delay_ms,
            jitter_ms,
        } => {
            for &d in directions.each() {
                control.delay(d, delay_ms, jitter_ms);
            }
        }
        Command::Blackhole(dirs) => dirs.each().iter().for_each(|&d| control.blackhole(d)),
        Command::Drop {
            directions,
            probability,
        } => {
            for &d in directions.each() {
                control.drop_connections(d, probability);
            }
        }
        Command::Partition => control.partition(),
        Command::Refuse => control.refuse(),
        Command::Accept => control.set_refuse_new(false),
        Command::Reset => return format!("ok cut={}", control.reset_all()),
        Command::Stats => return format_stats(&control.stats()),
        Command::Faults => return format_faults(&control.faults()),
        Command::Help => return HELP.into(),
        Command::Quit => {}
    }
    "ok".into()
}

/// Parses and carries out one control line; a bad line gives an `error: ` answer.
pub fn answer(control: &FaultControl, line: &str) -> String {
    match parse(line) {
        Ok(command) => execute(control, command),
        Err(why) => format!("error: {why}"),
    }
}

/// The `stats` answer.
pub fn format_stats(s: &ProxyStats) -> String {
    format!(
        "forward_bytes={} backward_bytes={} connections_accepted={} connections_refused={} \
         connections_cut={} upstream_failures={} connections_open={} held_bytes={}",
        s.forward_bytes,
        s.backward_bytes,
        s.connections_accepted,
        s.connections_refused,
        s.connections_cut,
        s.upstream_failures,
        s.connections_open,
        s.held_bytes,
    )
}

/// The `faults` answer, e.g. `fwd=delay:50+10 back=pass refuse_new=false`.
pub fn format_faults(f: &Faults) -> String {
    let mut out = String::new();
    for (name, d) in [("fwd", f.directions[0]), ("back", f.directions[1])] {
        let _ = write!(out, "{name}={} ", describe(&d));
    }
    let _ = write!(out, "refuse_new={}", f.refuse_new);
    out
}

fn describe(d: &DirectionFaults) -> String {
    if d.is_pass() {
        return "pass".into();
    }
    let mut parts = Vec::new();
    if d.blackhole {
        parts.push("blackhole".to_string());
    }
    if d.delay_ms > 0 || d.jitter_ms > 0 {
        parts.push(format!("delay:{}+{}", d.delay_ms, d.jitter_ms));
    }
    if d.drop_probability > 0.0 {
        parts.push(format!("drop:{}", d.drop_probability));
    }
    parts.join(",")
}

/// A control line that is not a command, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadCommand(String);

fn usage(form: &str) -> BadCommand {
    BadCommand(format!("usage: {form}"))
}

fn parse_directions(word: &str) -> Result<Directions, BadCommand> {
    match word {
        "fwd" | "forward" => Ok(Directions::One(Direction::Forward)),
        "back" | "backward" => Ok(Directions::One(Direction::Backward)),
        "both" => Ok(Directions::Both),
        _ => Err(BadCommand(format!(
            "bad direction `{word}`; use fwd, back or both"
        ))),
    }
}

fn parse_ms(word: &str) -> Result<u64, BadCommand> {
    let ms: u64 = word
        .parse()
        .map_err(|_| BadCommand(format!("bad milliseconds `{word}`")))?;
    if ms > COMMAND_DELAY_MS_MAX {
        return Err(BadCommand(format!(
            "{ms} ms is more than {COMMAND_DELAY_MS_MAX} ms"
        )));
    }
    Ok(ms)
}

fn parse_probability(word: &str) -> Result<f64, BadCommand> {
    let p: f64 = word
        .parse()
        .map_err(|_| BadCommand(format!("bad probability `{word}`")))?;
    // The range check also rejects NaN.
    if !(0.0..=1.0).contains(&p) {
        return Err(BadCommand(format!("probability {p} is not within 0 to 1")));
    }
    Ok(p)
}
