//! A fake MariaDB primary that speaks just enough of the protocol for the front (the
//! handshake, its settings query, SET statements, COM_REGISTER_SLAVE, COM_BINLOG_DUMP)
//! and serves the events of a real binlog file, with a fault injected where a test
//! asks: a flipped bit, a packet cut short, the connection closed in the middle of a
//! transaction. It records every semi-sync ACK it receives.
//!
//! Each dump starts after the position the replica asks for (`@slave_connect_state`),
//! as a real primary does, so a front that reconnects after a fault gets the rest.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use lockstep::front::events::{HEADER_BYTES, Header, kind};
use lockstep::front::gtid::GtidState;
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::packets::HandshakePacket;
use mysql_common::proto::MySerialize;

/// A fault of one dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Serve every event.
    None,
    /// Flip a bit in the middle of the `n`-th event sent.
    FlipBit(usize),
    /// Send the `n`-th event's packet header and half its bytes, then close.
    CutPacket(usize),
    /// Close the connection before the `n`-th event (after a transaction's first event).
    CloseBefore(usize),
}

/// The settings the fake primary reports (those of a lossless primary).
pub const SETTINGS: [(&str, &str); 13] = [
    ("version", "10.11.19-MariaDB-fake"),
    ("server_id", "1"),
    ("log_bin", "1"),
    ("binlog_format", "ROW"),
    ("sync_binlog", "1"),
    ("innodb_flush_log_at_trx_commit", "1"),
    ("gtid_strict_mode", "1"),
    ("binlog_checksum", "CRC32"),
    ("gtid_binlog_pos", ""),
    ("rpl_semi_sync_master_enabled", "1"),
    ("rpl_semi_sync_master_wait_point", "AFTER_SYNC"),
    ("rpl_semi_sync_master_wait_no_slave", "1"),
    ("rpl_semi_sync_master_timeout", "4294967295"),
];

/// (dump number from 1, position, file name) of every ACK received, in order.
pub type Acks = Arc<Mutex<Vec<(usize, u64, String)>>>;

pub struct FakePrimary {
    pub addr: SocketAddr,
    /// (dump number from 1, position, file name) of every ACK received, in order.
    pub acks: Acks,
    /// Dumps served so far.
    pub dumps: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakePrimary {
    /// Serves `binlog` (a binlog file's bytes); the dumps use `faults` in turn (the
    /// last one for every later dump).
    pub fn start(binlog: &'static [u8], faults: Vec<Fault>) -> FakePrimary {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let acks = Arc::new(Mutex::new(Vec::new()));
        let dumps = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, d, s) = (acks.clone(), dumps.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut served = 0;
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        sock.set_nonblocking(false).unwrap();
                        let fault = faults[served.min(faults.len() - 1)];
                        let (a, d) = (a.clone(), d.clone());
                        let dumped = serve(sock, binlog, fault, &a, &d);
                        if dumped {
                            served += 1;
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakePrimary {
            addr,
            acks,
            dumps,
            stop,
            thread: Some(thread),
        }
    }

    pub fn acks(&self) -> Vec<(usize, u64, String)> {
        self.acks.lock().unwrap().clone()
    }
}

impl Drop for FakePrimary {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The events of a binlog file.
pub fn events(file: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(&file[..4], b"\xfebin");
    let mut out = Vec::new();
    let mut at = 4;
    while at < file.len() {
        let size = Header::parse(&file[at..]).unwrap().size as usize;
        out.push(file[at..at + size].to_vec());
        at += size;
    }
    out
}

struct Conn {
    sock: TcpStream,
    seq: u8,
}

impl Conn {
    fn read_packet(&mut self) -> Option<Vec<u8>> {
        let mut head = [0u8; 4];
        self.sock.read_exact(&mut head).ok()?;
        let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
        self.seq = head[3].wrapping_add(1);
        let mut body = vec![0u8; len];
        self.sock.read_exact(&mut body).ok()?;
        Some(body)
    }

    fn write_packet(&mut self, body: &[u8]) -> std::io::Result<()> {
        let len = body.len() as u32;
        let mut out = len.to_le_bytes()[..3].to_vec();
        out.push(self.seq);
        self.seq = self.seq.wrapping_add(1);
        out.extend_from_slice(body);
        self.sock.write_all(&out)
    }

    fn ok(&mut self) -> std::io::Result<()> {
        self.write_packet(&[0, 0, 0, 2, 0, 0, 0])
    }

    fn eof(&mut self) -> std::io::Result<()> {
        self.write_packet(&[0xfe, 0, 0, 2, 0])
    }

    /// A one-row text result set.
    fn row(&mut self, columns: &[&str], values: &[&str]) -> std::io::Result<()> {
        self.write_packet(&[columns.len() as u8])?;
        for c in columns {
            let mut def = Vec::new();
            for s in ["def", "", "", "", c, ""] {
                def.push(s.len() as u8);
                def.extend_from_slice(s.as_bytes());
            }
            def.push(0x0c);
            def.extend_from_slice(&33u16.to_le_bytes());
            def.extend_from_slice(&1024u32.to_le_bytes());
            def.push(0xfd); // VAR_STRING
            def.extend_from_slice(&[0, 0, 0, 0, 0]);
            self.write_packet(&def)?;
        }
        self.eof()?;
        let mut row = Vec::new();
        for v in values {
            row.push(v.len() as u8);
            row.extend_from_slice(v.as_bytes());
        }
        self.write_packet(&row)?;
        self.eof()
    }
}

/// Serves one connection; returns whether it ran a dump.
fn serve(sock: TcpStream, binlog: &[u8], fault: Fault, acks: &Acks, dumps: &Mutex<usize>) -> bool {
    let mut c = Conn { sock, seq: 0 };
    let caps = CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_TRANSACTIONS;
    let hs = HandshakePacket::new(
        10,
        &b"10.11.19-MariaDB-fake"[..],
        7,
        *b"abcdefgh",
        Some(&b"ijklmnopqrst\0"[..]),
        caps,
        33,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(&b"mysql_native_password"[..]),
    );
    let mut body = Vec::new();
    hs.serialize(&mut body);
    if c.write_packet(&body).is_err() || c.read_packet().is_none() || c.ok().is_err() {
        return false;
    }
    let mut position = GtidState::new();
    loop {
        let Some(cmd) = c.read_packet() else {
            return false;
        };
        let reply = match cmd.first() {
            Some(0x03) => {
                let sql = String::from_utf8_lossy(&cmd[1..]).to_string();
                if sql.starts_with("SELECT @@global.") {
                    let names: Vec<&str> = SETTINGS.iter().map(|(k, _)| *k).collect();
                    let values: Vec<&str> = SETTINGS.iter().map(|(_, v)| *v).collect();
                    c.row(&names, &values)
                } else {
                    if let Some(v) = sql.strip_prefix("SET @slave_connect_state = ") {
                        position = GtidState::parse(v.trim_matches('\'')).unwrap();
                    }
                    c.ok()
                }
            }
            Some(0x15) => c.ok(),
            Some(0x12) => {
                let number = {
                    let mut d = dumps.lock().unwrap();
                    *d += 1;
                    *d
                };
                dump(&mut c, binlog, &position, fault, acks, number);
                return true;
            }
            _ => return false,
        };
        if reply.is_err() {
            return false;
        }
    }
}

/// Sends the binlog's events after `position`, with the fault; then reads ACKs until
/// the replica goes away.
fn dump(
    c: &mut Conn,
    binlog: &[u8],
    position: &GtidState,
    fault: Fault,
    acks: &Acks,
    number: usize,
) {
    let all = events(binlog);
    // A fake ROTATE naming the file, then the format description.
    let mut rotate_body = 4u64.to_le_bytes().to_vec();
    rotate_body.extend_from_slice(b"binlog.000001");
    let mut send: Vec<(Vec<u8>, bool)> = vec![(event(kind::ROTATE, 0, 0x20, &rotate_body), false)];
    send.push((all[0].clone(), false));
    // The transactions after the position, the last event of each asking for an ACK.
    let mut skipping = false;
    for (i, e) in all.iter().enumerate().skip(1) {
        let k = e[4];
        if k == kind::GTID {
            let seq = u64::from_le_bytes(e[HEADER_BYTES..HEADER_BYTES + 8].try_into().unwrap());
            skipping = position.get(0).is_some_and(|g| g.seq >= seq);
        }
        if skipping || matches!(k, kind::GTID_LIST | kind::BINLOG_CHECKPOINT | kind::ROTATE) {
            continue;
        }
        let last = all
            .get(i + 1)
            .is_none_or(|n| n[4] == kind::GTID || n[4] == kind::ROTATE);
        send.push((e.clone(), last));
    }
    // ACKs arrive on the same connection.
    let reader = c.sock.try_clone().unwrap();
    let acks_thread = {
        let acks = acks.clone();
        std::thread::spawn(move || read_acks(reader, &acks, number))
    };
    for (n, (e, ack)) in send.into_iter().enumerate() {
        let mut packet = vec![0x00, 0xef, u8::from(ack)];
        let mut e = e;
        match fault {
            Fault::FlipBit(at) if at == n => {
                let mid = e.len() / 2;
                e[mid] ^= 0x04;
            }
            Fault::CloseBefore(at) if at == n => break,
            Fault::CutPacket(at) if at == n => {
                packet.extend_from_slice(&e);
                let len = packet.len() as u32;
                let mut out = len.to_le_bytes()[..3].to_vec();
                out.push(c.seq);
                out.extend_from_slice(&packet[..packet.len() / 2]);
                let _ = c.sock.write_all(&out);
                break;
            }
            _ => {}
        }
        packet.extend_from_slice(&e);
        if c.write_packet(&packet).is_err() {
            break;
        }
        // After an event that asks for an ACK a semi-sync primary starts its packet
        // numbering again.
        if ack {
            c.seq = 1;
        }
    }
    if matches!(fault, Fault::None) {
        // Stay up (heartbeats are not needed: the front waits three heartbeat periods
        // and reconnects, which a test does not mind) until the replica leaves.
        let _ = acks_thread.join();
    } else {
        let _ = c.sock.shutdown(std::net::Shutdown::Both);
        let _ = acks_thread.join();
    }
}

fn read_acks(mut sock: TcpStream, acks: &Mutex<Vec<(usize, u64, String)>>, number: usize) {
    loop {
        let mut head = [0u8; 4];
        if sock.read_exact(&mut head).is_err() {
            return;
        }
        let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
        let mut body = vec![0u8; len];
        if sock.read_exact(&mut body).is_err() {
            return;
        }
        assert_eq!(head[3], 0, "an ACK has sequence number 0");
        assert_eq!(body[0], 0xef, "an ACK starts with 0xEF");
        let pos = u64::from_le_bytes(body[1..9].try_into().unwrap());
        acks.lock()
            .unwrap()
            .push((number, pos, String::from_utf8_lossy(&body[9..]).to_string()));
    }
}

/// An event with a valid CRC32.
pub fn event(kind: u8, log_pos: u32, flags: u16, body: &[u8]) -> Vec<u8> {
    let size = (HEADER_BYTES + body.len() + 4) as u32;
    let mut e = Vec::with_capacity(size as usize);
    e.extend_from_slice(&0u32.to_le_bytes());
    e.push(kind);
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&size.to_le_bytes());
    e.extend_from_slice(&log_pos.to_le_bytes());
    e.extend_from_slice(&flags.to_le_bytes());
    e.extend_from_slice(body);
    let crc = crc32fast::hash(&e);
    e.extend_from_slice(&crc.to_le_bytes());
    e
}
