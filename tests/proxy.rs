//! The fault-injecting proxy: bytes pass intact and in order, each fault does what the
//! module docs say and no more, and the binary's control port answers every line.
//!
//! Each test holds both ends of one proxied connection (the client socket and the
//! upstream's accepted socket), so it can write and read on either side directly.
//! Timing assertions are lower bounds only; the machine is noisy.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lockstep::proxy::command::{self, Directions};
use lockstep::proxy::{Direction, HELD_BYTES_MAX, Proxy};

/// Longest a test waits for bytes that should arrive.
const ARRIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a test watches for bytes that should not arrive.
const QUIET: Duration = Duration::from_millis(200);

/// A proxy in front of a listener, with one connection through it.
struct Rig {
    proxy: Proxy,
    upstream: TcpListener,
    client: TcpStream,
    server: TcpStream,
}

impl Rig {
    fn new() -> Rig {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy::start(loopback0(), upstream.local_addr().unwrap()).unwrap();
        let (client, server) = connect(&proxy, &upstream);
        Rig {
            proxy,
            upstream,
            client,
            server,
        }
    }
}

fn loopback0() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Connects a client through the proxy and returns it with the upstream's end.
/// Returns once the proxy has registered the connection, so that a fault set next
/// applies to it as to a connection accepted long before.
fn connect(proxy: &Proxy, upstream: &TcpListener) -> (TcpStream, TcpStream) {
    let control = proxy.control();
    let accepted = control.stats().connections_accepted;
    let client = TcpStream::connect(proxy.addr()).unwrap();
    let (server, _) = upstream.accept().unwrap();
    eventually("the proxy registering the connection", || {
        control.stats().connections_accepted > accepted
    });
    client.set_read_timeout(Some(ARRIVE_TIMEOUT)).unwrap();
    server.set_read_timeout(Some(ARRIVE_TIMEOUT)).unwrap();
    (client, server)
}

/// Bytes whose position can be checked: a break in order or a lost byte shows.
fn pattern(start: usize, len: usize) -> Vec<u8> {
    (start..start + len).map(|i| (i % 251) as u8).collect()
}

fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).unwrap();
    buf
}

/// Asserts that nothing arrives on `stream` for a while.
fn assert_quiet(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(QUIET)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected no bytes, got {other:?}"),
    }
    stream.set_read_timeout(Some(ARRIVE_TIMEOUT)).unwrap();
}

/// Asserts that the peer of `stream` closed: end-of-stream or a reset, not a timeout.
fn assert_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected a closed connection, got {other:?}"),
    }
}

/// Waits until `done` holds, for at most `ARRIVE_TIMEOUT`.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + ARRIVE_TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn pass_carries_bytes_intact_and_in_order_both_ways() {
    let Rig {
        proxy,
        mut client,
        mut server,
        ..
    } = Rig::new();
    let forward = pattern(0, 3 << 20);
    let backward = pattern(7, 1 << 20);
    let writer = {
        let mut client = client.try_clone().unwrap();
        let forward = forward.clone();
        std::thread::spawn(move || client.write_all(&forward).unwrap())
    };
    assert_eq!(read_n(&mut server, forward.len()), forward);
    writer.join().unwrap();
    server.write_all(&backward).unwrap();
    assert_eq!(read_n(&mut client, backward.len()), backward);

    let control = proxy.control();
    eventually("counters", || {
        let s = control.stats();
        s.forward_bytes == forward.len() as u64 && s.backward_bytes == backward.len() as u64
    });
    let stats = control.stats();
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.connections_open, 1);
    assert_eq!(stats.connections_cut, 0);
}

#[test]
fn half_close_passes_through_after_the_data() {
    // The proxy is bound to a name: a field left to `..` is dropped at once.
    let Rig {
        proxy: _proxy,
        mut client,
        mut server,
        ..
    } = Rig::new();
    client.write_all(b"request").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"request");
    // The other direction still flows after the client's half-close.
    server.write_all(b"reply").unwrap();
    assert_eq!(read_n(&mut client, 5), b"reply");
}

#[test]
fn delay_holds_bytes_at_least_the_delay_and_keeps_order() {
    let Rig {
        proxy,
        mut client,
        mut server,
        ..
    } = Rig::new();
    let control = proxy.control();
    control.delay(Direction::Forward, 150, 0);
    let sent = Instant::now();
    client.write_all(b"ping").unwrap();
    assert_eq!(read_n(&mut server, 4), b"ping");
    let held = sent.elapsed();
    assert!(held >= Duration::from_millis(150), "held only {held:?}");

    // The backward direction is not delayed: a reply is back well before the forward
    // delay would have allowed. This bound is loose on purpose (the lower bound is
    // what matters above); it only catches a delay applied to the wrong direction.
    control.delay(Direction::Forward, 0, 0);
    control.delay(Direction::Backward, 0, 0);
    control.delay(Direction::Forward, 20, 30);
    let data = pattern(0, 200 * 1000);
    for piece in data.chunks(1000) {
        client.write_all(piece).unwrap();
    }
    assert_eq!(
        read_n(&mut server, data.len()),
        data,
        "jitter must not reorder"
    );
}

#[test]
fn delay_applies_per_direction() {
    let Rig {
        proxy,
        mut client,
        mut server,
        ..
    } = Rig::new();
    proxy.control().delay(Direction::Backward, 150, 0);
    let sent = Instant::now();
    server.write_all(b"pong").unwrap();
    assert_eq!(read_n(&mut client, 4), b"pong");
    assert!(sent.elapsed() >= Duration::from_millis(150));
}

#[test]
fn blackhole_withholds_one_direction_while_the_other_flows_and_heal_delivers() {
    let Rig {
        proxy,
        mut client,
        mut server,
        ..
    } = Rig::new();
    let control = proxy.control();
    control.blackhole(Direction::Forward);
    let withheld = pattern(0, 300_000);
    for piece in withheld.chunks(10_000) {
        client.write_all(piece).unwrap();
    }
    assert_quiet(&mut server);
    // The backward direction keeps flowing during the one-way partition.
    server.write_all(b"still here").unwrap();
    assert_eq!(read_n(&mut client, 10), b"still here");
    eventually("withheld bytes held", || {
        control.stats().held_bytes == withheld.len() as u64
    });
    assert_eq!(control.stats().forward_bytes, 0);

    control.heal();
    assert_eq!(read_n(&mut server, withheld.len()), withheld);
    assert_eq!(control.stats().held_bytes, 0);
    // After the heal the connection is the same one and keeps working.
    client.write_all(b"after").unwrap();
    assert_eq!(read_n(&mut server, 5), b"after");
}

#[test]
fn blackhole_backward_and_pass_one_direction() {
    let Rig {
        proxy,
        mut client,
        mut server,
        ..
    } = Rig::new();
    let control = proxy.control();
    control.blackhole(Direction::Backward);
    server.write_all(b"held").unwrap();
    client.write_all(b"flows").unwrap();
    assert_eq!(read_n(&mut server, 5), b"flows");
    assert_quiet(&mut client);
    control.pass(Direction::Backward);
    assert_eq!(read_n(&mut client, 4), b"held");
}

#[test]
fn blackhole_stops_reading_at_the_bound() {
    let Rig {
        proxy,
        mut client,
        mut server,
        ..
    } = Rig::new();
    let control = proxy.control();
    control.blackhole(Direction::Forward);
    // Write until the sender is pushed back: the proxy holds at most HELD_BYTES_MAX and
    // then leaves the rest in the kernel buffers, which fill.
    client.set_nonblocking(true).unwrap();
    let piece_bytes = 1 << 20;
    let give_up_bytes = 4 * HELD_BYTES_MAX;
    let mut written = 0;
    let mut idle_turns = 0;
    while idle_turns < 20 {
        assert!(
            written < give_up_bytes,
            "no back-pressure after {written} bytes"
        );
        match client.write(&pattern(written, piece_bytes)) {
            Ok(n) => {
                written += n;
                idle_turns = 0;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                idle_turns += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    let held = control.stats().held_bytes;
    assert!(held <= HELD_BYTES_MAX as u64, "held {held}");
    assert!(held >= (HELD_BYTES_MAX / 2) as u64, "held only {held}");
    assert!(written > held as usize, "kernel buffers took the rest");

    control.heal();
    let got = read_n(&mut server, written);
    assert!(
        got == pattern(0, written),
        "bytes changed under back-pressure"
    );
}

#[test]
fn reset_all_closes_every_connection() {
    let Rig {
        proxy,
        upstream,
        mut client,
        mut server,
    } = Rig::new();
    let (mut client2, mut server2) = connect(&proxy, &upstream);
    let control = proxy.control();
    control.blackhole(Direction::Forward);
    client.write_all(b"lost in the reset").unwrap();
    assert_eq!(control.reset_all(), 2);
    for stream in [&mut client, &mut server, &mut client2, &mut server2] {
        assert_closed(stream);
    }
    let stats = control.stats();
    assert_eq!(stats.connections_cut, 2);
    assert_eq!(stats.held_bytes, 0);
    // New connections still work: a reset is not a refusal.
    control.heal();
    let (mut client3, mut server3) = connect(&proxy, &upstream);
    client3.write_all(b"new").unwrap();
    assert_eq!(read_n(&mut server3, 3), b"new");
}

#[test]
fn refuse_cuts_current_connections_and_closes_new_ones() {
    let Rig {
        proxy,
        upstream,
        mut client,
        mut server,
    } = Rig::new();
    let control = proxy.control();
    control.refuse();
    assert_closed(&mut client);
    assert_closed(&mut server);

    let mut refused = TcpStream::connect(proxy.addr()).unwrap();
    refused.set_read_timeout(Some(ARRIVE_TIMEOUT)).unwrap();
    assert_closed(&mut refused);
    upstream.set_nonblocking(true).unwrap();
    assert!(
        upstream.accept().is_err(),
        "a refused connection reached the upstream"
    );
    upstream.set_nonblocking(false).unwrap();
    let stats = control.stats();
    assert_eq!(stats.connections_refused, 1);
    assert_eq!(stats.connections_cut, 1);

    control.heal();
    let (mut client2, mut server2) = connect(&proxy, &upstream);
    client2.write_all(b"back").unwrap();
    assert_eq!(read_n(&mut server2, 4), b"back");
}

#[test]
fn partition_holds_both_directions_and_refuses_new_connections() {
    let Rig {
        proxy,
        upstream,
        mut client,
        mut server,
    } = Rig::new();
    let control = proxy.control();
    control.partition();
    client.write_all(b"to server").unwrap();
    server.write_all(b"to client").unwrap();
    assert_quiet(&mut server);
    assert_quiet(&mut client);
    let mut refused = TcpStream::connect(proxy.addr()).unwrap();
    refused.set_read_timeout(Some(ARRIVE_TIMEOUT)).unwrap();
    assert_closed(&mut refused);

    control.heal();
    assert_eq!(read_n(&mut server, 9), b"to server");
    assert_eq!(read_n(&mut client, 9), b"to client");
    let (mut client2, mut server2) = connect(&proxy, &upstream);
    client2.write_all(b"x").unwrap();
    assert_eq!(read_n(&mut server2, 1), b"x");
}

#[test]
fn drop_with_probability_one_cuts_the_connection() {
    let Rig {
        proxy,
        mut client,
        mut server,
        ..
    } = Rig::new();
    let control = proxy.control();
    // Probability zero never cuts.
    control.drop_connections(Direction::Forward, 0.0);
    client.write_all(b"kept").unwrap();
    assert_eq!(read_n(&mut server, 4), b"kept");

    control.drop_connections(Direction::Forward, 1.0);
    client.write_all(b"doomed").unwrap();
    assert_closed(&mut server);
    assert_closed(&mut client);
    assert_eq!(control.stats().connections_cut, 1);
    assert_eq!(
        control.stats().forward_bytes,
        4,
        "the doomed chunk was delivered"
    );
}

#[test]
fn dropping_the_proxy_closes_connections_and_the_listener() {
    let Rig {
        proxy,
        mut client,
        mut server,
        ..
    } = Rig::new();
    let addr = proxy.addr();
    let control = proxy.control();
    control.blackhole(Direction::Forward);
    client.write_all(b"held at drop").unwrap();
    let dropped = Instant::now();
    drop(proxy);
    assert!(dropped.elapsed() < ARRIVE_TIMEOUT, "drop took too long");
    assert_closed(&mut client);
    assert_closed(&mut server);
    // The accept thread owned the listener; a refused connect shows that it ended.
    assert!(TcpStream::connect(addr).is_err());
    // A handle that outlives its proxy still answers.
    assert_eq!(control.stats().connections_open, 0);
}

#[test]
fn unreachable_upstream_closes_the_client() {
    let gone = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = gone.local_addr().unwrap();
    drop(gone);
    let proxy = Proxy::start(loopback0(), upstream).unwrap();
    let mut client = TcpStream::connect(proxy.addr()).unwrap();
    client.set_read_timeout(Some(ARRIVE_TIMEOUT)).unwrap();
    assert_closed(&mut client);
    assert_eq!(proxy.control().stats().upstream_failures, 1);
}

#[test]
fn commands_parse_and_bad_ones_are_errors() {
    assert_eq!(
        command::parse("delay fwd 50 10"),
        Ok(command::Command::Delay {
            directions: Directions::One(Direction::Forward),
            delay_ms: 50,
            jitter_ms: 10,
        })
    );
    assert_eq!(
        command::parse("  blackhole   both "),
        Ok(command::Command::Blackhole(Directions::Both))
    );
    for bad in [
        "",
        "explode",
        "delay",
        "delay sideways 5",
        "delay fwd -1",
        "delay fwd 5 6 7",
        "delay fwd 99999999",
        "drop fwd 1.5",
        "drop fwd NaN",
        "blackhole",
        "heal now",
        "pass fwd back",
    ] {
        assert!(command::parse(bad).is_err(), "`{bad}` was accepted");
    }
}

#[test]
fn binary_answers_every_control_line() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep-proxy"))
        .args(["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"])
        .arg("--upstream")
        .arg(upstream.local_addr().unwrap().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let addr_of = |key: &str| -> SocketAddr {
        let word = banner
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {banner:?}"));
        word.parse().unwrap()
    };
    let (listen, control_addr) = (addr_of("listen="), addr_of("control="));

    let control = TcpStream::connect(control_addr).unwrap();
    control.set_read_timeout(Some(ARRIVE_TIMEOUT)).unwrap();
    let mut replies = BufReader::new(control.try_clone().unwrap());
    let mut ask = |line: &str| -> String {
        (&control)
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        let mut reply = String::new();
        replies.read_line(&mut reply).unwrap();
        reply.trim_end().to_string()
    };

    assert!(ask("stats").starts_with("forward_bytes=0 "));
    assert!(ask("bogus").starts_with("error: unknown command"));
    assert!(ask("drop fwd 2").starts_with("error: "));
    assert!(ask("delay sideways 5").starts_with("error: "));
    assert_eq!(ask("blackhole fwd"), "ok");
    assert_eq!(ask("delay back 5 1"), "ok");
    assert_eq!(
        ask("faults"),
        "fwd=blackhole back=delay:5+1 refuse_new=false"
    );

    // The control port drives the data path.
    let mut client = TcpStream::connect(listen).unwrap();
    let (mut server, _) = upstream.accept().unwrap();
    client.write_all(b"abc").unwrap();
    assert_quiet(&mut server);
    assert_eq!(ask("heal"), "ok");
    server.set_read_timeout(Some(ARRIVE_TIMEOUT)).unwrap();
    assert_eq!(read_n(&mut server, 3), b"abc");
    assert_eq!(ask("reset"), "ok cut=1");
    assert!(ask("stats").contains(" connections_cut=1 "));
    // A line too long is refused, and the control connection goes on.
    assert_eq!(ask(&"x".repeat(5000)), "error: line too long");
    assert_eq!(ask("heal"), "ok");
    assert_eq!(ask("quit"), "ok");

    child.kill().unwrap();
    child.wait().unwrap();
}
