//! The operator CLI's HTTP client: one blocking request per call (ureq), JSON in and out,
//! HTTPS with rustls (ring) trusting the system's roots or `--ca FILE`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::CliError;

pub struct Client {
    http: ureq::Agent,
    base: String,
    auth: String,
}

#[derive(Clone, Copy)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

fn roots(ca: Option<&std::path::Path>) -> Result<ureq::tls::RootCerts, CliError> {
    use ureq::tls::{Certificate, RootCerts};
    match ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| CliError::Usage(format!("--ca {}: {e}", path.display())))?;
            let certs = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CliError::Usage(format!("--ca {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(CliError::Usage(format!(
                    "--ca {}: no PEM certificate in it",
                    path.display()
                )));
            }
            let certs: Vec<_> = certs
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            Ok(RootCerts::new_with_certs(&certs))
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let certs: Vec<_> = native
                .certs
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            Ok(RootCerts::new_with_certs(&certs))
        }
    }
}

impl Client {
    pub fn new(
        cloud: &str,
        token: Option<&str>,
        ca: Option<&std::path::Path>,
    ) -> Result<Client, CliError> {
        let base = cloud.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "--cloud {base:?}: expected http://HOST:PORT or https://HOST:PORT"
            )));
        }
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                CliError::Usage(
                    "no operator token: give --token or set EDGEFN_TOKEN (DIR/operator.token)"
                        .into(),
                )
            })?;
        crate::api::tls::install_ring();
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(60)))
            .user_agent(concat!("edgefn/", env!("CARGO_PKG_VERSION")));
        if base.starts_with("https://") {
            let tls = ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .root_certs(roots(ca)?)
                .unversioned_rustls_crypto_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .build();
            config = config.tls_config(tls);
        }
        Ok(Client {
            http: config.build().new_agent(),
            base,
            auth: format!("Bearer {token}"),
        })
    }

    /// One request; the JSON body of a 2xx (`Null` when empty), or the API's error.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        self.call_inner(method, path, body, None)
    }

    /// A POST that may take longer than the usual 60 s (a remote invoke's wait).
    pub fn call_with_timeout(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, CliError> {
        self.call_inner(Method::Post, path, Some(body), Some(timeout))
    }

    fn call_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let result = match method {
            Method::Get => self
                .http
                .get(&url)
                .header("authorization", &self.auth)
                .call(),
            Method::Delete => self
                .http
                .delete(&url)
                .header("authorization", &self.auth)
                .call(),
            Method::Post | Method::Put | Method::Patch => {
                let rb = match method {
                    Method::Post => self.http.post(&url),
                    Method::Put => self.http.put(&url),
                    _ => self.http.patch(&url),
                };
                let mut rb = rb.header("authorization", &self.auth);
                if timeout.is_some() {
                    rb = rb.config().timeout_global(timeout).build();
                }
                match body {
                    Some(v) => rb
                        .content_type("application/json")
                        .send(serde_json::to_vec(v).unwrap()),
                    None => rb.send_empty(),
                }
            }
        };
        let transport = |e: ureq::Error| CliError::Transport(format!("{}: {e}", self.base));
        let mut resp = result.map_err(transport)?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(transport)?;
        if !(200..300).contains(&status) {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(CliError::Api {
                status,
                code: v["error"]["code"].as_str().unwrap_or("unknown").to_owned(),
                message: v["error"]["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
            });
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| CliError::Transport(format!("{url}: HTTP {status} body is not JSON: {e}")))
    }

    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::Get, path, None)
    }

    /// A GET of a text body (JSON lines) and the value of `header` (a page's next index).
    pub fn get_text(&self, path: &str, header: &str) -> Result<(String, Option<String>), CliError> {
        let url = format!("{}{path}", self.base);
        let transport = |e: ureq::Error| CliError::Transport(format!("{}: {e}", self.base));
        let mut resp = self
            .http
            .get(&url)
            .header("authorization", &self.auth)
            .call()
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let next = resp
            .headers()
            .get(header)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(transport)?;
        if !(200..300).contains(&status) {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(CliError::Api {
                status,
                code: v["error"]["code"].as_str().unwrap_or("unknown").to_owned(),
                message: v["error"]["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
            });
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| CliError::Transport(format!("{url}: the body is not UTF-8: {e}")))?;
        Ok((text, next))
    }
}

/// A path segment, percent-encoded where needed.
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
