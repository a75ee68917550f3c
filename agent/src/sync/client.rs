//! The device side of the cloud's HTTP API (docs/cloud-api.md, "Device protocol"): enroll,
//! desired state (ETag, long-poll), artifacts (with `Range`) and status reports. Blocking
//! (ureq); HTTPS with rustls and the ring provider passed explicitly.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edgefn_cloud::protocol::telemetry::UploadAck;
use edgefn_cloud::protocol::{paths, DesiredDocument, EnrollRequest, EnrollResponse, StatusReport};

/// Why a request to the cloud failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad `--cloud` URL or CA file.
    #[error("{0}")]
    Usage(String),
    /// Could not connect, or the connection broke.
    #[error("cannot reach the cloud at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The TLS handshake failed (untrusted certificate, wrong host name, ...).
    #[error("TLS with the cloud at {url} failed: {reason} (is the CA right? --ca-file)")]
    Tls { url: String, reason: String },
    /// The cloud answered with an error.
    #[error("the cloud refused ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// The cloud answered something that is not the protocol.
    #[error("unexpected answer from the cloud: {0}")]
    Protocol(String),
}

/// What `GET /v1/device/desired` returned.
#[derive(Debug)]
pub enum Desired {
    /// `304`: unchanged since the ETag we sent.
    NotModified,
    /// `200`: a document (unverified) and its ETag.
    Document {
        doc: Box<DesiredDocument>,
        etag: Option<String>,
    },
}

/// A cloud client with the device credential (or none, for enrollment).
#[derive(Clone)]
pub struct CloudClient {
    base: String,
    http: ureq::Agent,
    auth: Option<String>,
}

fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn roots(ca: Option<&Path>) -> Result<ureq::tls::RootCerts, ClientError> {
    use ureq::tls::{Certificate, RootCerts};
    let ders: Vec<Vec<u8>> = match ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| ClientError::Usage(format!("CA file {}: {e}", path.display())))?;
            let certs = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientError::Usage(format!("CA file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(ClientError::Usage(format!(
                    "CA file {}: no PEM certificate in it",
                    path.display()
                )));
            }
            certs.iter().map(|c| c.as_ref().to_vec()).collect()
        }
        None => rustls_native_certs::load_native_certs()
            .certs
            .iter()
            .map(|c| c.as_ref().to_vec())
            .collect(),
    };
    let certs: Vec<Certificate<'static>> = ders
        .iter()
        .map(|d| Certificate::from_der(d).to_owned())
        .collect();
    Ok(RootCerts::new_with_certs(&certs))
}

impl CloudClient {
    /// A client of the cloud at `url` (`http://` or `https://`), trusting `ca` (PEM) or the
    /// system's CA certificates. `credential` is the device's bearer token.
    pub fn new(
        url: &str,
        ca: Option<&Path>,
        credential: Option<&str>,
    ) -> Result<CloudClient, ClientError> {
        let base = url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Usage(format!(
                "cloud URL {base:?}: expected http://HOST:PORT or https://HOST:PORT"
            )));
        }
        install_ring();
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            // Long-polls wait up to `wait` seconds; reads time out well after that.
            .timeout_recv_body(Some(Duration::from_secs(330)))
            .timeout_recv_response(Some(Duration::from_secs(330)))
            .user_agent(concat!("edgefn-agent/", env!("CARGO_PKG_VERSION")));
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
        Ok(CloudClient {
            base,
            http: config.build().new_agent(),
            auth: credential.map(|c| format!("Bearer {c}")),
        })
    }

    /// The cloud's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn transport(&self, e: ureq::Error) -> ClientError {
        let tls = match &e {
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::TlsRequired => true,
            ureq::Error::Io(io) => io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
            _ => false,
        };
        let reason = e.to_string();
        if tls || reason.contains("certificate") {
            ClientError::Tls {
                url: self.base.clone(),
                reason,
            }
        } else {
            ClientError::Unreachable {
                url: self.base.clone(),
                reason,
            }
        }
    }

    fn refused(status: u16, body: &[u8]) -> ClientError {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        ClientError::Refused {
            status,
            code: v["error"]["code"].as_str().unwrap_or("unknown").to_owned(),
            message: v["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned()),
        }
    }

    fn get(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let rb = self.http.get(format!("{}{path}", self.base));
        match &self.auth {
            Some(a) => rb.header("authorization", a),
            None => rb,
        }
    }

    fn post_json(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let mut rb = self.http.post(format!("{}{path}", self.base));
        if let Some(a) = &self.auth {
            rb = rb.header("authorization", a);
        }
        let mut resp = rb
            .content_type("application/json")
            .send(serde_json::to_vec(body).expect("protocol types serialise"))
            .map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_vec()
            .map_err(|e| self.transport(e))?;
        Ok((status, bytes))
    }

    /// `POST /v1/enroll` with a one-time token.
    pub fn enroll(&self, token: &str) -> Result<EnrollResponse, ClientError> {
        let (status, body) = self.post_json(
            paths::ENROLL,
            &EnrollRequest {
                token: token.to_owned(),
            },
        )?;
        if status != 200 {
            return Err(Self::refused(status, &body));
        }
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("enroll response: {e}")))
    }

    /// `GET /v1/device/desired[?wait=S]` with `If-None-Match: etag`.
    pub fn desired(&self, etag: Option<&str>, wait_s: u64) -> Result<Desired, ClientError> {
        let path = if wait_s > 0 {
            format!("{}?wait={wait_s}", paths::DESIRED)
        } else {
            paths::DESIRED.to_owned()
        };
        let mut rb = self.get(&path);
        if let Some(e) = etag {
            rb = rb.header("if-none-match", e);
        }
        let mut resp = rb.call().map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        if status == 304 {
            return Ok(Desired::NotModified);
        }
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| self.transport(e))?;
        if status != 200 {
            return Err(Self::refused(status, &body));
        }
        let doc = serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("desired state: {e}")))?;
        Ok(Desired::Document {
            doc: Box::new(doc),
            etag,
        })
    }

    /// `GET /v1/artifacts/{sha256}` from byte `start` on: the status (200 or 206), the total
    /// size if the cloud said it, and a reader of the body.
    pub fn artifact(
        &self,
        sha256: &str,
        start: u64,
    ) -> Result<(u16, Box<dyn Read + Send>), ClientError> {
        let mut rb = self.get(&format!("{}/{sha256}", paths::ARTIFACTS));
        if start > 0 {
            rb = rb.header("range", format!("bytes={start}-"));
        }
        let resp = rb.call().map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        if status != 200 && status != 206 {
            let body = resp
                .into_body()
                .with_config()
                .limit(1 << 20)
                .read_to_vec()
                .unwrap_or_default();
            return Err(Self::refused(status, &body));
        }
        Ok((status, Box::new(resp.into_body().into_reader())))
    }

    /// `POST /v1/device/status`.
    pub fn report(&self, report: &StatusReport) -> Result<(), ClientError> {
        let (status, body) = self.post_json(paths::STATUS, report)?;
        if !(200..300).contains(&status) {
            return Err(Self::refused(status, &body));
        }
        Ok(())
    }

    /// `POST /v1/device/telemetry` with a batch already compressed
    /// ([`edgefn_cloud::protocol::telemetry::compress`] of its JSON).
    pub fn telemetry(&self, compressed: &[u8]) -> Result<UploadAck, ClientError> {
        let mut rb = self.http.post(format!("{}{}", self.base, paths::TELEMETRY));
        if let Some(a) = &self.auth {
            rb = rb.header("authorization", a);
        }
        let mut resp = rb
            .header("content-encoding", "deflate")
            .content_type("application/json")
            .send(compressed)
            .map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| self.transport(e))?;
        if status != 200 {
            return Err(Self::refused(status, &body));
        }
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("telemetry answer: {e}")))
    }
}
