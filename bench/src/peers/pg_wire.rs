//! A minimal PostgreSQL client (frontend/backend protocol 3.0) over one TCP connection.
//!
//! Why not the `postgres` crate: it brings an async runtime and a TLS stack into the
//! workspace's build for what is here a handful of messages on loopback with `trust`
//! authentication: a startup, simple queries for setup and checks, and one prepared
//! statement executed with a binary parameter per commit (Bind, Execute, Sync in one
//! write, as any driver's prepared statement does). A commit is one implicit
//! transaction ended by Sync; its reply is complete at ReadyForQuery.
//!
//! Protocol errors and server errors are errors of the call, with the server's message.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;

use crate::Error;

/// The `bytea` type's OID, for the prepared statement's parameter.
const BYTEA_OID: u32 = 17;

/// Protocol version 3.0.
const PROTOCOL_3: u32 = 196_608;

pub struct PgConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    out: Vec<u8>,
    body: Vec<u8>,
}

impl PgConn {
    /// Connects to `addr` as `user` (trust authentication) to database `user`.
    pub fn connect(addr: &str, user: &str) -> Result<PgConn, Error> {
        let (reader, writer) = super::connect(addr)?;
        let mut c = PgConn {
            reader,
            writer,
            out: Vec::with_capacity(1024),
            body: Vec::with_capacity(1024),
        };
        let mut startup = Vec::new();
        startup.extend_from_slice(&PROTOCOL_3.to_be_bytes());
        for (k, v) in [
            ("user", user),
            ("database", user),
            ("application_name", "lockstep-bench"),
        ] {
            cstr(&mut startup, k);
            cstr(&mut startup, v);
        }
        startup.push(0);
        c.out.clear();
        c.out
            .extend_from_slice(&(startup.len() as u32 + 4).to_be_bytes());
        c.out.extend_from_slice(&startup);
        c.send().map_err(|e| format!("PostgreSQL startup: {e}"))?;
        loop {
            match c.read_message()? {
                b'R' => {
                    let code = be_u32(&c.body, 0)?;
                    if code != 0 {
                        return Err(format!(
                            "PostgreSQL at {addr} asks for authentication (method {code}); \
                             the benchmark's servers use trust on loopback"
                        )
                        .into());
                    }
                }
                b'Z' => return Ok(c),
                // ParameterStatus, BackendKeyData, NoticeResponse.
                b'S' | b'K' | b'N' => {}
                t => {
                    return Err(
                        format!("PostgreSQL startup: unexpected message {:?}", t as char).into(),
                    );
                }
            }
        }
    }

    /// Runs `sql` (simple query protocol) and returns the text of every row's columns
    /// (NULL as `None`).
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, Error> {
        self.out.clear();
        message(&mut self.out, b'Q', |b| cstr(b, sql));
        self.send()
            .map_err(|e| format!("PostgreSQL query {sql:?}: {e}"))?;
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            match self.read_message()? {
                b'D' => rows.push(self.data_row()?),
                b'E' => failed = Some(error_text(&self.body)),
                b'Z' => break,
                // RowDescription, CommandComplete, EmptyQueryResponse, NoticeResponse.
                b'T' | b'C' | b'I' | b'N' | b'S' => {}
                t => {
                    return Err(format!("query {sql:?}: unexpected message {:?}", t as char).into());
                }
            }
        }
        match failed {
            Some(e) => Err(format!("PostgreSQL query {sql:?}: {e}").into()),
            None => Ok(rows),
        }
    }

    /// The first column of the first row of `sql`.
    pub fn query_one(&mut self, sql: &str) -> Result<String, Error> {
        self.query(sql)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
            .ok_or_else(|| format!("PostgreSQL query {sql:?}: no value").into())
    }

    /// Prepares `sql`, with one `bytea` parameter, as statement `name`.
    pub fn prepare(&mut self, name: &str, sql: &str) -> Result<(), Error> {
        self.out.clear();
        message(&mut self.out, b'P', |b| {
            cstr(b, name);
            cstr(b, sql);
            b.extend_from_slice(&1u16.to_be_bytes());
            b.extend_from_slice(&BYTEA_OID.to_be_bytes());
        });
        message(&mut self.out, b'S', |_| {});
        self.send()
            .map_err(|e| format!("PostgreSQL prepare {sql:?}: {e}"))?;
        self.finish(&format!("prepare {sql:?}"))
    }

    /// Executes prepared statement `name` with `param` as its binary `bytea`
    /// parameter, as one implicit transaction, and waits for its end.
    pub fn execute(&mut self, name: &str, param: &[u8]) -> Result<(), Error> {
        self.out.clear();
        message(&mut self.out, b'B', |b| {
            cstr(b, "");
            cstr(b, name);
            // One parameter format code (binary), one parameter, no result formats.
            b.extend_from_slice(&1u16.to_be_bytes());
            b.extend_from_slice(&1u16.to_be_bytes());
            b.extend_from_slice(&1u16.to_be_bytes());
            b.extend_from_slice(&(param.len() as u32).to_be_bytes());
            b.extend_from_slice(param);
            b.extend_from_slice(&0u16.to_be_bytes());
        });
        message(&mut self.out, b'E', |b| {
            cstr(b, "");
            b.extend_from_slice(&0u32.to_be_bytes());
        });
        message(&mut self.out, b'S', |_| {});
        self.send()
            .map_err(|e| format!("PostgreSQL execute {name}: {e}"))?;
        self.finish(&format!("execute {name}"))
    }

    /// Reads replies until ReadyForQuery; an ErrorResponse on the way fails the call.
    fn finish(&mut self, what: &str) -> Result<(), Error> {
        let mut failed = None;
        loop {
            match self.read_message()? {
                b'Z' => break,
                b'E' => failed = Some(error_text(&self.body)),
                // ParseComplete, BindComplete, DataRow, CommandComplete, NoData, notices.
                b'1' | b'2' | b'D' | b'C' | b'n' | b'N' | b'S' | b'T' => {}
                t => {
                    return Err(
                        format!("PostgreSQL {what}: unexpected message {:?}", t as char).into(),
                    );
                }
            }
        }
        match failed {
            Some(e) => Err(format!("PostgreSQL {what}: {e}").into()),
            None => Ok(()),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        self.writer.write_all(&self.out)
    }

    /// Reads one message into `self.body`; returns its type.
    fn read_message(&mut self) -> Result<u8, Error> {
        let mut head = [0u8; 5];
        self.reader
            .read_exact(&mut head)
            .map_err(|e| format!("PostgreSQL read: {e}"))?;
        let len = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
        if !(4..=(64 << 20)).contains(&len) {
            return Err(format!("PostgreSQL: bad message length {len}").into());
        }
        self.body.resize(len - 4, 0);
        self.reader
            .read_exact(&mut self.body)
            .map_err(|e| format!("PostgreSQL read: {e}"))?;
        Ok(head[0])
    }

    fn data_row(&self) -> Result<Vec<Option<String>>, Error> {
        let b = &self.body;
        let n = u16::from_be_bytes(b.get(..2).ok_or("short DataRow")?.try_into()?) as usize;
        let mut at = 2;
        let mut row = Vec::with_capacity(n);
        for _ in 0..n {
            let len = be_u32(b, at)? as i32;
            at += 4;
            if len < 0 {
                row.push(None);
                continue;
            }
            let v = b.get(at..at + len as usize).ok_or("short DataRow")?;
            row.push(Some(String::from_utf8_lossy(v).into_owned()));
            at += len as usize;
        }
        Ok(row)
    }
}

/// Appends a message of type `t` whose body `fill` writes.
fn message(out: &mut Vec<u8>, t: u8, fill: impl FnOnce(&mut Vec<u8>)) {
    out.push(t);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    fill(out);
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn be_u32(b: &[u8], at: usize) -> Result<u32, Error> {
    Ok(u32::from_be_bytes(
        b.get(at..at + 4)
            .ok_or("PostgreSQL: short message")?
            .try_into()?,
    ))
}

/// The severity, code and message fields of an ErrorResponse.
fn error_text(body: &[u8]) -> String {
    let mut parts = Vec::new();
    for field in body.split(|&b| b == 0) {
        if let Some((&t, v)) = field.split_first()
            && matches!(t, b'S' | b'C' | b'M')
        {
            parts.push(String::from_utf8_lossy(v).into_owned());
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_length_and_errors_read_well() {
        let mut out = Vec::new();
        message(&mut out, b'Q', |b| cstr(b, "select 1"));
        assert_eq!(out[0], b'Q');
        assert_eq!(u32::from_be_bytes(out[1..5].try_into().unwrap()), 4 + 9);
        assert_eq!(&out[5..], b"select 1\0");
        let body = b"SERROR\0C42P01\0Mrelation \"t\" does not exist\0\0";
        assert_eq!(
            error_text(body),
            "ERROR 42P01 relation \"t\" does not exist"
        );
    }
}
