//! A blocking MariaDB/MySQL client connection (client/server protocol 4.1) over TCP,
//! with the packet layer, handshake, auth plugins and packet types of `mysql_common`.
//!
//! It does what the front and the tools around it need of a database: log in (with or
//! without a password; `mysql_native_password`, or whatever plugin the server switches
//! to that needs no TLS), run text queries and read their result sets, prepare and
//! execute statements, and hand its socket over to a binlog stream
//! ([`MyConn::into_parts`]).
//!
//! Bad input: every packet is length-checked by the codec (a packet larger than the
//! connection's `packet_bytes_max` is refused before it is buffered), every parse of
//! a server packet returns an error instead of panicking, and an error names the
//! server's address and the operation.
//!
//! Not supported, and refused with a clear error: TLS, the compressed protocol, auth
//! plugins that need TLS or an RSA key exchange.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::BytesMut;
use mysql_common::constants::{CapabilityFlags, Command};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    AuthPlugin, AuthSwitchRequest, Column, ComStmtExecuteRequestBuilder, CommonOkPacket, ErrPacket,
    HandshakePacket, HandshakeResponse, OkPacket, OkPacketDeserializer, StmtPacket,
};
use mysql_common::proto::MySerialize;
use mysql_common::proto::codec::PacketCodec;
use mysql_common::value::Value;

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// Largest packet a client connection accepts unless told otherwise: result sets of
/// settings and small tables.
pub const PACKET_BYTES_DEFAULT: usize = 16 << 20;

/// Most columns or rows a result set may have before it is refused: the connection
/// reads whole result sets into memory.
const RESULT_ROWS_MAX: usize = 1 << 20;

/// How a connection logs in.
#[derive(Clone, Debug)]
pub struct Login {
    pub addr: String,
    pub user: String,
    /// `None`: no password (an empty scramble).
    pub password: Option<Vec<u8>>,
    pub database: Option<String>,
    pub connect_timeout: Duration,
    /// Bound on every read and write once connected; `None` waits forever.
    pub io_timeout: Option<Duration>,
    pub packet_bytes_max: usize,
}

impl Login {
    pub fn new(addr: &str, user: &str) -> Login {
        Login {
            addr: addr.to_owned(),
            user: user.to_owned(),
            password: None,
            database: None,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Some(Duration::from_secs(30)),
            packet_bytes_max: PACKET_BYTES_DEFAULT,
        }
    }

    pub fn password(mut self, password: Option<Vec<u8>>) -> Login {
        self.password = password;
        self
    }

    pub fn database(mut self, database: &str) -> Login {
        self.database = Some(database.to_owned());
        self
    }
}

/// What went wrong on a database connection.
#[derive(Debug, thiserror::Error)]
pub enum MyError {
    #[error("{op} on {addr}: {source}")]
    Io {
        addr: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The server answered with an error packet.
    #[error("{op} on {addr}: the server said ERROR {code} ({state}): {message}")]
    Server {
        addr: String,
        op: &'static str,
        code: u16,
        state: String,
        message: String,
    },
    /// The server sent something the protocol does not allow here.
    #[error("{op} on {addr}: {reason}")]
    Protocol {
        addr: String,
        op: &'static str,
        reason: String,
    },
    /// The server closed the connection.
    #[error("{op} on {addr}: the server closed the connection")]
    Closed { addr: String, op: &'static str },
}

impl MyError {
    /// The server's error code, if the server refused.
    pub fn server_code(&self) -> Option<u16> {
        match self {
            MyError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The answer to a statement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryResult {
    pub affected_rows: u64,
    pub last_insert_id: Option<u64>,
    pub columns: Vec<String>,
    /// Text values, `None` for SQL NULL.
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
}

impl QueryResult {
    /// The first row's value in `column`, as text; `None` if absent or NULL.
    pub fn first(&self, column: usize) -> Option<String> {
        let v = self.rows.first()?.get(column)?.as_ref()?;
        Some(String::from_utf8_lossy(v).into_owned())
    }

    /// Two-column rows (`SHOW VARIABLES`, `SHOW STATUS`) as (name, value) pairs.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.rows
            .iter()
            .filter(|r| r.len() >= 2)
            .map(|r| {
                let text = |v: &Option<Vec<u8>>| {
                    v.as_deref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default()
                };
                (text(&r[0]), text(&r[1]))
            })
            .collect()
    }
}

/// A connection, logged in.
pub struct MyConn {
    addr: String,
    socket: TcpStream,
    codec: PacketCodec,
    input: BytesMut,
    capabilities: CapabilityFlags,
    server_version: String,
    connection_id: u32,
    /// The last answer said that more result sets follow.
    more_results: bool,
}

impl MyConn {
    /// Connects and logs in.
    pub fn connect(login: &Login) -> Result<MyConn, MyError> {
        let addr = login.addr.clone();
        let io = |op, source| MyError::Io {
            addr: addr.clone(),
            op,
            source,
        };
        let socket =
            connect_tcp(&login.addr, login.connect_timeout).map_err(|e| io("connect", e))?;
        socket.set_nodelay(true).map_err(|e| io("connect", e))?;
        // The handshake is bounded by the connect timeout; later I/O by io_timeout.
        socket
            .set_read_timeout(Some(login.connect_timeout))
            .map_err(|e| io("connect", e))?;
        socket
            .set_write_timeout(Some(login.connect_timeout))
            .map_err(|e| io("connect", e))?;
        let mut codec = PacketCodec::default();
        codec.max_allowed_packet = login.packet_bytes_max;
        let mut conn = MyConn {
            addr,
            socket,
            codec,
            input: BytesMut::with_capacity(READ_CHUNK_BYTES),
            capabilities: CapabilityFlags::empty(),
            server_version: String::new(),
            connection_id: 0,
            more_results: false,
        };
        conn.handshake(login)?;
        conn.socket
            .set_read_timeout(login.io_timeout)
            .map_err(|e| conn.io("connect", e))?;
        conn.socket
            .set_write_timeout(login.io_timeout)
            .map_err(|e| conn.io("connect", e))?;
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The server's version string, as its handshake said.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// The server's id of this connection (`CONNECTION_ID()`).
    pub fn connection_id(&self) -> u32 {
        self.connection_id
    }

    pub fn capabilities(&self) -> CapabilityFlags {
        self.capabilities
    }

    fn io(&self, op: &'static str, source: io::Error) -> MyError {
        MyError::Io {
            addr: self.addr.clone(),
            op,
            source,
        }
    }

    fn protocol(&self, op: &'static str, reason: impl Into<String>) -> MyError {
        MyError::Protocol {
            addr: self.addr.clone(),
            op,
            reason: reason.into(),
        }
    }

    fn handshake(&mut self, login: &Login) -> Result<(), MyError> {
        const OP: &str = "login";
        let packet = self.read_packet(OP)?;
        if packet.first() == Some(&0xff) {
            return Err(self.server_error(OP, &packet));
        }
        let hs: HandshakePacket<'_> = ParseBuf(&packet)
            .parse(())
            .map_err(|e| self.protocol(OP, format!("a bad handshake packet: {e}")))?;
        if hs.protocol_version() != 10 {
            return Err(self.protocol(
                OP,
                format!("protocol version {}, not 10", hs.protocol_version()),
            ));
        }
        self.server_version = hs.server_version_str().into_owned();
        self.connection_id = hs.connection_id();
        let wanted = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_LONG_FLAG
            | CapabilityFlags::CLIENT_TRANSACTIONS
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB;
        for needed in [
            CapabilityFlags::CLIENT_PROTOCOL_41,
            CapabilityFlags::CLIENT_SECURE_CONNECTION,
        ] {
            if !hs.capabilities().contains(needed) {
                return Err(self.protocol(OP, format!("the server lacks {needed:?}")));
            }
        }
        let capabilities = wanted & hs.capabilities();
        self.capabilities = capabilities;
        let nonce = hs.nonce();
        let plugin = hs
            .auth_plugin()
            .map(AuthPlugin::into_owned)
            .unwrap_or(AuthPlugin::MysqlNativePassword);
        let scramble = self.scramble(OP, &plugin, &nonce, login)?;
        let version = hs
            .maria_db_server_version_parsed()
            .or_else(|| hs.server_version_parsed())
            .unwrap_or((5, 5, 5));
        let response = HandshakeResponse::new(
            Some(scramble),
            version,
            Some(login.user.as_bytes()),
            login.database.as_deref().map(str::as_bytes),
            Some(plugin.clone()),
            capabilities,
            None,
            u32::try_from(login.packet_bytes_max).unwrap_or(u32::MAX),
        );
        let mut body = Vec::new();
        response.serialize(&mut body);
        self.write_packet(OP, &body)?;
        // Answers: OK, ERR, an auth switch (0xFE), or more auth data (0x01).
        let mut switched = false;
        loop {
            let packet = self.read_packet(OP)?;
            match packet.first() {
                Some(0x00) => return Ok(()),
                Some(0xff) => return Err(self.server_error(OP, &packet)),
                Some(0xfe) if !switched => {
                    switched = true;
                    let switch: AuthSwitchRequest<'_> = ParseBuf(&packet)
                        .parse(())
                        .map_err(|e| self.protocol(OP, format!("a bad auth switch: {e}")))?;
                    let plugin = switch.auth_plugin().into_owned();
                    let nonce = trim_nul(switch.plugin_data()).to_vec();
                    let scramble = self.scramble(OP, &plugin, &nonce, login)?;
                    self.write_packet(OP, &scramble)?;
                }
                Some(0x01) => {
                    return Err(self.protocol(
                        OP,
                        "the server asks for more auth data (an RSA key exchange or \
                         caching_sha2_password's full auth), which needs TLS; give the \
                         account mysql_native_password",
                    ));
                }
                _ => return Err(self.protocol(OP, "an unexpected packet during login")),
            }
        }
    }

    /// The auth response of `plugin` to the server's nonce.
    fn scramble(
        &self,
        op: &'static str,
        plugin: &AuthPlugin<'_>,
        nonce: &[u8],
        login: &Login,
    ) -> Result<Vec<u8>, MyError> {
        let password = login.password.as_deref().unwrap_or_default();
        if password.is_empty() {
            return Ok(Vec::new());
        }
        match plugin {
            AuthPlugin::MysqlNativePassword => Ok(
                mysql_common::auth::plugins::mysql_native_password::scramble_native(
                    nonce, password,
                )
                .map(|s| s.to_vec())
                .unwrap_or_default(),
            ),
            AuthPlugin::CachingSha2Password => {
                let nonce: &[u8; 20] = nonce
                    .get(..20)
                    .and_then(|n| n.try_into().ok())
                    .ok_or_else(|| self.protocol(op, "a short caching_sha2_password nonce"))?;
                Ok(
                    mysql_common::auth::plugins::caching_sha2_password::scramble_sha256(
                        nonce, password,
                    )
                    .map(|s| s.to_vec())
                    .unwrap_or_default(),
                )
            }
            other => Err(self.protocol(
                op,
                format!(
                    "the account uses the auth plugin {}, which this client does not \
                     speak; give it mysql_native_password",
                    String::from_utf8_lossy(other.as_bytes())
                ),
            )),
        }
    }

    /// Runs a text statement and reads its whole answer.
    pub fn query(&mut self, sql: &str) -> Result<QueryResult, MyError> {
        self.send_command(Command::COM_QUERY, sql.as_bytes(), "query")?;
        self.read_result("query")
    }

    /// Runs statements whose answers do not matter beyond success.
    pub fn run(&mut self, sql: &str) -> Result<(), MyError> {
        self.query(sql).map(drop)
    }

    /// `SHOW ...` of name/value rows, as pairs.
    pub fn show(&mut self, sql: &str) -> Result<Vec<(String, String)>, MyError> {
        Ok(self.query(sql)?.pairs())
    }

    /// Prepares a statement; returns its id and number of parameters.
    pub fn prepare(&mut self, sql: &str) -> Result<(u32, u16), MyError> {
        const OP: &str = "prepare";
        self.send_command(Command::COM_STMT_PREPARE, sql.as_bytes(), OP)?;
        let packet = self.read_packet(OP)?;
        if packet.first() == Some(&0xff) {
            return Err(self.server_error(OP, &packet));
        }
        let stmt: StmtPacket = ParseBuf(&packet)
            .parse(())
            .map_err(|e| self.protocol(OP, format!("a bad prepare answer: {e}")))?;
        // Parameter and column definitions, each list ended by an EOF packet.
        for count in [stmt.num_params(), stmt.num_columns()] {
            if count > 0 {
                for _ in 0..count {
                    self.read_packet(OP)?;
                }
                self.read_eof(OP)?;
            }
        }
        Ok((stmt.statement_id(), stmt.num_params()))
    }

    /// Executes a prepared statement with `params`; reads its whole answer.
    pub fn execute(&mut self, stmt: u32, params: &[Value]) -> Result<QueryResult, MyError> {
        const OP: &str = "execute";
        let (request, as_long_data) = ComStmtExecuteRequestBuilder::new(stmt).build(params);
        if as_long_data {
            return Err(self.protocol(OP, "parameters larger than one packet"));
        }
        let mut body = Vec::new();
        request.serialize(&mut body);
        self.codec.reset_seq_id();
        self.write_packet(OP, &body)?;
        self.read_result_binary(OP)
    }

    /// Sends one command packet (sequence 0).
    pub fn send_command(
        &mut self,
        command: Command,
        data: &[u8],
        op: &'static str,
    ) -> Result<(), MyError> {
        let mut body = Vec::with_capacity(data.len() + 1);
        body.push(command as u8);
        body.extend_from_slice(data);
        self.codec.reset_seq_id();
        self.write_packet(op, &body)
    }

    /// Sends a serialized packet as a command (sequence 0).
    pub fn send_packet(
        &mut self,
        packet: &impl MySerialize,
        op: &'static str,
    ) -> Result<(), MyError> {
        let mut body = Vec::new();
        packet.serialize(&mut body);
        self.codec.reset_seq_id();
        self.write_packet(op, &body)
    }

    /// Expects an OK packet (the answer to a command without a result set).
    pub fn read_ok(&mut self, op: &'static str) -> Result<OkPacket<'static>, MyError> {
        let packet = self.read_packet(op)?;
        match packet.first() {
            Some(0x00) => self.parse_ok(op, &packet),
            Some(0xff) => Err(self.server_error(op, &packet)),
            _ => Err(self.protocol(op, "expected an OK packet")),
        }
    }

    fn parse_ok(&self, op: &'static str, packet: &[u8]) -> Result<OkPacket<'static>, MyError> {
        ParseBuf(packet)
            .parse::<OkPacketDeserializer<'_, CommonOkPacket>>(self.capabilities)
            .map(|ok| ok.into_inner().into_owned())
            .map_err(|e| self.protocol(op, format!("a bad OK packet: {e}")))
    }

    fn read_eof(&mut self, op: &'static str) -> Result<(), MyError> {
        let packet = self.read_packet(op)?;
        match packet.first() {
            Some(0xfe) if packet.len() < 9 => Ok(()),
            Some(0xff) => Err(self.server_error(op, &packet)),
            _ => Err(self.protocol(op, "expected an EOF packet")),
        }
    }

    fn read_result(&mut self, op: &'static str) -> Result<QueryResult, MyError> {
        let mut result = self.read_result_set(op, false)?;
        // More results (a multi-statement or a procedure): read and keep the last.
        while self.more_results {
            result = self.read_result_set(op, false)?;
        }
        Ok(result)
    }

    fn read_result_binary(&mut self, op: &'static str) -> Result<QueryResult, MyError> {
        let mut result = self.read_result_set(op, true)?;
        while self.more_results {
            result = self.read_result_set(op, true)?;
        }
        Ok(result)
    }

    fn read_result_set(&mut self, op: &'static str, binary: bool) -> Result<QueryResult, MyError> {
        self.more_results = false;
        let packet = self.read_packet(op)?;
        match packet.first() {
            Some(0x00) => {
                let ok = self.parse_ok(op, &packet)?;
                self.more_results = ok
                    .status_flags()
                    .contains(mysql_common::constants::StatusFlags::SERVER_MORE_RESULTS_EXISTS);
                return Ok(QueryResult {
                    affected_rows: ok.affected_rows(),
                    last_insert_id: ok.last_insert_id(),
                    ..QueryResult::default()
                });
            }
            Some(0xff) => return Err(self.server_error(op, &packet)),
            Some(0xfb) => return Err(self.protocol(op, "the server asks for a local file")),
            _ => {}
        }
        let count = ParseBuf(&packet)
            .checked_eat_lenenc_int()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0 && n <= RESULT_ROWS_MAX)
            .ok_or_else(|| self.protocol(op, "a bad column count"))?;
        let mut result = QueryResult::default();
        for _ in 0..count {
            let packet = self.read_packet(op)?;
            let column: Column = ParseBuf(&packet)
                .parse(())
                .map_err(|e| self.protocol(op, format!("a bad column definition: {e}")))?;
            result.columns.push(column.name_str().into_owned());
        }
        self.read_eof(op)?;
        loop {
            let packet = self.read_packet(op)?;
            match packet.first() {
                Some(0xfe) if packet.len() < 9 => {
                    // EOF: status flags at bytes 3..5.
                    let flags = packet
                        .get(3..5)
                        .map(|b| u16::from_le_bytes([b[0], b[1]]))
                        .unwrap_or(0);
                    self.more_results = flags
                        & mysql_common::constants::StatusFlags::SERVER_MORE_RESULTS_EXISTS.bits()
                        != 0;
                    return Ok(result);
                }
                Some(0xff) => return Err(self.server_error(op, &packet)),
                _ => {}
            }
            if result.rows.len() >= RESULT_ROWS_MAX {
                return Err(self.protocol(op, format!("more than {RESULT_ROWS_MAX} rows")));
            }
            let row = if binary {
                // Binary rows are not decoded: the callers of `execute` run statements
                // without result sets, or only count rows.
                vec![Some(packet)]
            } else {
                self.text_row(op, &packet, count)?
            };
            result.rows.push(row);
        }
    }

    fn text_row(
        &self,
        op: &'static str,
        packet: &[u8],
        count: usize,
    ) -> Result<Vec<Option<Vec<u8>>>, MyError> {
        let mut buf = ParseBuf(packet);
        let mut row = Vec::with_capacity(count);
        for _ in 0..count {
            if buf.0.first() == Some(&0xfb) {
                buf.skip(1);
                row.push(None);
            } else {
                let v = buf
                    .checked_eat_lenenc_str()
                    .ok_or_else(|| self.protocol(op, "a truncated row"))?;
                row.push(Some(v.to_vec()));
            }
        }
        Ok(row)
    }

    fn server_error(&self, op: &'static str, packet: &[u8]) -> MyError {
        match ParseBuf(packet).parse::<ErrPacket<'_>>(self.capabilities) {
            Ok(ErrPacket::Error(e)) => MyError::Server {
                addr: self.addr.clone(),
                op,
                code: e.error_code(),
                state: e
                    .sql_state_ref()
                    .map(|s| s.as_str().into_owned())
                    .unwrap_or_else(|| "HY000".into()),
                message: e.message_str().into_owned(),
            },
            _ => self.protocol(op, "a bad error packet"),
        }
    }

    /// Reads one whole packet (split packets joined).
    pub fn read_packet(&mut self, op: &'static str) -> Result<Vec<u8>, MyError> {
        let mut packet = Vec::new();
        loop {
            match self.codec.decode(&mut self.input, &mut packet) {
                Ok(true) => return Ok(packet),
                Ok(false) => {}
                Err(e) => return Err(self.protocol(op, format!("a bad packet: {e}"))),
            }
            self.fill(op)?;
        }
    }

    /// Whether a whole packet is already buffered, so that the next `read_packet`
    /// does not wait.
    pub fn packet_buffered(&self) -> bool {
        if self.input.len() < 4 {
            return false;
        }
        let len = usize::from(self.input[0])
            | usize::from(self.input[1]) << 8
            | usize::from(self.input[2]) << 16;
        self.input.len() >= 4 + len
    }

    fn fill(&mut self, op: &'static str) -> Result<(), MyError> {
        let start = self.input.len();
        self.input.resize(start + READ_CHUNK_BYTES, 0);
        let read = loop {
            match self.socket.read(&mut self.input[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match read {
            Ok(0) => {
                self.input.truncate(start);
                Err(MyError::Closed {
                    addr: self.addr.clone(),
                    op,
                })
            }
            Ok(n) => {
                self.input.truncate(start + n);
                Ok(())
            }
            Err(e) => {
                self.input.truncate(start);
                Err(self.io(op, e))
            }
        }
    }

    fn write_packet(&mut self, op: &'static str, body: &[u8]) -> Result<(), MyError> {
        let mut out = BytesMut::with_capacity(body.len() + 4);
        self.codec
            .encode(&mut &body[..], &mut out)
            .map_err(|e| self.protocol(op, format!("cannot encode a packet: {e}")))?;
        self.socket.write_all(&out).map_err(|e| self.io(op, e))
    }

    /// The socket and the bytes read past the last packet: for a binlog stream that
    /// takes over the connection.
    pub fn into_parts(self) -> (TcpStream, PacketCodec, BytesMut, String) {
        (self.socket, self.codec, self.input, self.addr)
    }

    /// The socket, to set timeouts or shut it down from another thread.
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }
}

/// Connects to the first address `addr` resolves to that accepts within `timeout`.
fn connect_tcp(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for sa in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing")
    }))
}

fn trim_nul(data: &[u8]) -> &[u8] {
    match data.split_last() {
        Some((0, rest)) => rest,
        _ => data,
    }
}

/// Quotes `text` as an SQL string literal.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}
