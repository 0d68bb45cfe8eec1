//! The cluster secret and the handshake that proves a node knows it.
//!
//! When the configuration names a `secret_file`, every connection between nodes (the
//! primary's links to its members, the controllers' links, a new node's join) opens
//! with a mutual challenge–response before its hello; the secret itself never
//! travels:
//!
//! ```text
//! dialer → node   AuthHello     { node_id, nonce_d }
//! node → dialer   AuthChallenge { nonce_n, proof_n = HMAC(secret, "node",   id, nonce_d, nonce_n) }
//! dialer → node   AuthProof     {          proof_d = HMAC(secret, "dialer", id, nonce_d, nonce_n) }
//! ```
//!
//! Each side checks the other's proof (in constant time) before it believes anything
//! else on the connection: the dialer learns that it reached a member of its cluster,
//! the node that the dialer is one. The nonces are fresh on both sides, so a recorded
//! handshake cannot be replayed, and the role label keeps one side's proof from being
//! reflected back as the other's. A wrong secret is refused with `Error
//! (unauthorized)` and logged by the node; the dialer reports it too.
//!
//! Clients (`ClientHello`) do not take part: they are the database's, not the
//! cluster's.

use std::fmt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::constants::AUTH_BYTES;
use crate::replication::NodeId;
use crate::wire::{ErrorCode, FrameDecoder, Message, RequestId};

/// The shortest secret accepted: 128 bits of a random token.
pub const SECRET_BYTES_MIN: usize = 16;

/// The cluster secret, read from the `secret_file` of the configuration.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

/// Why a secret is refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "the secret is {len} bytes; at least {SECRET_BYTES_MIN} are needed (for example: head -c 32 /dev/urandom | base64)"
    )]
    Short { len: usize },
    #[error("mode {mode:o} lets group or others read the secret; chmod 600 it")]
    Exposed { mode: u32 },
    #[error(transparent)]
    Io(std::io::Error),
    #[error("secret_file {}: {source}", path.display())]
    File {
        path: std::path::PathBuf,
        source: Box<SecretError>,
    },
}

impl SecretError {
    /// The error with the file named by the setting or flag it came from
    /// (`admin_token_file`, `--secret-file`) rather than `secret_file`.
    pub fn named(&self, what: &str) -> String {
        match self {
            SecretError::File { path, source } => format!("{what} {}: {source}", path.display()),
            other => format!("{what}: {other}"),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Reads a secret file: its content without surrounding white space, at least
    /// [`SECRET_BYTES_MIN`] bytes.
    ///
    /// The file must not be readable by group or others (mode 600 or stricter): a
    /// secret anyone on the machine can read proves nothing.
    pub fn load(path: &Path) -> Result<Secret, SecretError> {
        use std::os::unix::fs::PermissionsExt;
        let in_file = |source| SecretError::File {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(|e| in_file(Box::new(SecretError::Io(e))))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(in_file(Box::new(SecretError::Exposed { mode })));
        }
        let bytes = std::fs::read(path).map_err(|e| in_file(Box::new(SecretError::Io(e))))?;
        Secret::new(bytes.trim_ascii()).map_err(|e| in_file(Box::new(e)))
    }

    pub fn new(bytes: &[u8]) -> Result<Secret, SecretError> {
        if bytes.len() < SECRET_BYTES_MIN {
            return Err(SecretError::Short { len: bytes.len() });
        }
        Ok(Secret(bytes.to_vec()))
    }

    /// The admin endpoints' bearer token: HMAC-SHA256 of a fixed label under the
    /// secret, in hex. Every node of the cluster derives the same token; it proves
    /// knowledge of the secret without being the secret (a leaked token does not let
    /// anyone pass the nodes' handshake).
    pub fn admin_token(&self) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(b"lockstep-admin-token-1\0");
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn proof(
        &self,
        role: &[u8],
        dialer: NodeId,
        dialer_nonce: &[u8; AUTH_BYTES],
        node_nonce: &[u8; AUTH_BYTES],
    ) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(b"lockstep-auth-1\0");
        mac.update(role);
        mac.update(&dialer.to_le_bytes());
        mac.update(dialer_nonce);
        mac.update(node_nonce);
        mac
    }
}

const NODE: &[u8] = b"node\0";
const DIALER: &[u8] = b"dialer\0";

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The other side does not know this cluster's secret (or has none).
    #[error("{0}")]
    Refused(String),
    /// The connection failed or broke the protocol.
    #[error("{0}")]
    Io(String),
}

fn nonce() -> Result<[u8; AUTH_BYTES], AuthError> {
    let mut n = [0u8; AUTH_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut n))
        .map_err(|e| AuthError::Io(format!("read a nonce from /dev/urandom: {e}")))?;
    Ok(n)
}

fn send(sock: &TcpStream, m: Message<'_>) -> Result<(), AuthError> {
    let mut out = Vec::new();
    m.encode_into(RequestId(0), &mut out)
        .map_err(|e| AuthError::Io(e.to_string()))?;
    (&*sock)
        .write_all(&out)
        .map_err(|e| AuthError::Io(format!("send {}: {e}", m.kind())))
}

/// Reads the next frame and hands it to `f`.
fn next<T>(
    sock: &TcpStream,
    decoder: &mut FrameDecoder,
    f: impl FnOnce(Message<'_>) -> Result<T, AuthError>,
) -> Result<T, AuthError> {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => return f(frame.message),
            Ok(None) => {}
            Err(e) => return Err(AuthError::Io(format!("handshake: {e}"))),
        }
        match decoder.read_from(&mut &*sock) {
            Ok(0) => return Err(AuthError::Io("closed during the handshake".into())),
            Ok(_) => {}
            Err(e) => return Err(AuthError::Io(format!("handshake: {e}"))),
        }
    }
}

/// The dialer's side, before its hello: proves to the node that this node
/// (`node_id`) knows `secret`, and checks that the node does too. Frames after the
/// handshake stay in `decoder`.
pub fn dial(
    sock: &TcpStream,
    decoder: &mut FrameDecoder,
    secret: &Secret,
    node_id: NodeId,
) -> Result<(), AuthError> {
    let mine = nonce()?;
    send(
        sock,
        Message::AuthHello {
            node_id,
            nonce: &mine,
        },
    )?;
    let (theirs, proof) = next(sock, decoder, |m| match m {
        Message::AuthChallenge { nonce, proof } => Ok((*nonce, *proof)),
        Message::Error {
            code: ErrorCode::Unauthorized,
            message,
        } => Err(AuthError::Refused(message.to_string())),
        Message::Error { code, message } => Err(AuthError::Io(format!(
            "answered the handshake with an error ({}): {message}",
            code.as_str()
        ))),
        other => Err(AuthError::Io(format!(
            "answered the handshake with {}",
            other.kind()
        ))),
    })?;
    if secret
        .proof(NODE, node_id, &mine, &theirs)
        .verify_slice(&proof)
        .is_err()
    {
        // Told to the node too, so that both sides log why.
        refuse(sock, "wrong cluster secret");
        return Err(AuthError::Refused(
            "the node does not know this cluster's secret (wrong cluster secret)".into(),
        ));
    }
    let answer = secret
        .proof(DIALER, node_id, &mine, &theirs)
        .finalize()
        .into_bytes();
    send(
        sock,
        Message::AuthProof {
            proof: answer.as_slice().try_into().expect("SHA-256 is 32 bytes"),
        },
    )
}

/// The node's side, after the dialer's `AuthHello` (`node_id`, `their_nonce`): with no
/// secret configured the dialer is told so; otherwise the dialer's proof is checked.
/// On success the dialer is `node_id`.
pub fn accept(
    sock: &TcpStream,
    decoder: &mut FrameDecoder,
    secret: Option<&Secret>,
    node_id: NodeId,
    their_nonce: &[u8; AUTH_BYTES],
) -> Result<(), AuthError> {
    let Some(secret) = secret else {
        let why = "this node has no cluster secret (no secret_file in its configuration)";
        refuse(sock, why);
        return Err(AuthError::Refused(why.into()));
    };
    let mine = nonce()?;
    let proof = secret
        .proof(NODE, node_id, their_nonce, &mine)
        .finalize()
        .into_bytes();
    send(
        sock,
        Message::AuthChallenge {
            nonce: &mine,
            proof: proof.as_slice().try_into().expect("SHA-256 is 32 bytes"),
        },
    )?;
    let answer = next(sock, decoder, |m| match m {
        Message::AuthProof { proof } => Ok(*proof),
        Message::Error { message, .. } => Err(AuthError::Refused(format!(
            "node {node_id} refused this node's proof: {message}"
        ))),
        other => Err(AuthError::Io(format!(
            "answered the challenge with {}",
            other.kind()
        ))),
    })?;
    if secret
        .proof(DIALER, node_id, their_nonce, &mine)
        .verify_slice(&answer)
        .is_err()
    {
        let why = "wrong cluster secret";
        refuse(sock, why);
        return Err(AuthError::Refused(why.into()));
    }
    Ok(())
}

/// Logs a refusal line, at most once per ten seconds for the same `who`: a node with
/// the wrong secret is dialled, and dials, every few hundred milliseconds.
pub fn log_refusal(who: &str, line: &str) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    static LAST: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let map = last.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    if map
        .get(who)
        .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(10))
    {
        return;
    }
    map.insert(who.to_string(), now);
    tracing::warn!(target: "lockstep::auth", peer = who, "{line}");
}

/// Compares two tokens in time that does not depend on where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Reads an admin token file: its first line, at least 16 bytes; mode 600 or stricter.
pub fn load_admin_token(path: &Path) -> Result<String, String> {
    let secret = Secret::load(path).map_err(|e| e.named("admin_token_file"))?;
    let text = String::from_utf8(secret.0)
        .map_err(|_| format!("admin_token_file {}: not UTF-8 text", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

/// Tells the other side why it is refused, and closes.
pub fn refuse(sock: &TcpStream, why: &str) {
    let mut out = Vec::new();
    if (Message::Error {
        code: ErrorCode::Unauthorized,
        message: why,
    })
    .encode_into(RequestId(0), &mut out)
    .is_ok()
    {
        let _ = (&*sock).write_all(&out);
    }
    let _ = sock.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Runs a handshake over loopback: (dialer's result, node's result).
    fn handshake(
        dialer: &[u8],
        node: Option<&[u8]>,
    ) -> (Result<(), AuthError>, Result<NodeId, AuthError>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let node_secret = node.map(|s| Secret::new(s).unwrap());
        let server = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let mut d = FrameDecoder::new();
            let (id, nonce) = next(&sock, &mut d, |m| match m {
                Message::AuthHello { node_id, nonce } => Ok((node_id, *nonce)),
                other => Err(AuthError::Io(format!("got {}", other.kind()))),
            })?;
            accept(&sock, &mut d, node_secret.as_ref(), id, &nonce).map(|()| id)
        });
        let sock = TcpStream::connect(addr).unwrap();
        let mut d = FrameDecoder::new();
        let dialed = dial(&sock, &mut d, &Secret::new(dialer).unwrap(), 4);
        // The node's verdict arrives after the proof; read it if the dialer went on.
        let dialed = dialed.and_then(|()| {
            next(&sock, &mut d, |m| match m {
                Message::Error { message, .. } => Err(AuthError::Refused(message.into())),
                other => Err(AuthError::Io(format!("got {}", other.kind()))),
            })
            .or_else(|e| match e {
                AuthError::Io(m) if m.contains("closed") => Ok(()),
                e => Err(e),
            })
        });
        drop(sock);
        (dialed, server.join().unwrap())
    }

    fn private(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    const GOOD: &[u8] = b"0123456789abcdef-cluster";
    const BAD: &[u8] = b"0123456789abcdef-another";

    #[test]
    fn the_same_secret_passes_both_ways() {
        let (d, n) = handshake(GOOD, Some(GOOD));
        // The node closes nothing on success; the test's node thread ends, which
        // closes its socket.
        d.unwrap();
        assert_eq!(n.unwrap(), 4);
    }

    #[test]
    fn a_wrong_secret_is_refused_on_both_sides() {
        let (d, n) = handshake(BAD, Some(GOOD));
        let d = d.unwrap_err().to_string();
        let n = n.unwrap_err().to_string();
        assert!(d.contains("wrong cluster secret"), "{d}");
        assert!(n.contains("wrong cluster secret"), "{n}");
    }

    #[test]
    fn a_node_without_a_secret_says_so() {
        let (d, n) = handshake(GOOD, None);
        assert!(d.unwrap_err().to_string().contains("no cluster secret"));
        assert!(n.is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(
            Secret::new(b"short")
                .unwrap_err()
                .to_string()
                .contains("at least 16")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, b"  0123456789abcdef\n").unwrap();
        let e = Secret::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        private(&path);
        Secret::load(&path).unwrap();
        assert!(Secret::load(&dir.path().join("none")).is_err());
    }

    #[test]
    fn proofs_depend_on_role_nonces_and_node() {
        let s = Secret::new(GOOD).unwrap();
        let (a, b) = ([1u8; AUTH_BYTES], [2u8; AUTH_BYTES]);
        let p = |role, id, x: &[u8; AUTH_BYTES], y: &[u8; AUTH_BYTES]| {
            s.proof(role, id, x, y).finalize().into_bytes()
        };
        let base = p(NODE, 4, &a, &b);
        assert_ne!(base, p(DIALER, 4, &a, &b));
        assert_ne!(base, p(NODE, 5, &a, &b));
        assert_ne!(base, p(NODE, 4, &b, &a));
        assert_eq!(base, p(NODE, 4, &a, &b));
    }
}
