//! `lockstep-proxy`: a fault-injecting TCP proxy between two lockstep nodes, driven by
//! scripts through a line-based control port.
//!
//! `lockstep-proxy --listen A --upstream B --control C` forwards every connection made
//! to A on to B, and takes control commands (`delay fwd 50`, `blackhole back`, `heal`,
//! `stats`, ...; see `lockstep::proxy::command`) on C, one per line, each answered with
//! one line. Port 0 picks a free port; the first line on stdout names the bound
//! addresses: `lockstep-proxy listen=.. upstream=.. control=..`. The proxy runs until
//! it is killed.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use clap::Parser;
use lockstep::proxy::command::{self, Command, LINE_BYTES_MAX};
use lockstep::proxy::{FaultControl, Proxy};

/// Most control connections served at once; scripts need one or two.
const CONTROL_CONNECTIONS_MAX: usize = 16;

/// A control connection that sends nothing for this long is closed, so that a
/// forgotten client cannot hold one of the few control slots forever.
const CONTROL_IDLE_TIMEOUT_MS: u64 = 600_000;

/// Longest over-long line skipped before the control connection is closed instead.
const SKIP_BYTES_MAX: usize = 64 << 10;

#[derive(Parser)]
#[command(about = "Fault-injecting TCP proxy for lockstep fault runs")]
struct Args {
    /// Address to accept proxied connections on (port 0: any free port).
    #[arg(long)]
    listen: SocketAddr,
    /// Address every proxied connection is forwarded to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Address of the line-based control port (port 0: any free port).
    #[arg(long)]
    control: SocketAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let proxy = match Proxy::start(args.listen, args.upstream) {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("lockstep-proxy: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(args.control) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "lockstep-proxy: cannot listen for control on {}: {e}",
                args.control
            );
            return ExitCode::FAILURE;
        }
    };
    let control_addr = listener.local_addr().unwrap_or(args.control);
    // A script that does not read stdout must not stop the proxy: a failed write of
    // the banner is ignored rather than a panic, as `println!` would make it.
    let mut stdout = io::stdout();
    let _ = writeln!(
        stdout,
        "lockstep-proxy listen={} upstream={} control={}",
        proxy.addr(),
        proxy.upstream(),
        control_addr
    );
    let _ = stdout.flush();

    let sessions = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                // One failed accept (a reset, no file descriptors) must not end the
                // proxy; the pause keeps a persistent failure from spinning.
                eprintln!("lockstep-proxy: control accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if sessions.fetch_add(1, Ordering::SeqCst) >= CONTROL_CONNECTIONS_MAX {
            sessions.fetch_sub(1, Ordering::SeqCst);
            let _ = (&stream).write_all(b"error: too many control connections\n");
            continue;
        }
        let control = proxy.control();
        let sessions = Arc::clone(&sessions);
        let spawned = thread::Builder::new()
            .name("proxy-control".into())
            .spawn(move || {
                if let Err(e) = serve(stream, &control) {
                    eprintln!("lockstep-proxy: control connection: {e}");
                }
                sessions.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            eprintln!("lockstep-proxy: cannot start a control thread: {e}");
        }
    }
}

/// Reads and discards up to the end of the current line. Returns false, so that the
/// connection is closed, if the line does not end within `SKIP_BYTES_MAX` or the
/// input ends.
fn skip_line(reader: &mut impl BufRead) -> io::Result<bool> {
    let mut skipped = Vec::new();
    let n = reader
        .take(SKIP_BYTES_MAX as u64)
        .read_until(b'\n', &mut skipped)?;
    Ok(n > 0 && skipped.last() == Some(&b'\n'))
}

/// Answers the commands of one control connection until it closes or says `quit`.
fn serve(stream: TcpStream, control: &FaultControl) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(CONTROL_IDLE_TIMEOUT_MS)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = Vec::new();
    loop {
        line.clear();
        // Reading at most one byte more than a line may hold tells a long line from
        // a full one without buffering an unbounded amount.
        let limit = LINE_BYTES_MAX as u64 + 1;
        let n = (&mut reader).take(limit).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') && n as u64 == limit {
            writer.write_all(b"error: line too long\n")?;
            // Skip the rest of the line and go on: closing with unread input would
            // reset the connection and could cost the client the answer above.
            if !skip_line(&mut reader)? {
                return Ok(());
            }
            continue;
        }
        let reply = match std::str::from_utf8(&line) {
            Err(_) => "error: line is not UTF-8".to_string(),
            Ok(text) => match command::parse(text.trim()) {
                Err(why) => format!("error: {why}"),
                Ok(Command::Quit) => {
                    writer.write_all(b"ok\n")?;
                    return Ok(());
                }
                Ok(cmd) => command::execute(control, cmd),
            },
        };
        writer.write_all(reply.as_bytes())?;
        writer.write_all(b"\n")?;
    }
}
