//! A minimal HTTP/1.1 client: POST with a JSON body on one keep-alive connection.
//!
//! Why not a crate: etcd's v3 JSON gateway is the only HTTP server here, on loopback,
//! answering small JSON documents; an HTTP stack (or a gRPC one for etcd's native API)
//! would add more to the workspace's build than the rest of the benchmark. Replies are
//! read by `Content-Length` or chunked transfer encoding, the two ways Go's HTTP server
//! sends them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use crate::Error;

/// Largest reply accepted.
const REPLY_BYTES_MAX: usize = 16 << 20;

pub struct Http {
    addr: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    out: Vec<u8>,
    line: String,
}

impl Http {
    pub fn connect(addr: &str) -> Result<Http, Error> {
        let (reader, writer) = super::connect(addr)?;
        Ok(Http {
            addr: addr.to_string(),
            reader,
            writer,
            out: Vec::with_capacity(1024),
            line: String::new(),
        })
    }

    /// POSTs `body` (JSON) to `path`; returns the status code and the reply's body.
    pub fn post(&mut self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), Error> {
        self.out.clear();
        write!(
            self.out,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .expect("writing to a Vec");
        self.out.extend_from_slice(body);
        self.writer
            .write_all(&self.out)
            .map_err(|e| format!("HTTP POST {path} to {}: {e}", self.addr))?;
        self.read_reply()
            .map_err(|e| format!("HTTP POST {path} to {}: {e}", self.addr).into())
    }

    fn read_reply(&mut self) -> Result<(u16, Vec<u8>), String> {
        self.read_line()?;
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {:?}", self.line))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            self.read_line()?;
            let l = self.line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((k, v)) = l.split_once(':') else {
                return Err(format!("bad header {l:?}"));
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = Some(
                    v.parse::<usize>()
                        .map_err(|_| format!("bad length {v:?}"))?,
                );
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.eq_ignore_ascii_case("chunked");
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                self.read_line()?;
                let size = self.line.trim_end().split(';').next().unwrap_or_default();
                let n = usize::from_str_radix(size.trim(), 16)
                    .map_err(|_| format!("bad chunk size {size:?}"))?;
                if body.len() + n > REPLY_BYTES_MAX {
                    return Err("reply too large".into());
                }
                let at = body.len();
                body.resize(at + n + 2, 0);
                self.reader
                    .read_exact(&mut body[at..])
                    .map_err(|e| format!("read: {e}"))?;
                body.truncate(at + n);
                if n == 0 {
                    // The last chunk's CRLF was read with it; trailers are not used.
                    return Ok((status, body));
                }
            }
        }
        let n = length.ok_or("a reply without length")?;
        if n > REPLY_BYTES_MAX {
            return Err("reply too large".into());
        }
        body.resize(n, 0);
        self.reader
            .read_exact(&mut body)
            .map_err(|e| format!("read: {e}"))?;
        Ok((status, body))
    }

    fn read_line(&mut self) -> Result<(), String> {
        self.line.clear();
        match self.reader.read_line(&mut self.line) {
            Ok(0) => Err("the server closed the connection".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read: {e}")),
        }
    }
}

/// Standard base64 with padding, as etcd's JSON gateway takes keys and values.
pub fn base64(data: &[u8], out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = Vec::new();
            base64(plain.as_bytes(), &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), coded);
        }
    }

    #[test]
    fn replies_by_length_and_by_chunks() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            for reply in [
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
                "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab\n\r\n1\r\nc\r\n0\r\n\r\n",
            ] {
                // The request: headers up to the blank line, then 2 bytes of body.
                let mut line = String::new();
                loop {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = [0u8; 2];
                r.read_exact(&mut body).unwrap();
                s.write_all(reply.as_bytes()).unwrap();
            }
        });
        let mut h = Http::connect(&addr).unwrap();
        assert_eq!(h.post("/a", b"{}").unwrap(), (200, b"{}".to_vec()));
        assert_eq!(h.post("/b", b"{}").unwrap(), (404, b"ab\nc".to_vec()));
        server.join().unwrap();
    }
}
