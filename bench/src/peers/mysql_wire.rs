//! A minimal MariaDB/MySQL client (client/server protocol 4.1) over one TCP connection.
//!
//! Why not the `mysql` crate: it is a large dependency tree (TLS, compression, a URL
//! parser, a connection pool) that would add minutes to the workspace's build, for what
//! is here a password-less account on loopback, text queries for setup and checks, and
//! one prepared INSERT executed with a binary parameter per commit
//! (COM_STMT_EXECUTE, as any driver's prepared statement does). With autocommit on, the
//! OK packet of the INSERT is the commit's answer.
//!
//! Not supported, and refused with an error: passwords, TLS, packets of 16 MiB or more.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;

use crate::Error;

const CLIENT_LONG_PASSWORD: u32 = 1;
const CLIENT_CONNECT_WITH_DB: u32 = 8;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_TRANSACTIONS: u32 = 0x2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;

const COM_QUERY: u8 = 0x03;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;

/// MYSQL_TYPE_BLOB, the parameter type of a payload.
const TYPE_BLOB: u8 = 0xfc;

/// utf8mb4_general_ci.
const CHARSET: u8 = 45;

/// Largest payload of one packet; a larger one would be split, which this client does
/// not do.
const PACKET_BYTES_MAX: usize = (1 << 24) - 1;

pub struct MyConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    seq: u8,
    packet: Vec<u8>,
    out: Vec<u8>,
}

impl MyConn {
    /// Connects to `addr` as `user` (no password) with default database `db`.
    pub fn connect(addr: &str, user: &str, db: &str) -> Result<MyConn, Error> {
        let (reader, writer) = super::connect(addr)?;
        let mut c = MyConn {
            reader,
            writer,
            seq: 0,
            packet: Vec::with_capacity(1024),
            out: Vec::with_capacity(1024),
        };
        c.read_packet()?;
        if c.packet.first() == Some(&0xff) {
            return Err(format!("MariaDB at {addr} refused: {}", error_text(&c.packet)).into());
        }
        if c.packet.first() != Some(&10) {
            return Err(format!("MariaDB at {addr}: not protocol 10").into());
        }
        let mut body = Vec::new();
        let caps = CLIENT_LONG_PASSWORD
            | CLIENT_CONNECT_WITH_DB
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH;
        body.extend_from_slice(&caps.to_le_bytes());
        body.extend_from_slice(&(PACKET_BYTES_MAX as u32).to_le_bytes());
        body.push(CHARSET);
        body.extend_from_slice(&[0; 23]);
        cstr(&mut body, user);
        // An empty password: an empty scramble.
        body.push(0);
        cstr(&mut body, db);
        cstr(&mut body, "mysql_native_password");
        c.write_packet(&body)?;
        loop {
            c.read_packet()?;
            match c.packet.first() {
                Some(0x00) => return Ok(c),
                Some(0xff) => {
                    return Err(format!(
                        "MariaDB at {addr}: login as {user}: {}",
                        error_text(&c.packet)
                    )
                    .into());
                }
                // An authentication switch: the empty password's answer is empty.
                Some(0xfe) => c.write_packet(&[])?,
                _ => return Err(format!("MariaDB at {addr}: unexpected login reply").into()),
            }
        }
    }

    /// Runs `sql` and returns the text of every row's columns (NULL as `None`); a
    /// statement without a result set returns no rows.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, Error> {
        self.command(COM_QUERY, sql.as_bytes())?;
        let what = || format!("MariaDB query {sql:?}");
        self.read_packet()?;
        match self.packet.first() {
            Some(0x00) => return Ok(Vec::new()),
            Some(0xff) => return Err(format!("{}: {}", what(), error_text(&self.packet)).into()),
            _ => {}
        }
        let columns = lenenc_int(&self.packet, &mut 0).ok_or_else(what)? as usize;
        // Column definitions, then an EOF packet.
        for _ in 0..columns {
            self.read_packet()?;
        }
        self.read_packet()?;
        let mut rows = Vec::new();
        loop {
            self.read_packet()?;
            match self.packet.first() {
                Some(0xfe) if self.packet.len() < 9 => return Ok(rows),
                Some(0xff) => {
                    return Err(format!("{}: {}", what(), error_text(&self.packet)).into());
                }
                _ => {}
            }
            let mut at = 0;
            let mut row = Vec::with_capacity(columns);
            for _ in 0..columns {
                if self.packet.get(at) == Some(&0xfb) {
                    at += 1;
                    row.push(None);
                    continue;
                }
                let len = lenenc_int(&self.packet, &mut at).ok_or_else(what)? as usize;
                let v = self.packet.get(at..at + len).ok_or_else(what)?;
                row.push(Some(String::from_utf8_lossy(v).into_owned()));
                at += len;
            }
            rows.push(row);
        }
    }

    /// `SHOW ... LIKE` as (name, value) pairs.
    pub fn show(&mut self, sql: &str) -> Result<Vec<(String, String)>, Error> {
        Ok(self
            .query(sql)?
            .into_iter()
            .map(|r| {
                let mut r = r.into_iter().map(Option::unwrap_or_default);
                (r.next().unwrap_or_default(), r.next().unwrap_or_default())
            })
            .collect())
    }

    /// Prepares `sql` (with one parameter); returns the statement id.
    pub fn prepare(&mut self, sql: &str) -> Result<u32, Error> {
        self.command(COM_STMT_PREPARE, sql.as_bytes())?;
        self.read_packet()?;
        if self.packet.first() != Some(&0x00) || self.packet.len() < 12 {
            return Err(format!("MariaDB prepare {sql:?}: {}", error_text(&self.packet)).into());
        }
        let p = &self.packet;
        let id = u32::from_le_bytes(p[1..5].try_into().expect("4 bytes"));
        let columns = u16::from_le_bytes(p[5..7].try_into().expect("2 bytes"));
        let params = u16::from_le_bytes(p[7..9].try_into().expect("2 bytes"));
        if params != 1 {
            return Err(format!("MariaDB prepare {sql:?}: {params} parameters, not 1").into());
        }
        // Parameter definitions and EOF, then column definitions and EOF.
        for n in [params, columns] {
            if n > 0 {
                for _ in 0..=n {
                    self.read_packet()?;
                }
            }
        }
        Ok(id)
    }

    /// Executes statement `id` with `param` as its one BLOB parameter; waits for its OK.
    pub fn execute(&mut self, id: u32, param: &[u8]) -> Result<(), Error> {
        let mut body = std::mem::take(&mut self.out);
        body.clear();
        body.extend_from_slice(&id.to_le_bytes());
        // No cursor, one iteration, no NULL parameter, types sent.
        body.push(0);
        body.extend_from_slice(&1u32.to_le_bytes());
        body.push(0);
        body.push(1);
        body.extend_from_slice(&[TYPE_BLOB, 0]);
        put_lenenc_int(&mut body, param.len() as u64);
        body.extend_from_slice(param);
        let sent = self.command(COM_STMT_EXECUTE, &body);
        self.out = body;
        sent?;
        self.read_packet()?;
        match self.packet.first() {
            Some(0x00) => Ok(()),
            _ => Err(format!("MariaDB execute: {}", error_text(&self.packet)).into()),
        }
    }

    fn command(&mut self, com: u8, body: &[u8]) -> Result<(), Error> {
        self.seq = 0;
        let mut p = Vec::with_capacity(body.len() + 1);
        p.push(com);
        p.extend_from_slice(body);
        self.write_packet(&p)
    }

    fn write_packet(&mut self, body: &[u8]) -> Result<(), Error> {
        if body.len() >= PACKET_BYTES_MAX {
            return Err(format!("MariaDB: a {} B packet is too large here", body.len()).into());
        }
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes()[..3]);
        frame.push(self.seq);
        frame.extend_from_slice(body);
        self.seq = self.seq.wrapping_add(1);
        self.writer
            .write_all(&frame)
            .map_err(|e| format!("MariaDB write: {e}").into())
    }

    fn read_packet(&mut self) -> Result<(), Error> {
        let mut head = [0u8; 4];
        self.reader
            .read_exact(&mut head)
            .map_err(|e| format!("MariaDB read: {e}"))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
        if len == PACKET_BYTES_MAX {
            return Err("MariaDB: a reply of 16 MiB or more is not supported here".into());
        }
        self.seq = head[3].wrapping_add(1);
        self.packet.resize(len, 0);
        self.reader
            .read_exact(&mut self.packet)
            .map_err(|e| format!("MariaDB read: {e}").into())
    }
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn put_lenenc_int(out: &mut Vec<u8>, v: u64) {
    match v {
        0..0xfb => out.push(v as u8),
        0xfb..0x1_0000 => {
            out.push(0xfc);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..0x100_0000 => {
            out.push(0xfd);
            out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn lenenc_int(b: &[u8], at: &mut usize) -> Option<u64> {
    let first = *b.get(*at)?;
    let n = match first {
        0..=0xfa => {
            *at += 1;
            return Some(u64::from(first));
        }
        // 0xfb is NULL, which callers handle before this.
        0xfb => return None,
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = b.get(*at + 1..*at + 1 + n)?;
    *at += 1 + n;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(bytes);
    Some(u64::from_le_bytes(v))
}

/// The code and message of an ERR packet.
fn error_text(p: &[u8]) -> String {
    if p.first() != Some(&0xff) || p.len() < 3 {
        return "unexpected reply".into();
    }
    let code = u16::from_le_bytes([p[1], p[2]]);
    // "#" and a 5-character SQL state come before the message.
    let msg = if p.get(3) == Some(&b'#') {
        p.get(9..).unwrap_or_default()
    } else {
        &p[3..]
    };
    format!("error {code}: {}", String::from_utf8_lossy(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_encoded_integers_round_trip() {
        for v in [
            0u64,
            250,
            251,
            65_535,
            65_536,
            16_777_215,
            16_777_216,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_lenenc_int(&mut b, v);
            let mut at = 0;
            assert_eq!(lenenc_int(&b, &mut at), Some(v));
            assert_eq!(at, b.len());
        }
        assert_eq!(
            error_text(b"\xff\x48\x04#42000Syntax error"),
            "error 1096: Syntax error"
        );
    }
}
