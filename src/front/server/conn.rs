//! The server side of a MariaDB client connection: the handshake with
//! `mysql_native_password`, command packets in, OK / ERR / result sets out.
//!
//! Bad input: a command packet larger than [`COMMAND_BYTES_MAX`] is refused before it
//! is buffered; a client that does not answer the handshake within the connection's
//! read timeout is dropped; a wrong password is refused with MariaDB's own error
//! (1045) and the connection closed.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::packets::HandshakePacket;
use mysql_common::proto::MySerialize;

/// Largest command a replica sends (a statement of its setup, COM_REGISTER_SLAVE,
/// COM_BINLOG_DUMP): they are all small.
pub const COMMAND_BYTES_MAX: usize = 64 << 10;

/// The largest chunk of a packet: a packet of this size continues in the next chunk.
const CHUNK_BYTES_MAX: usize = 0xff_ffff;

/// MariaDB's error codes and SQL states this server answers with.
pub mod code {
    pub const ACCESS_DENIED: (u16, &str) = (1045, "28000");
    pub const UNKNOWN_COM: (u16, &str) = (1047, "08S01");
    pub const NOT_SUPPORTED: (u16, &str) = (1235, "42000");
    pub const MASTER_FATAL_READING_BINLOG: (u16, &str) = (1236, "HY000");
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{op} with {peer}: {source}")]
    Io {
        peer: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{peer}: {reason}")]
    Protocol { peer: String, reason: String },
    #[error("{peer} closed the connection")]
    Closed { peer: String },
}

/// One client connection, after [`ServerConn::accept`] authenticated it.
pub struct ServerConn {
    sock: TcpStream,
    peer: String,
    seq: u8,
    pub user: String,
    capabilities: CapabilityFlags,
}

impl ServerConn {
    /// Runs the handshake: sends a fresh 20-byte scramble, checks the client's answer
    /// against `user` and `password` (`mysql_native_password`), answers OK or ERR 1045.
    pub fn accept(
        sock: TcpStream,
        server_version: &str,
        connection_id: u32,
        user: &str,
        password: &[u8],
    ) -> Result<ServerConn, ConnError> {
        let peer = sock
            .peer_addr()
            .map_or_else(|_| "a client".to_owned(), |a| a.to_string());
        let mut c = ServerConn {
            sock,
            peer,
            seq: 0,
            user: String::new(),
            capabilities: CapabilityFlags::empty(),
        };
        let scramble = scramble()?;
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_LONG_FLAG
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB
            | CapabilityFlags::CLIENT_TRANSACTIONS;
        let mut part_2 = scramble[8..].to_vec();
        part_2.push(0);
        let hs = HandshakePacket::new(
            10,
            server_version.as_bytes(),
            connection_id,
            scramble[..8].try_into().expect("8 bytes"),
            Some(part_2),
            caps,
            45,
            StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            Some(&b"mysql_native_password"[..]),
        );
        let mut body = Vec::new();
        hs.serialize(&mut body);
        c.write_packet(&body)?;
        let answer = c.read_packet()?;
        let response = Response::parse(&answer).ok_or_else(|| {
            c.protocol(format!(
                "a bad handshake response of {} bytes",
                answer.len()
            ))
        })?;
        c.capabilities = response.capabilities & caps;
        c.user = String::from_utf8_lossy(response.user).into_owned();
        let plugin_ok = response
            .plugin
            .is_none_or(|p| p.is_empty() || p == b"mysql_native_password");
        let expected = if password.is_empty() {
            Vec::new()
        } else {
            mysql_common::auth::plugins::mysql_native_password::scramble_native(&scramble, password)
                .map(|s| s.to_vec())
                .unwrap_or_default()
        };
        // Compared in full whatever differs first, so that timing tells nothing.
        let given = response.auth;
        let same = given.len() == expected.len()
            && given
                .iter()
                .zip(&expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !(plugin_ok && same && c.user == user) {
            let (code, state) = code::ACCESS_DENIED;
            let msg = format!(
                "Access denied for user '{}'@'{}' (using password: {})",
                c.user,
                c.peer.rsplit_once(':').map_or(c.peer.as_str(), |(h, _)| h),
                if given.is_empty() { "NO" } else { "YES" }
            );
            let _ = c.err(code, state, &msg);
            return Err(c.protocol(msg));
        }
        c.ok()?;
        Ok(c)
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    fn protocol(&self, reason: impl Into<String>) -> ConnError {
        ConnError::Protocol {
            peer: self.peer.clone(),
            reason: reason.into(),
        }
    }

    fn io(&self, op: &'static str, source: io::Error) -> ConnError {
        ConnError::Io {
            peer: self.peer.clone(),
            op,
            source,
        }
    }

    /// Reads one command packet; a new command restarts the sequence numbers.
    pub fn read_command(&mut self) -> Result<Vec<u8>, ConnError> {
        self.read_packet()
    }

    fn read_packet(&mut self) -> Result<Vec<u8>, ConnError> {
        let mut head = [0u8; 4];
        match self.sock.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(ConnError::Closed {
                    peer: self.peer.clone(),
                });
            }
            Err(e) => return Err(self.io("read", e)),
        }
        let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
        if len > COMMAND_BYTES_MAX || len == CHUNK_BYTES_MAX {
            return Err(self.protocol(format!(
                "a command of {len} bytes or more (at most {COMMAND_BYTES_MAX})"
            )));
        }
        self.seq = head[3].wrapping_add(1);
        let mut body = vec![0u8; len];
        self.sock
            .read_exact(&mut body)
            .map_err(|e| self.io("read", e))?;
        Ok(body)
    }

    /// Writes one packet (split into chunks if it is large).
    pub fn write_packet(&mut self, body: &[u8]) -> Result<(), ConnError> {
        let mut out = Vec::with_capacity(body.len() + 4 + body.len() / CHUNK_BYTES_MAX * 4);
        let mut rest = body;
        loop {
            let n = rest.len().min(CHUNK_BYTES_MAX);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
            out.push(self.seq);
            self.seq = self.seq.wrapping_add(1);
            out.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if n < CHUNK_BYTES_MAX {
                break;
            }
        }
        self.sock.write_all(&out).map_err(|e| self.io("write", e))
    }

    pub fn ok(&mut self) -> Result<(), ConnError> {
        // OK: no rows, no insert id, autocommit, no warnings.
        self.write_packet(&[0x00, 0, 0, 0x02, 0, 0, 0])
    }

    pub fn err(&mut self, code: u16, state: &str, message: &str) -> Result<(), ConnError> {
        let mut body = vec![0xff];
        body.extend_from_slice(&code.to_le_bytes());
        body.push(b'#');
        body.extend_from_slice(state.as_bytes());
        body.extend_from_slice(message.as_bytes());
        self.write_packet(&body)
    }

    fn eof(&mut self) -> Result<(), ConnError> {
        self.write_packet(&[0xfe, 0, 0, 0x02, 0])
    }

    /// A text result set: column names, then rows of values (`None` for NULL).
    pub fn result_set(
        &mut self,
        columns: &[&str],
        rows: &[Vec<Option<String>>],
    ) -> Result<(), ConnError> {
        let mut count = Vec::new();
        put_lenenc_int(&mut count, columns.len() as u64);
        self.write_packet(&count)?;
        for c in columns {
            let mut def = Vec::new();
            for s in ["def", "", "", "", c, ""] {
                put_lenenc_str(&mut def, s.as_bytes());
            }
            def.push(0x0c);
            def.extend_from_slice(&33u16.to_le_bytes()); // utf8_general_ci
            def.extend_from_slice(&1024u32.to_le_bytes());
            def.push(0xfd); // VAR_STRING
            def.extend_from_slice(&[0, 0, 0, 0, 0]);
            self.write_packet(&def)?;
        }
        self.eof()?;
        for row in rows {
            let mut r = Vec::new();
            for v in row {
                match v {
                    Some(v) => put_lenenc_str(&mut r, v.as_bytes()),
                    None => r.push(0xfb),
                }
            }
            self.write_packet(&r)?;
        }
        self.eof()
    }

    /// Whether the client asked for `flag` and this server offered it.
    pub fn has(&self, flag: CapabilityFlags) -> bool {
        self.capabilities.contains(flag)
    }
}

/// The fields of a client's handshake response this server needs. Parsed by hand,
/// field by field as the client's own flags say, and tolerant of the optional fields
/// at its end: clients differ there (MariaDB's replica sends fewer than `mysql_common`'s
/// parser requires).
struct Response<'a> {
    capabilities: CapabilityFlags,
    user: &'a [u8],
    auth: &'a [u8],
    plugin: Option<&'a [u8]>,
}

impl<'a> Response<'a> {
    fn parse(p: &'a [u8]) -> Option<Response<'a>> {
        // Capabilities u32, max packet u32, collation u8, 23 bytes of filler.
        let flags = u32::from_le_bytes(p.get(..4)?.try_into().ok()?);
        let capabilities = CapabilityFlags::from_bits_truncate(flags);
        let mut rest = p.get(32..)?;
        let nul = rest.iter().position(|&b| b == 0)?;
        let user = &rest[..nul];
        rest = &rest[nul + 1..];
        let auth;
        if capabilities.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) {
            let (len, used) = lenenc(rest)?;
            auth = rest.get(used..used + len)?;
            rest = &rest[used + len..];
        } else if capabilities.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
            let len = usize::from(*rest.first()?);
            auth = rest.get(1..1 + len)?;
            rest = &rest[1 + len..];
        } else {
            let nul = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            auth = &rest[..nul];
            rest = rest.get(nul + 1..).unwrap_or_default();
        }
        if capabilities.contains(CapabilityFlags::CLIENT_CONNECT_WITH_DB) && !rest.is_empty() {
            let nul = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            rest = rest.get(nul + 1..).unwrap_or_default();
        }
        let plugin = (capabilities.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH)
            && !rest.is_empty())
        .then(|| {
            let nul = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            &rest[..nul]
        });
        Some(Response {
            capabilities,
            user,
            auth,
            plugin,
        })
    }
}

/// A length-encoded integer: its value and the bytes it took.
fn lenenc(b: &[u8]) -> Option<(usize, usize)> {
    let first = *b.first()?;
    let n = |k: usize| -> Option<u64> {
        let mut v = [0u8; 8];
        v[..k].copy_from_slice(b.get(1..1 + k)?);
        Some(u64::from_le_bytes(v))
    };
    let (v, used) = match first {
        0..=250 => (u64::from(first), 1),
        0xfc => (n(2)?, 3),
        0xfd => (n(3)?, 4),
        0xfe => (n(8)?, 9),
        _ => return None,
    };
    Some((usize::try_from(v).ok()?, used))
}

fn put_lenenc_int(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=250 => out.push(v as u8),
        251..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn put_lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    put_lenenc_int(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// 20 random printable bytes, as MariaDB's scramble (from the kernel's generator).
fn scramble() -> Result<[u8; 20], ConnError> {
    let mut raw = [0u8; 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|source| ConnError::Io {
            peer: "/dev/urandom".into(),
            op: "read a scramble from",
            source,
        })?;
    // Printable and never NUL, so that the handshake's NUL-terminated part holds it.
    Ok(raw.map(|b| 0x21 + b % 0x5e))
}
