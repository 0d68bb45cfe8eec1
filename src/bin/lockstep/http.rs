//! The client of the nodes' admin plane (HTTP on each node's admin endpoint).

use std::time::Duration;

use serde_json::Value;

use super::{CommandError, Global};

/// How long one HTTP request to an admin endpoint may take (a switchover's own wait
/// is added).
pub(super) const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's admin endpoint answered: (HTTP status, body as JSON or text).
pub(super) struct HttpAnswer {
    pub(super) status: u16,
    pub(super) body: String,
}

impl HttpAnswer {
    pub(super) fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The `error` of a JSON error body, else the body.
    pub(super) fn reason(&self) -> String {
        self.json()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| self.body.trim().to_string())
    }
}

pub(super) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .timeout_connect(Some(Duration::from_secs(1)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// One HTTP request to `addr`; `Err` when the node cannot be reached.
pub(super) fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<HttpAnswer, String> {
    let url = format!("http://{addr}{path}");
    let agent = agent(timeout);
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = if method == "POST" {
        let mut r = agent.post(&url);
        if let Some(a) = &auth {
            r = r.header("Authorization", a);
        }
        r.send_empty()
    } else {
        let mut r = agent.get(&url);
        if let Some(a) = &auth {
            r = r.header("Authorization", a);
        }
        r.call()
    };
    let mut response = result.map_err(|e| format!("{addr}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(|e| format!("{addr}: reading the answer: {e}"))?;
    Ok(HttpAnswer { status, body })
}

/// The first node of --nodes that answers `GET path`: (its address, its answer).
pub(super) fn first_answer(g: &Global, path: &str) -> Result<(String, HttpAnswer), CommandError> {
    let mut errors = Vec::new();
    for addr in g.nodes()? {
        match http(addr, "GET", path, None, HTTP_TIMEOUT) {
            Ok(a) => return Ok((addr.clone(), a)),
            Err(e) => errors.push(e),
        }
    }
    Err(CommandError::Unreachable(format!(
        "no node answered: {}",
        errors.join("; ")
    )))
}
