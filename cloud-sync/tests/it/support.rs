//! Test servers and clients.
//!
//! `Server::start(Backend::Sqlite)` gives a fresh `edgefn-cloud init` directory and a server on
//! 127.0.0.1:0 with its SQLite file; `Backend::Postgres` uses the local PostgreSQL (127.0.0.1:5432,
//! database `test`) with a schema of its own (`?schema=t_...`), dropped when the server is.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use edgefn_cloud::server::{self, ServeOptions};
use serde_json::{json, Value};

pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs one scenario on both backends: `both!(name, scenario_fn)`.
#[macro_export]
macro_rules! both {
    ($name:ident, $f:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$f($crate::support::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$f($crate::support::Backend::Postgres)
            }
        }
    };
}

/// A unique schema name.
pub fn unique_schema() -> String {
    format!(
        "t_{}",
        edgefn_cloud::keys::random_token("")
            .to_lowercase()
            .replace(['-', '_'], "")
            .chars()
            .take(20)
            .collect::<String>()
    )
}

/// Drops a schema of the local PostgreSQL.
pub fn drop_schema(schema: &str) {
    if let Ok(mut c) = postgres::Client::connect(PG_BASE, postgres::NoTls) {
        let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    }
}

pub struct Server {
    pub rt: tokio::runtime::Runtime,
    pub running: Option<server::Running>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub token: String,
    pub schema: Option<String>,
    pub db: String,
}

impl Server {
    pub fn start(backend: Backend) -> Server {
        let dir = tempfile::tempdir().unwrap();
        server::init(dir.path(), server::DEFAULT_KEY_VALIDITY).unwrap();
        let (db, schema) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("cloud.db").display()),
                None,
            ),
            Backend::Postgres => {
                let s = unique_schema();
                (format!("{PG_BASE}?schema={s}"), Some(s))
            }
        };
        Self::start_with(dir, db, schema, None, |_| {})
    }

    /// A server on an existing directory and database (replicas, restarts).
    pub fn start_with(
        dir: tempfile::TempDir,
        db: String,
        schema: Option<String>,
        artifacts: Option<PathBuf>,
        tweak: impl FnOnce(&mut ServeOptions),
    ) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut opts = ServeOptions::new(dir.path());
        opts.listen = "127.0.0.1:0".parse().unwrap();
        opts.db = Some(db.clone());
        opts.artifacts = artifacts;
        opts.tick = Duration::from_millis(50);
        tweak(&mut opts);
        let running = rt.block_on(server::start(opts)).unwrap();
        let url = running.url.clone();
        let token = std::fs::read_to_string(dir.path().join("operator.token"))
            .unwrap()
            .trim()
            .to_owned();
        Server {
            rt,
            running: Some(running),
            dir,
            url,
            token,
            schema,
            db,
        }
    }

    /// Stops this server and starts a new one (another port) on the same directory and database.
    pub fn restart(mut self) -> Server {
        if let Some(r) = self.running.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(2), r.stop()).await });
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let (db, schema) = (self.db.clone(), self.schema.take());
        drop(self);
        Server::start_with(dir, db, schema, None, |_| {})
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// An operator client.
    pub fn op(&self) -> Http {
        Http::new(&self.url, &self.token)
    }

    /// A client with another bearer token.
    pub fn with_token(&self, token: &str) -> Http {
        Http::new(&self.url, token)
    }

    /// Creates and publishes a function with a minimal module (distinct per `tag`), returns
    /// the version.
    pub fn publish(&self, name: &str, tag: u8) -> u32 {
        let op = self.op();
        let module = module(tag);
        let body = json!({"module_base64": b64(&module)});
        let (s, _) = op.call("PUT", &format!("/v1/functions/{name}"), Some(&body));
        if s == 404 {
            let (s, v) = op.call(
                "POST",
                "/v1/functions",
                Some(&json!({"name": name, "module_base64": b64(&module)})),
            );
            assert_eq!(s, 201, "{v}");
        }
        let (s, v) = op.call(
            "POST",
            &format!("/v1/functions/{name}/publish"),
            Some(&json!({})),
        );
        assert_eq!(s, 200, "{v}");
        v["version"].as_u64().unwrap() as u32
    }

    /// Creates a group with `n` enrolled devices; returns them.
    pub fn fleet(&self, group: &str, n: usize) -> Vec<Device> {
        let op = self.op();
        let (s, v) = op.call("POST", "/v1/groups", Some(&json!({"name": group})));
        assert!(s == 201 || s == 409, "{v}");
        (0..n)
            .map(|i| Device::enroll(self, &format!("{group}-dev{i}"), &[group]))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(2), r.stop()).await });
        }
        if let Some(s) = &self.schema {
            drop_schema(s);
        }
    }
}

/// A minimal valid core module (header + a custom section holding `tag`, so modules differ).
pub fn module(tag: u8) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend_from_slice(&[0, 3, 1, b't', tag]);
    m
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Blocking JSON over HTTP with a bearer token.
pub struct Http {
    pub base: String,
    pub auth: String,
    agent: ureq::Agent,
}

impl Http {
    pub fn new(base: &str, token: &str) -> Http {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Http {
            base: base.to_owned(),
            auth: format!("Bearer {token}"),
            agent,
        }
    }

    /// (status, JSON body or Null).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (s, _, bytes) = self.raw(method, path, body, &[]);
        (s, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// (status, headers, body bytes) with extra request headers.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let url = format!("{}{path}", self.base);
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", &self.auth);
        let req = headers.iter().fold(req, |r, (k, v)| r.header(*k, *v));
        let resp = match body {
            Some(b) => self.agent.run(
                req.header("content-type", "application/json")
                    .body(serde_json::to_vec(b).unwrap())
                    .unwrap(),
            ),
            None => self.agent.run(req.body(()).unwrap()),
        };
        let mut resp = resp.unwrap();
        let status = resp.status().as_u16();
        let hs = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let bytes = resp.body_mut().read_to_vec().unwrap();
        (status, hs, bytes)
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (s, v) = self.call(method, path, body);
        assert!((200..300).contains(&s), "{method} {path}: HTTP {s}: {v}");
        v
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A simulated device: enrolled over HTTP, it fetches and verifies its desired state and
/// reports status like the agent will.
pub struct Device {
    pub id: String,
    pub name: String,
    pub http: Http,
    pub root: ed25519_dalek::VerifyingKey,
    pub last_sequence: Option<u64>,
    pub etag: Option<String>,
}

impl Device {
    pub fn enroll(server: &Server, name: &str, groups: &[&str]) -> Device {
        let op = server.op();
        let t = op.ok(
            "POST",
            "/v1/devices",
            Some(&json!({"name": name, "groups": groups})),
        );
        let anon = Http::new(&server.url, "none");
        let v = anon.ok("POST", "/v1/enroll", Some(&json!({"token": t["token"]})));
        let root =
            edgefn_cloud::protocol::keycert::decode_public(v["root_public_key"].as_str().unwrap())
                .unwrap();
        Device {
            id: v["device_id"].as_str().unwrap().to_owned(),
            name: name.to_owned(),
            http: Http::new(&server.url, v["credential"].as_str().unwrap()),
            root,
            last_sequence: None,
            etag: None,
        }
    }

    /// Fetches the desired state (unconditionally) and verifies it.
    pub fn fetch(&mut self) -> edgefn_cloud::protocol::VerifiedState {
        let (s, hs, body) = self.http.raw("GET", "/v1/device/desired", None, &[]);
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
        self.etag = header(&hs, "etag").map(str::to_owned);
        let doc: edgefn_cloud::protocol::DesiredDocument = serde_json::from_slice(&body).unwrap();
        let v = edgefn_cloud::protocol::verify_desired(
            &doc,
            &self.root,
            &self.id,
            self.last_sequence,
            edgefn_cloud::now_ms(),
        )
        .unwrap();
        self.last_sequence = Some(v.sequence);
        v
    }

    /// Function name -> versions in the desired state.
    pub fn functions(&mut self) -> Vec<(String, Vec<u32>)> {
        self.fetch()
            .functions
            .iter()
            .map(|f| {
                (
                    f.name.clone(),
                    f.versions.iter().map(|m| m.version).collect(),
                )
            })
            .collect()
    }

    pub fn report(&self, deployment: &str, state: &str, error: Option<&str>) {
        let body = json!({
            "sequence": self.last_sequence.unwrap_or(0),
            "deployments": [{"deployment": deployment, "state": state, "error": error}],
        });
        let (s, v) = self.http.call("POST", "/v1/device/status", Some(&body));
        assert_eq!(s, 204, "{v}");
    }
}

/// Polls `f` until it returns Some, for up to `secs`.
pub fn eventually<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < end,
            "condition not reached in {secs}s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A throwaway CA and a server certificate it signs for 127.0.0.1/localhost, made with openssl
/// in `dir` (webpki refuses a CA certificate as the server's): (ca.crt, tls.crt, tls.key).
pub fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use std::process::{Command, Stdio};
    let openssl = |args: &[&str]| {
        let ok = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "2",
                "-subj",
                "/CN=test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "tls.key",
                "-out",
                "tls.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "tls.crt",
    ]);
    (dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key"))
}
