//! The admin API client behind the CLI verbs (`function`, `alias`, `invoke`, `logs`, `stats`):
//! the options every verb shares, finding the token, and one blocking HTTP/1.1 request per call
//! (ureq, plain HTTP: the admin API listens on loopback only). See docs/agent-api.md.
//!
//! Responses are handed back as `serde_json::Value`, so `--json` prints the API's document as
//! the agent sent it; the verbs convert to typed structs only to render text.

use edgefn_agent::paths;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// The admin API address when neither `--agent` nor `EDGEFN_AGENT` is given.
pub const DEFAULT_AGENT: &str = "http://127.0.0.1:7878";

/// Largest response body read (log pages, invocation results).
const MAX_BODY: u64 = 64 << 20;

/// Options shared by every client verb. `global` so they may also follow a sub-verb
/// (`function get NAME --json`).
#[derive(Debug, Clone, clap::Args)]
pub struct AgentOpts {
    /// URL of the agent's admin API.
    #[arg(long, global = true, value_name = "URL", env = "EDGEFN_AGENT", default_value = DEFAULT_AGENT)]
    pub agent: String,
    /// Admin API token [default: read from <DATA_DIR>/admin.token].
    #[arg(
        long,
        global = true,
        value_name = "T",
        env = "EDGEFN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The agent's data directory, where it keeps admin.token [default: $EDGEFN_DATA_DIR, else
    /// /var/lib/edgefn if readable, else ./edgefn-data].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON document instead of text (`logs`: one JSON object per line).
    #[arg(long, global = true)]
    pub json: bool,
}

/// What can go wrong talking to the agent. `cli::exit_code` maps these to exit codes.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent answered with an error status; `message` is its message, verbatim.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        /// A second line for people (which token was sent, on 401).
        hint: Option<String>,
    },
    #[error("cannot reach the agent at {url}: {reason} (is `edgefn-agent run` running? set --agent or EDGEFN_AGENT)")]
    Unreachable { url: String, reason: String },
    #[error("no answer from the agent at {url} within {}s", .after.as_secs())]
    Timeout { url: String, after: Duration },
    /// A success status with a body that is not what docs/agent-api.md promises.
    #[error("unexpected response from the agent at {url}: {detail}")]
    Protocol { url: String, detail: String },
    #[error("no admin token: cannot read {path}: {reason}; pass --token, set EDGEFN_TOKEN, or point --data-dir at the agent's data directory")]
    NoToken { path: PathBuf, reason: String },
    #[error("bad --agent URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
}

/// A request body.
#[derive(Clone, Copy)]
pub enum Body<'a> {
    Empty,
    Json(&'a Value),
    Raw(&'a [u8]),
}

#[derive(Clone, Copy, Debug)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// A client of one agent: every call is one blocking request.
pub struct Client {
    http: ureq::Agent,
    base: String,
    auth: String,
    /// Where the token came from, for the 401 hint.
    token_source: String,
}

impl Client {
    pub fn new(opts: &AgentOpts) -> Result<Client, ClientError> {
        // `EDGEFN_AGENT=` (set but empty) means the default, like an unset variable.
        let agent = match opts.agent.trim() {
            "" => DEFAULT_AGENT,
            a => a,
        };
        let base = normalize_agent_url(agent)?;
        let (token, token_source) = match opts.token.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => (t.to_string(), "--token / EDGEFN_TOKEN".to_string()),
            _ => {
                let dir = opts
                    .data_dir
                    .clone()
                    .unwrap_or_else(paths::default_data_dir);
                let path = paths::admin_token_path(&dir);
                let text = std::fs::read_to_string(&path).map_err(|e| ClientError::NoToken {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let t = text.trim();
                if t.is_empty() {
                    return Err(ClientError::NoToken {
                        path,
                        reason: "the file is empty".into(),
                    });
                }
                (t.to_string(), path.display().to_string())
            }
        };
        let config = ureq::Agent::config_builder()
            // Error statuses carry the API's error document: read them, don't turn them into Err.
            .http_status_as_error(false)
            // The admin API is on loopback: an HTTP_PROXY from the environment must not apply.
            .proxy(None)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent(concat!("edgefn-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            http: config.new_agent(),
            base,
            auth: format!("Bearer {token}"),
            token_source,
        })
    }

    /// The agent's base URL (normalized), for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One request; `Ok` for 2xx with the status and the JSON body (`Null` when empty).
    pub fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<(u16, Value), ClientError> {
        let url = format!("{}{path}", self.base);
        let with = |mut rb: ureq::RequestBuilder<ureq::typestate::WithBody>| {
            rb = rb.header("authorization", &self.auth);
            for (k, v) in query {
                rb = rb.query(k, v);
            }
            match body {
                Body::Empty => rb.send_empty(),
                // Compact JSON, serialized here: ureq's `json` feature is not needed for this.
                Body::Json(v) => rb
                    .content_type("application/json")
                    .send(serde_json::to_vec(v).expect("a JSON value always serializes")),
                Body::Raw(b) => rb.content_type("application/octet-stream").send(b),
            }
        };
        let without = |mut rb: ureq::RequestBuilder<ureq::typestate::WithoutBody>| {
            rb = rb.header("authorization", &self.auth);
            for (k, v) in query {
                rb = rb.query(k, v);
            }
            rb.call()
        };
        let result = match method {
            Method::Get => without(self.http.get(&url)),
            Method::Delete => without(self.http.delete(&url)),
            Method::Post => with(self.http.post(&url)),
            Method::Put => with(self.http.put(&url)),
            Method::Patch => with(self.http.patch(&url)),
        };
        let mut resp = result.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| self.transport_error(e))?;
        if !(200..300).contains(&status) {
            let mut e = api_error(status, &bytes);
            if let ClientError::Api { hint, .. } = &mut e {
                if status == 401 {
                    *hint = Some(format!(
                        "the token came from {}; the agent's is in <data-dir>/admin.token",
                        self.token_source
                    ));
                }
            }
            return Err(e);
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok((status, Value::Null));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            url: self.base.clone(),
            detail: format!("HTTP {status} body is not JSON: {e}"),
        })?;
        Ok((status, value))
    }

    /// A GET whose answer is text (JSON lines), with the value of response header `header`.
    pub fn get_text(
        &self,
        path: &str,
        query: &[(&str, String)],
        header: &str,
    ) -> Result<(String, Option<String>), ClientError> {
        let url = format!("{}{path}", self.base);
        let mut rb = self.http.get(&url).header("authorization", &self.auth);
        for (k, v) in query {
            rb = rb.query(k, v);
        }
        let mut resp = rb.call().map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let value = resp
            .headers()
            .get(header)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| self.transport_error(e))?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &bytes));
        }
        let text = String::from_utf8(bytes).map_err(|_| ClientError::Protocol {
            url: self.base.clone(),
            detail: format!("HTTP {status} body is not UTF-8 text"),
        })?;
        Ok((text, value))
    }

    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        Ok(self.call(Method::Get, path, query, Body::Empty)?.1)
    }

    pub fn send(&self, method: Method, path: &str, body: Body<'_>) -> Result<Value, ClientError> {
        Ok(self.call(method, path, &[], body)?.1)
    }

    /// Converts a JSON document to the type a verb renders; a mismatch is a protocol error.
    pub fn decode<T: serde::de::DeserializeOwned>(&self, v: &Value) -> Result<T, ClientError> {
        T::deserialize(v).map_err(|e| ClientError::Protocol {
            url: self.base.clone(),
            detail: format!("{e} in {}", truncate(&v.to_string(), 200)),
        })
    }

    fn transport_error(&self, e: ureq::Error) -> ClientError {
        let url = self.base.clone();
        match e {
            ureq::Error::Timeout(_) => ClientError::Timeout {
                url,
                after: REQUEST_TIMEOUT,
            },
            ureq::Error::Protocol(p) => ClientError::Protocol {
                url,
                detail: format!("not an HTTP/1.1 answer ({p})"),
            },
            ureq::Error::BodyExceedsLimit(n) => ClientError::Protocol {
                url,
                detail: format!("response larger than {n} bytes"),
            },
            ureq::Error::Io(io) => ClientError::Unreachable {
                url,
                reason: io.to_string(),
            },
            ureq::Error::HostNotFound => ClientError::Unreachable {
                url,
                reason: "host not found".into(),
            },
            other => ClientError::Unreachable {
                url,
                reason: other.to_string(),
            },
        }
    }
}

/// Whole-request bound: a sync invoke waits for the function, which its own timeout bounds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// `{"error": {"code", "message"}}` → `Api`; a body without that shape (a proxy's or a
/// framework's own rejection) still means the agent refused: its text becomes the message.
fn api_error(status: u16, body: &[u8]) -> ClientError {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: String,
        message: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(e) => ClientError::Api {
            status,
            code: e.error.code,
            message: e.error.message,
            hint: None,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            ClientError::Api {
                status,
                code: format!("http_{status}"),
                message: if text.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {}", truncate(text, 300))
                },
                hint: None,
            }
        }
    }
}

/// `--agent` as typed → a base URL without a trailing slash. A missing scheme means `http://`;
/// HTTPS is refused (no TLS in this client: the admin API listens on loopback).
pub fn normalize_agent_url(raw: &str) -> Result<String, ClientError> {
    let bad = |reason: &str| ClientError::BadUrl {
        url: raw.to_string(),
        reason: reason.to_string(),
    };
    let s = raw.trim();
    let rest = match s.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(bad(
                "https is not supported: the admin API is plain HTTP on loopback",
            ))
        }
        Some(_) => return Err(bad("expected http://HOST:PORT")),
        None => s,
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("no host"));
    }
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("expected http://HOST:PORT"));
    }
    Ok(format!("http://{rest}"))
}

/// `/v1/` + the segments, each percent-encoded (a name with `/` or `?` stays one segment and the
/// agent rejects it by its own rules).
pub fn api_path(segments: &[&str]) -> String {
    let mut out = String::from("/v1");
    for seg in segments {
        out.push('/');
        for b in seg.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// At most `max` characters of `s`, marked when cut.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_urls_are_normalized() {
        let n = |s| normalize_agent_url(s).map_err(|e| e.to_string());
        assert_eq!(n("http://127.0.0.1:7878").unwrap(), "http://127.0.0.1:7878");
        assert_eq!(
            n("http://127.0.0.1:7878/").unwrap(),
            "http://127.0.0.1:7878"
        );
        assert_eq!(n("127.0.0.1:9000").unwrap(), "http://127.0.0.1:9000");
        assert_eq!(n(" HTTP://localhost:1/ ").unwrap(), "http://localhost:1");
        assert_eq!(n("http://[::1]:7878").unwrap(), "http://[::1]:7878");
        assert!(n("https://127.0.0.1:7878").unwrap_err().contains("https"));
        assert!(n("ftp://x").is_err());
        assert!(n("http://").is_err());
        assert!(n("").is_err());
        assert!(n("http://a b").is_err());
    }

    #[test]
    fn paths_encode_each_segment() {
        assert_eq!(api_path(&["functions"]), "/v1/functions");
        assert_eq!(
            api_path(&["functions", "temp-2_x", "aliases", "prod"]),
            "/v1/functions/temp-2_x/aliases/prod"
        );
        assert_eq!(api_path(&["functions", "a/b?c"]), "/v1/functions/a%2Fb%3Fc");
        assert_eq!(api_path(&["functions", "é"]), "/v1/functions/%C3%A9");
    }

    #[test]
    fn api_errors_keep_the_message_verbatim() {
        let body = br#"{"error":{"code":"conflict","message":"version 2 is used by alias prod"}}"#;
        match api_error(409, body) {
            ClientError::Api {
                status,
                code,
                message,
                ..
            } => {
                assert_eq!((status, code.as_str()), (409, "conflict"));
                assert_eq!(message, "version 2 is used by alias prod");
            }
            other => panic!("{other:?}"),
        }
        let e = api_error(413, b"length limit exceeded\n");
        assert_eq!(e.to_string(), "HTTP 413: length limit exceeded");
        assert_eq!(api_error(502, b"").to_string(), "HTTP 502");
    }

    #[test]
    fn truncate_cuts_on_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 2), "éé…");
    }
}
