//! Cloud sync end to end (issue 5): a real `edgefn-cloud serve` and real agents (enroll,
//! deploy, run, roll out, roll back, kill -9 during download and activation), and a small fake
//! cloud that serves documents signed with test keys for the cases the real one never makes
//! (bad signature, unknown key, expired, sequence going backwards, module hash/size mismatch).
//!
//! The cloud binaries come from the same target directory: `cargo build -p edgefn-cloud --bins`
//! runs once per test process (a no-op when they are up to date).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use edgefn_agent::store::{Origin, Qualifier, Store};
use edgefn_cloud::keys;
use edgefn_cloud::protocol::keycert::{encode_public, key_id};
use edgefn_cloud::protocol::{
    Context, DesiredDocument, DesiredState, FunctionState, Manifest, Signed,
};
use serde_json::{json, Value};

use crate::daemon_support::{cli_bare, Agent};
use crate::support::{example_path, wat, TempDir};
use crate::triggers::{free_port, test_pki, Broker};

const WAIT: Duration = Duration::from_secs(60);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sha256_hex(bytes: &[u8]) -> String {
    edgefn_agent::store::sha256_hex(bytes)
}

/// A guest that responds `tag`; its `edgefn_init` returns `init` (non-zero = fails).
fn guest(tag: &str, init: i32) -> Vec<u8> {
    wat(&format!(
        r#"(module
  (import "edgefn" "respond" (func $respond (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{tag}")
  (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "edgefn_init") (result i32) (i32.const {init}))
  (func (export "edgefn_handle") (param i32 i32) (result i32)
    (call $respond (i32.const 16) (i32.const {len})) (i32.const 0)))"#,
        len = tag.len()
    ))
}

/// Polls `f` until `Some`, failing after `WAIT` with `what` and `context()`.
pub(crate) fn poll<T>(
    what: &str,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- the real cloud

pub(crate) fn cloud_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = Path::new(env!("CARGO_BIN_EXE_edgefn-agent"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    BUILT.get_or_init(|| {
        // Once per test process, so a changed cloud is never tested stale (a no-op when fresh).
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Only the environment a user's shell has: variables cargo sets for this test process
        // (CARGO_PKG_*, CARGO_MANIFEST_DIR, ...) would make build scripts rebuild every time.
        let mut cmd = Command::new(cargo);
        cmd.env_clear();
        for (k, v) in std::env::vars_os() {
            let k_str = k.to_string_lossy();
            let keep = matches!(
                k_str.as_ref(),
                "PATH"
                    | "HOME"
                    | "CARGO_HOME"
                    | "RUSTUP_HOME"
                    | "RUSTUP_TOOLCHAIN"
                    | "CARGO_TARGET_DIR"
            );
            if keep {
                cmd.env(k, v);
            }
        }
        let status = cmd
            .current_dir(crate::support::repo_root())
            .args(["build", "-p", "edgefn-cloud", "--bins"])
            .status()
            .expect("run cargo build -p edgefn-cloud");
        assert!(status.success(), "building edgefn-cloud failed");
    });
    assert!(
        path.exists(),
        "{} missing: cargo build -p edgefn-cloud --bins",
        path.display()
    );
    path
}

pub(crate) struct Cloud {
    /// `None` while stopped ([`Cloud::kill9`]).
    child: Option<Child>,
    pub(crate) url: String,
    pub(crate) token: String,
    dir: TempDir,
    http: ureq::Agent,
    /// The server's stderr so far (test hooks print there).
    stderr: Arc<Mutex<String>>,
    /// `serve` arguments, for a restart.
    serve_args: Vec<String>,
}

/// Starts `edgefn-cloud serve` on `dir`; returns the child, its URL and its stderr (collected).
fn spawn_serve(
    dir: &Path,
    listen: &str,
    serve_args: &[String],
    env: &[(&str, &str)],
) -> (Child, String, Arc<Mutex<String>>) {
    let mut child = Command::new(cloud_bin("edgefn-cloud"))
        .args(["serve", "--listen", listen, "--dir"])
        .arg(dir)
        .args(serve_args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("edgefn-cloud serve exited").unwrap();
        if let Some(u) = line.strip_prefix("listening on ") {
            break u.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, url, stderr)
}

impl Cloud {
    pub(crate) fn start() -> Cloud {
        Cloud::start_with(&[])
    }

    pub(crate) fn start_with(serve_args: &[&str]) -> Cloud {
        Cloud::start_opts(false, serve_args)
    }

    /// With `tls`: HTTPS with a server certificate of a fresh CA (`ca.crt` in the cloud's
    /// directory, see [`Cloud::ca`]).
    fn start_opts(tls: bool, serve_args: &[&str]) -> Cloud {
        Cloud::start_env(tls, serve_args, &[])
    }

    /// With environment variables for the server (test hooks).
    pub(crate) fn start_env(tls: bool, serve_args: &[&str], env: &[(&str, &str)]) -> Cloud {
        let dir = TempDir::new("cloud");
        let o = Command::new(cloud_bin("edgefn-cloud"))
            .args(["init", "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut serve_args: Vec<String> = serve_args.iter().map(|s| s.to_string()).collect();
        if tls {
            make_certs(dir.path());
            for (flag, file) in [("--tls-cert", "tls.crt"), ("--tls-key", "tls.key")] {
                serve_args.push(flag.into());
                serve_args.push(dir.path().join(file).to_str().unwrap().into());
            }
        }
        let (child, url, stderr) = spawn_serve(dir.path(), "127.0.0.1:0", &serve_args, env);
        let token = std::fs::read_to_string(dir.path().join("operator.token"))
            .unwrap()
            .trim()
            .to_string();
        let mut config = ureq::Agent::config_builder().http_status_as_error(false);
        if tls {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let pem = std::fs::read(dir.path().join("ca.crt")).unwrap();
            let certs: Vec<ureq::tls::Certificate<'static>> =
                rustls_pemfile::certs(&mut pem.as_slice())
                    .map(|c| ureq::tls::Certificate::from_der(c.unwrap().as_ref()).to_owned())
                    .collect();
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .provider(ureq::tls::TlsProvider::Rustls)
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .unversioned_rustls_crypto_provider(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .build(),
            );
        }
        let http = config.build().new_agent();
        Cloud {
            child: Some(child),
            url,
            token,
            dir,
            http,
            stderr,
            serve_args,
        }
    }

    /// The cloud's directory (`edgefn-cloud init`: keys, operator token).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's stderr so far.
    pub(crate) fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `kill -9` of the server.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same address, directory and database (after
    /// [`Cloud::kill9`]), with `env`.
    pub(crate) fn restart(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "stop the cloud first");
        let listen = self.url.rsplit("://").next().unwrap().to_string();
        let (child, url, stderr) = spawn_serve(self.dir.path(), &listen, &self.serve_args, env);
        assert_eq!(url.rsplit("://").next().unwrap(), listen);
        self.child = Some(child);
        self.stderr = stderr;
    }

    pub(crate) fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {}", self.token);
        let r = match method {
            "GET" => self.http.get(&url).header("authorization", &auth).call(),
            "DELETE" => self.http.delete(&url).header("authorization", &auth).call(),
            "POST" => self
                .http
                .post(&url)
                .header("authorization", &auth)
                .content_type("application/json")
                .send(serde_json::to_vec(&body.clone().unwrap_or(json!({}))).unwrap()),
            "PUT" => self
                .http
                .put(&url)
                .header("authorization", &auth)
                .content_type("application/json")
                .send(serde_json::to_vec(&body.clone().unwrap_or(json!({}))).unwrap()),
            m => panic!("{m}"),
        };
        let mut r = r.unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub(crate) fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body);
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    /// Creates (or updates) `name` with `module` and publishes it; returns the version.
    pub(crate) fn publish(&self, name: &str, module: &[u8]) -> u64 {
        let (s, _) = self.call(
            "PUT",
            &format!("/v1/functions/{name}"),
            Some(json!({"module_base64": b64(module)})),
        );
        if s == 404 {
            self.ok(
                "POST",
                "/v1/functions",
                Some(json!({"name": name, "module_base64": b64(module)})),
            );
        }
        self.ok("POST", &format!("/v1/functions/{name}/publish"), None)["version"]
            .as_u64()
            .unwrap()
    }

    /// A one-time enrollment token for a new device in `group`.
    pub(crate) fn device(&self, name: &str, group: &str) -> String {
        let _ = self.call("POST", "/v1/groups", Some(json!({"name": group})));
        let v = self.ok(
            "POST",
            "/v1/devices",
            Some(json!({"name": name, "groups": [group]})),
        );
        v["token"].as_str().unwrap().to_string()
    }

    fn deploy(&self, body: Value) -> String {
        self.ok("POST", "/v1/deployments", Some(body))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn deployment(&self, id: &str) -> Value {
        self.ok("GET", &format!("/v1/deployments/{id}"), None)
    }

    /// Waits until deployment `id` has `status`.
    fn wait_status(&self, id: &str, status: &str, agents: &[&Agent]) -> Value {
        poll(
            &format!("deployment {id} {status}"),
            || {
                format!(
                    "deployment: {}\n{}",
                    self.deployment(id),
                    agents
                        .iter()
                        .map(|a| a.stderr_text())
                        .collect::<Vec<_>>()
                        .join("\n-----\n")
                )
            },
            || {
                let d = self.deployment(id);
                (d["status"] == status).then_some(d)
            },
        )
    }
}

/// A CA (`ca.crt`) and a server certificate for 127.0.0.1 it signs (`tls.crt`, `tls.key`).
fn make_certs(d: &Path) {
    let openssl = |args: &[&str]| {
        let ok = Command::new("openssl")
            .current_dir(d)
            .args(args)
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("openssl (tests/run.sh installs it)");
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
        d.join("ext.cnf"),
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
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Agent config: fast polls and a short health window.
const CONFIG: &str = "[cloud]\npoll_wait = \"5s\"\nhealth_window = \"1s\"\nretry_max = \"1s\"\n";

/// Enrolls a fresh data directory with `token` and starts an agent on it.
fn enrolled_agent(tag: &str, cloud_url: &str, token: &str) -> Agent {
    enrolled_agent_with(tag, cloud_url, token, CONFIG)
}

pub(crate) fn enrolled_agent_with(
    tag: &str,
    cloud_url: &str,
    token: &str,
    config_text: &str,
) -> Agent {
    let scratch = TempDir::new(&format!("cfg-{tag}"));
    let config = scratch.path().join("agent.toml");
    std::fs::write(&config, config_text).unwrap();
    let config = config.to_str().unwrap().to_string();
    let agent = Agent::start_prepared(tag, &["--config", &config], |data| {
        let o = cli_bare(
            &[
                "enroll",
                "--cloud",
                cloud_url,
                "--token",
                token,
                "--data-dir",
                data.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(o.code, Some(0), "enroll: {}", o.stderr);
        assert!(o.stdout().contains("device:"), "{}", o.stdout());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("cloud.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    });
    std::mem::forget(scratch); // the config must outlive restarts; it is tiny
    agent
}

/// What `function:latest` answers on `agent`, if it answers.
fn answer(agent: &Agent, function: &str, qualifier: &str) -> Option<String> {
    let r = agent.http().invoke(function, qualifier, None, b"x");
    if r.status != 200 {
        return None;
    }
    let v = r.json();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["response_base64"].as_str()?)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn wait_answer(agent: &Agent, function: &str, qualifier: &str, want: &str) {
    poll(
        &format!("{function}:{qualifier} to answer {want}"),
        || agent.stderr_text(),
        || (answer(agent, function, qualifier).as_deref() == Some(want)).then_some(()),
    );
}

#[test]
fn enroll_errors_are_clear() {
    let cloud = Cloud::start();
    let dir = TempDir::new("enroll-errors");
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let o = cli_bare(
        &[
            "enroll",
            "--cloud",
            &cloud.url,
            "--token",
            "et-nope",
            "--data-dir",
            d,
        ],
        &[],
    );
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(o.stderr.contains("refused the token"), "{}", o.stderr);
    let o = cli_bare(
        &[
            "enroll",
            "--cloud",
            "http://127.0.0.1:1",
            "--token",
            "et-x",
            "--data-dir",
            d,
        ],
        &[],
    );
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("cannot reach the cloud"), "{}", o.stderr);
    let o = cli_bare(
        &[
            "enroll",
            "--cloud",
            "ftp://x",
            "--token",
            "et-x",
            "--data-dir",
            d,
        ],
        &[],
    );
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    // TLS to a plain HTTP server fails as a TLS/connection problem, exit 2.
    let https = cloud.url.replace("http://", "https://");
    let o = cli_bare(
        &[
            "enroll",
            "--cloud",
            &https,
            "--token",
            "et-x",
            "--data-dir",
            d,
        ],
        &[],
    );
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    // A good token, then a second enroll is refused without --force.
    let token = cloud.device("pi-e", "lab");
    let o = cli_bare(
        &[
            "enroll",
            "--cloud",
            &cloud.url,
            "--token",
            &token,
            "--data-dir",
            d,
            "--json",
        ],
        &[],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let v: Value = serde_json::from_str(&o.stdout()).unwrap();
    assert_eq!(v["device_name"], "pi-e");
    assert!(
        !o.stdout().contains("dc-"),
        "the credential is never printed"
    );
    let o = cli_bare(
        &[
            "enroll",
            "--cloud",
            &cloud.url,
            "--token",
            &token,
            "--data-dir",
            d,
        ],
        &[],
    );
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("already enrolled"), "{}", o.stderr);
}

/// Deploy, update, a local name clash, an init failure rolled back on the device and the
/// canary batch's failure rolling the deployment back for the whole group.
#[test]
fn deploy_run_update_and_roll_back_a_failing_canary() {
    let cloud = Cloud::start();
    let t1 = cloud.device("pi-1", "lab");
    let t2 = cloud.device("pi-2", "lab");
    let a1 = enrolled_agent("sync-a1", &cloud.url, &t1);
    let a2 = enrolled_agent("sync-a2", &cloud.url, &t2);
    let agents = [&a1, &a2];

    assert_eq!(cloud.publish("hello", &guest("v1", 0)), 1);
    let dep1 = cloud.deploy(json!({"group": "lab", "functions": ["hello:1"]}));
    for a in agents {
        wait_answer(a, "hello", "1", "v1");
        wait_answer(a, "hello", "latest", "v1");
    }
    let d = cloud.wait_status(&dep1, "succeeded", &agents);
    assert_eq!(d["counts"]["healthy"], 2, "{d}");
    // Cloud-managed on the agent; the local API cannot take the name.
    let f = a1.http().get("/v1/functions/hello").json();
    assert_eq!(f["origin"], "cloud", "{f}");
    let m = a1.write("local.wasm", guest("local", 0));
    a1.cli(&["function", "create", "hello", "--module", &m])
        .fails(1, &["already exists"]);
    let r = a1.http().send("DELETE", "/v1/functions/hello", &[], b"");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("managed by the cloud"), "{}", r.text());
    a1.cli(&["function", "update", "hello", "--module", &m])
        .fails(1, &["managed by the cloud"]);

    // An update with an alias: both agents switch without a restart.
    assert_eq!(cloud.publish("hello", &guest("v2", 0)), 2);
    cloud.ok(
        "PUT",
        "/v1/functions/hello/aliases/prod",
        Some(json!({"version": 2})),
    );
    let dep2 = cloud.deploy(json!({"group": "lab", "functions": ["hello:prod"]}));
    for a in agents {
        wait_answer(a, "hello", "prod", "v2");
    }
    cloud.wait_status(&dep2, "succeeded", &agents);

    // Version 3's init fails. Canary batch of 50%: its device rolls back on its own and reports
    // `failed`; the rollout is rolled back and the other device never gets version 3.
    assert_eq!(cloud.publish("hello", &guest("v3", 1)), 3);
    let dep3 = cloud.deploy(json!({"group": "lab", "functions": ["hello:3"],
        "batch_percent": 50, "failure_threshold_percent": 0}));
    let d = cloud.wait_status(&dep3, "rolled_back", &agents);
    let failed: Vec<&Value> = d["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{d}");
    assert!(
        failed[0]["error"].as_str().unwrap().contains("init failed"),
        "{d}"
    );
    let canary = if failed[0]["device"] == "pi-1" {
        &a1
    } else {
        &a2
    };
    let other = if failed[0]["device"] == "pi-1" {
        &a2
    } else {
        &a1
    };
    assert!(canary.stderr_text().contains("rolled back sequence"));
    // Both run version 2 (the cloud's later document without the deployment too).
    for a in agents {
        wait_answer(a, "hello", "prod", "v2");
        let f = a.http().get("/v1/functions/hello").json();
        let versions: Vec<u64> = f["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect();
        assert_eq!(versions, [2], "{f}");
    }
    assert!(!other.stderr_text().contains("version 3: init failed"));
    // The device's view in the cloud: it reported the failed deployment.
    let dev = cloud.ok("GET", "/v1/devices/pi-1", None);
    assert!(dev["applied_key_id"].is_string(), "{dev}");
}

/// HTTPS: the agent trusts the cloud's CA only when told (`--ca-file`), enrolls and syncs
/// over TLS (rustls, ring).
#[test]
fn sync_over_https_with_a_ca_file() {
    let cloud = Cloud::start_opts(true, &[]);
    assert!(cloud.url.starts_with("https://"), "{}", cloud.url);
    let token = cloud.device("pi-tls", "tls");
    let scratch = TempDir::new("tls-enroll");
    let d = scratch.path().join("data");
    let o = cli_bare(
        &[
            "enroll",
            "--cloud",
            &cloud.url,
            "--token",
            &token,
            "--data-dir",
            d.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("TLS"), "{}", o.stderr);
    let ca = cloud.dir.path().join("ca.crt");
    let a = Agent::start_prepared("sync-tls", &[], |data| {
        let o = cli_bare(
            &[
                "enroll",
                "--cloud",
                &cloud.url,
                "--token",
                &token,
                "--data-dir",
                data.to_str().unwrap(),
                "--ca-file",
                ca.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(o.code, Some(0), "{}", o.stderr);
    });
    cloud.publish("secure", &guest("tls", 0));
    cloud.deploy(json!({"group": "tls", "functions": ["secure:1"]}));
    wait_answer(&a, "secure", "1", "tls");
}

/// Stream mappings deployed from the cloud (issue 7): the cloud takes the agent's stream kinds;
/// a `stream-file` mapping arrives on a real agent and runs (every record, in order per
/// partition, by the `stream-audit` example), a `stream-mqtt` one arrives with its settings;
/// a mapping to `flow:NAME` starts runs of a flow made on the device.
#[test]
fn stream_mappings_deployed_from_the_cloud_run() {
    let cloud = Cloud::start();
    let token = cloud.device("pi-streams", "streams");
    let a = enrolled_agent("sync-streams", &cloud.url, &token);
    let module = std::fs::read(example_path("stream_audit")).unwrap();
    assert_eq!(cloud.publish("audit", &module), 1);
    let dir = TempDir::new("cloud-stream");
    let file = dir.path().join("in.jsonl");
    let mut text = String::new();
    for seq in 1..=25 {
        for d in ["d1", "d2"] {
            text.push_str(&format!("{{\"device\":\"{d}\",\"seq\":{seq}}}\n"));
        }
    }
    std::fs::write(&file, text).unwrap();
    let file_source = json!({"kind": "stream-file", "path": file, "format": "jsonl",
        "follow": false, "partition_key": "json:/device", "batch_size": 7, "batch_window_ms": 0});
    cloud.ok(
        "POST",
        "/v1/mappings",
        Some(json!({"function": "audit:1", "name": "file-feed", "source": file_source})),
    );
    let mqtt_source = json!({"kind": "stream-mqtt", "filter": "edgefn-it/cloud-streams/+/t",
        "partition_key": "topic:3", "batch_size": 50, "batch_window_ms": 250});
    cloud.ok(
        "POST",
        "/v1/mappings",
        Some(json!({"function": "audit:1", "name": "mqtt-feed", "source": mqtt_source})),
    );
    let dep = cloud.deploy(json!({"group": "streams", "functions": ["audit:1"],
        "mappings": ["file-feed", "mqtt-feed"]}));
    cloud.wait_status(&dep, "succeeded", &[&a]);

    let store = Store::open(a.data_dir().join("agent.db")).unwrap();
    let kv = |key: &str| {
        store
            .kv_get("audit", key.as_bytes())
            .unwrap()
            .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()))
    };
    poll(
        "the file's 50 records audited",
        || a.stderr_text(),
        || (kv("last/d1") == 25 && kv("last/d2") == 25 && kv("records") == 50).then_some(()),
    );
    assert_eq!(kv("gaps"), 0, "a record lost, repeated or out of order");

    // Both arrived as the cloud has them, cloud-managed.
    let list = a.http().get("/v1/mappings").json();
    let by_name = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == n)
            .unwrap_or_else(|| panic!("{n} not on the agent: {list}"))
            .clone()
    };
    assert_eq!(by_name("file-feed")["source"], file_source);
    assert_eq!(by_name("mqtt-feed")["source"], mqtt_source);
    let id = by_name("mqtt-feed")["id"].as_str().unwrap().to_string();
    a.cli(&["mapping", "pause", &id])
        .fails(1, &["managed by the cloud"]);

    // A cloud mapping may target a flow made on the device (`flow:NAME`): its events start runs.
    a.create("echo", &example_path("echo"), None);
    let flow = a.write(
        "greet.toml",
        "[[steps]]\nname = \"hi\"\nfunction = \"echo\"\n",
    );
    a.cli(&["flow", "create", "--name", "greet", &flow]).ok();
    let fm = cloud.ok(
        "POST",
        "/v1/mappings",
        Some(json!({"function": "flow:greet", "name": "greet-tick",
            "source": {"kind": "every", "interval_ms": 200}})),
    );
    let trigger = format!("mapping:{}", fm["id"].as_str().unwrap());
    let dep2 = cloud.deploy(json!({"group": "streams", "functions": ["audit:1"],
        "mappings": ["greet-tick"]}));
    cloud.wait_status(&dep2, "succeeded", &[&a]);
    poll(
        "a run of greet started by the cloud's mapping",
        || a.stderr_text(),
        || {
            let runs = a.cli(&["flow", "runs", "greet", "--json"]).json();
            runs.as_array()?
                .iter()
                .any(|r| r["status"] == "succeeded" && r["trigger"] == trigger.as_str())
                .then_some(())
        },
    );
}

/// Flows deployed from the cloud (issue 7): `edgefn flow create`, then a deployment with the
/// flow, a function it invokes and a mapping that starts it; the agent runs it as a
/// cloud-managed flow (the local API cannot change it), follows the registry's enabled flag and
/// a new revision, and removes it when the device leaves the group (its runs stay listed).
#[test]
fn flows_deployed_from_the_cloud_run_and_go() {
    let cloud = Cloud::start();
    let token = cloud.device("pi-flows", "flows");
    let a = enrolled_agent("sync-flows", &cloud.url, &token);
    let echo = std::fs::read(example_path("echo")).unwrap();
    assert_eq!(cloud.publish("echo", &echo), 1);
    let scratch = TempDir::new("cloud-flow");
    let file = scratch.path().join("greet.toml");
    std::fs::write(
        &file,
        "name = \"greet\"\n[[steps]]\nname = \"hi\"\nfunction = \"echo:1\"\n",
    )
    .unwrap();
    let o = crate::remote_invoke::edgefn(&cloud, &["flow", "create", file.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let fm = cloud.ok(
        "POST",
        "/v1/mappings",
        Some(json!({"function": "flow:greet", "name": "greet-tick",
            "source": {"kind": "every", "interval_ms": 200}})),
    );
    let trigger = format!("mapping:{}", fm["id"].as_str().unwrap());
    let dep = cloud.deploy(json!({"group": "flows", "functions": ["echo:1"],
        "mappings": ["greet-tick"], "flows": ["greet"]}));
    cloud.wait_status(&dep, "succeeded", &[&a]);

    let runs = |a: &Agent| a.cli(&["flow", "runs", "greet", "--json"]).json();
    poll(
        "a run of the deployed flow",
        || a.stderr_text(),
        || {
            runs(&a)
                .as_array()?
                .iter()
                .any(|r| r["status"] == "succeeded" && r["trigger"] == trigger.as_str())
                .then_some(())
        },
    );
    // Cloud-managed: the local API refuses to change it, or to make one of that name.
    a.cli(&["flow", "disable", "greet"])
        .fails(1, &["managed by the cloud"]);
    a.cli(&["flow", "delete", "greet"])
        .fails(1, &["managed by the cloud"]);
    let local = a.write(
        "greet.toml",
        "[[steps]]\nname = \"x\"\nfunction = \"echo\"\n",
    );
    a.cli(&["flow", "update", "greet", &local])
        .fails(1, &["managed by the cloud"]);

    // The registry's enabled flag, then a new revision through a new deployment.
    cloud.ok("POST", "/v1/flows/greet/disable", None);
    let get = |a: &Agent| a.cli(&["flow", "get", "greet", "--json"]).json();
    poll(
        "the flow disabled on the device",
        || a.stderr_text(),
        || (get(&a)["enabled"] == false).then_some(()),
    );
    cloud.ok("POST", "/v1/flows/greet/enable", None);
    cloud.ok(
        "PUT",
        "/v1/flows/greet",
        Some(
            json!({"definition": {"steps": [{"name": "hi", "function": "echo:1", "retries": 1}]}}),
        ),
    );
    let dep2 = cloud.deploy(json!({"group": "flows", "functions": ["echo:1"], "flows": ["greet"]}));
    cloud.wait_status(&dep2, "succeeded", &[&a]);
    poll(
        "revision 2 enabled on the device",
        || a.stderr_text(),
        || {
            let f = get(&a);
            (f["enabled"] == true && f["definition"]["steps"][0]["retries"] == 1).then_some(())
        },
    );

    // The device leaves the group: its document is empty and the flow goes; runs stay.
    cloud.ok("DELETE", "/v1/groups/flows/devices/pi-flows", None);
    poll(
        "the flow removed from the device",
        || a.stderr_text(),
        || {
            let o = a.cli(&["flow", "list", "--json"]).json();
            o.as_array()?.is_empty().then_some(())
        },
    );
    a.cli(&["flow", "get", "greet"]).fails(1, &["not found"]);
    assert!(!runs(&a).as_array().unwrap().is_empty());
}

/// Nudges: the cloud publishes `{"sequence": N}` on the local Mosquitto when the device's
/// document moves; the agent subscribed there fetches at once.
#[test]
fn nudges_over_mqtt() {
    let cloud = Cloud::start_with(&["--mqtt", "mqtt://127.0.0.1:1883"]);
    let token = cloud.device("pi-n", "n");
    let a = enrolled_agent_with(
        "sync-nudge",
        &cloud.url,
        &token,
        "[cloud]\npoll_wait = \"300s\"\nhealth_window = \"1s\"\nmqtt = \"mqtt://127.0.0.1:1883\"\n",
    );
    poll(
        "the nudge subscription",
        || a.stderr_text(),
        || {
            a.stderr_text()
                .contains("taking nudges on edgefn/devices/")
                .then_some(())
        },
    );
    cloud.publish("nudged", &guest("hi", 0));
    cloud.deploy(json!({"group": "n", "functions": ["nudged:1"]}));
    wait_answer(&a, "nudged", "1", "hi");
    poll(
        "a nudge",
        || a.stderr_text(),
        || {
            a.stderr_text()
                .contains("sync: nudged (sequence")
                .then_some(())
        },
    );
}

/// Nudges over `mqtts://` with a client certificate: a private Mosquitto with TLS only (client
/// certificates required, a test CA); the cloud publishes through it and the agent subscribes
/// with `[cloud] mqtt_ca_file`, `mqtt_cert_file` and `mqtt_key_file`.
#[test]
fn nudges_over_mqtts_with_a_client_certificate() {
    let pki = TempDir::new("nudge-pki");
    test_pki(pki.path());
    let tls_port = free_port();
    let p = pki.path().to_path_buf();
    let _broker = Broker::start_with("nudge-tls", move |_, _| {
        format!(
            "listener {tls_port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\n\
             keyfile {0}/server.key\nrequire_certificate true\n",
            p.display()
        )
    });
    let file = |f: &str| pki.path().join(f).to_str().unwrap().to_string();
    let url = format!("mqtts://localhost:{tls_port}");
    let cloud = Cloud::start_with(&[
        "--mqtt",
        &url,
        "--mqtt-ca",
        &file("ca.pem"),
        "--mqtt-cert",
        &file("client.pem"),
        "--mqtt-key",
        &file("client.key"),
    ]);
    let token = cloud.device("pi-nt", "nt");
    let a = enrolled_agent_with(
        "sync-nudge-tls",
        &cloud.url,
        &token,
        &format!(
            "[cloud]\npoll_wait = \"300s\"\nhealth_window = \"1s\"\nmqtt = \"{url}\"\n\
             mqtt_ca_file = \"{}\"\nmqtt_cert_file = \"{}\"\nmqtt_key_file = \"{}\"\n",
            file("ca.pem"),
            file("client.pem"),
            file("client.key")
        ),
    );
    poll(
        "the nudge subscription over TLS",
        || a.stderr_text(),
        || {
            a.stderr_text()
                .contains("taking nudges on edgefn/devices/")
                .then_some(())
        },
    );
    assert!(
        a.stderr_text().contains(&format!("at {url}")),
        "{}",
        a.stderr_text()
    );
    cloud.publish("nudged", &guest("tls-hi", 0));
    cloud.deploy(json!({"group": "nt", "functions": ["nudged:1"]}));
    wait_answer(&a, "nudged", "1", "tls-hi");
    poll(
        "a nudge over TLS",
        || a.stderr_text(),
        || {
            a.stderr_text()
                .contains("sync: nudged (sequence")
                .then_some(())
        },
    );
}

/// A 90/10 canary alias deployed through the cloud: the agents hold the alias with its second
/// version and weight, and invocations of the alias split between the two versions.
#[test]
fn alias_canary_90_10_through_the_cloud() {
    let cloud = Cloud::start();
    let agents: Vec<Agent> = (1..=2)
        .map(|i| {
            let t = cloud.device(&format!("pi-c{i}"), "canary");
            enrolled_agent(&format!("sync-canary{i}"), &cloud.url, &t)
        })
        .collect();
    assert_eq!(cloud.publish("hello", &guest("stable", 0)), 1);
    assert_eq!(cloud.publish("hello", &guest("canary", 0)), 2);
    cloud.ok(
        "PUT",
        "/v1/functions/hello/aliases/prod",
        Some(json!({"version": 1, "also_version": 2, "weight": 0.1})),
    );
    let dep = cloud.deploy(json!({"group": "canary", "functions": ["hello:prod"]}));
    let refs: Vec<&Agent> = agents.iter().collect();
    cloud.wait_status(&dep, "succeeded", &refs);
    for a in &agents {
        let aliases = a.http().get("/v1/functions/hello/aliases").json();
        let prod = aliases
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "prod")
            .unwrap_or_else(|| panic!("no alias prod on the agent: {aliases}"));
        assert_eq!(
            (
                &prod["version"],
                &prod["also_version"],
                prod["weight"].as_f64()
            ),
            (&json!(1), &json!(2), Some(0.1)),
            "{prod}"
        );
    }
    // 400 invocations: the canary's share is 10% (binomial: mean 40, sd 6); the bounds are
    // 4 sd wide, so a correct split fails them about once in 15,000 runs, and an alias that
    // ignores the weight (0 or 400 canary answers, or 200 for an even split) always does.
    let a = &agents[0];
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..400 {
        let got = answer(a, "hello", "prod").expect("hello:prod answers");
        *counts.entry(got).or_default() += 1;
    }
    let canary = counts.get("canary").copied().unwrap_or(0);
    let stable = counts.get("stable").copied().unwrap_or(0);
    assert_eq!(canary + stable, 400, "{counts:?}");
    assert!((16..=64).contains(&canary), "{counts:?}");
}

/// The cloud goes away (SIGKILL): the agent keeps running what it has and says it runs its
/// local state; the cloud comes back on the same directory and address: the agent picks up a
/// deployment made after that.
#[test]
fn cloud_down_then_back() {
    let mut cloud = Cloud::start();
    let token = cloud.device("pi-off", "off");
    let a = enrolled_agent("sync-offline", &cloud.url, &token);
    cloud.publish("hello", &guest("before", 0));
    let dep = cloud.deploy(json!({"group": "off", "functions": ["hello:1"]}));
    wait_answer(&a, "hello", "1", "before");
    cloud.wait_status(&dep, "succeeded", &[&a]);

    cloud.kill9();
    poll(
        "the agent to notice the cloud is gone",
        || a.stderr_text(),
        || {
            a.stderr_text()
                .contains("running the local state")
                .then_some(())
        },
    );
    for _ in 0..20 {
        assert_eq!(answer(&a, "hello", "1").as_deref(), Some("before"));
    }
    let f = a.http().get("/v1/functions/hello").json();
    assert_eq!(f["origin"], "cloud", "{f}");

    cloud.restart(&[]);
    assert_eq!(cloud.publish("hello", &guest("after", 0)), 2);
    let dep2 = cloud.deploy(json!({"group": "off", "functions": ["hello:2"]}));
    wait_answer(&a, "hello", "2", "after");
    cloud.wait_status(&dep2, "succeeded", &[&a]);
    assert!(
        a.stderr_text().contains("the cloud is reachable again"),
        "{}",
        a.stderr_text()
    );
    // The deployment replaced the old one: version 1 is gone from the agent.
    assert_eq!(a.http().invoke("hello", "1", None, b"x").status, 404);
}

/// kill -9 while a module downloads (resumed with Range after the restart) and inside the
/// activation transaction (the store holds the old state, then the new one): never a mix.
#[test]
fn kill9_during_download_and_activation() {
    let cloud = Cloud::start();
    let token = cloud.device("pi-k", "k");
    let mut a = enrolled_agent("sync-kill", &cloud.url, &token);
    cloud.publish("work", &guest("one", 0));
    let dep = cloud.deploy(json!({"group": "k", "functions": ["work:1"]}));
    wait_answer(&a, "work", "1", "one");
    cloud.wait_status(&dep, "succeeded", &[&a]);

    // Download: the hook stops after half of version 2's module was written.
    a.terminate();
    a.set_env(&[("EDGEFN_TEST_SYNC_PAUSE", "download")]);
    a.restart();
    let two = guest("two-two-two", 0);
    cloud.publish("work", &two);
    cloud.deploy(json!({"group": "k", "functions": ["work:2"]}));
    poll(
        "the download pause",
        || a.stderr_text(),
        || a.stderr_text().contains("paused at download").then_some(()),
    );
    a.kill9();
    let part = a
        .data_dir()
        .join("sync/staging")
        .join(format!("{}.part", sha256_hex(&two)));
    let len = std::fs::metadata(&part).unwrap().len();
    assert!(len > 0 && len < two.len() as u64, "{len}");
    {
        let store = Store::open(a.data_dir().join("agent.db")).unwrap();
        let f = store.get_function("work").unwrap();
        assert_eq!(f.versions.len(), 1);
        assert_eq!(f.versions[0].version, 1);
    }
    a.set_env(&[]);
    a.restart();
    wait_answer(&a, "work", "2", "two-two-two");
    assert!(
        a.stderr_text()
            .contains(&format!("at byte {len} of {}", two.len())),
        "{}",
        a.stderr_text()
    );
    assert!(!part.exists());

    // Activation: the hook stops inside the transaction, after every row was written.
    a.terminate();
    a.set_env(&[("EDGEFN_TEST_SYNC_PAUSE", "activate")]);
    a.restart();
    cloud.publish("work", &guest("three", 0));
    cloud.ok(
        "PUT",
        "/v1/functions/work/aliases/prod",
        Some(json!({"version": 3})),
    );
    cloud.deploy(json!({"group": "k", "functions": ["work:prod"]}));
    poll(
        "the activation pause",
        || a.stderr_text(),
        || a.stderr_text().contains("paused at activate").then_some(()),
    );
    a.kill9();
    {
        let store = Store::open(a.data_dir().join("agent.db")).unwrap();
        let f = store.get_function("work").unwrap();
        assert_eq!(f.summary.origin, Origin::Cloud);
        let versions: Vec<u32> = f.versions.iter().map(|v| v.version).collect();
        assert_eq!(versions, [2], "the old state, whole");
        assert!(f.aliases.is_empty());
        let r = store.resolve("work", &Qualifier::Latest, "e").unwrap();
        assert_eq!(r.sha256, sha256_hex(&two));
        assert_eq!(store.integrity_check().unwrap(), ["ok"]);
    }
    a.set_env(&[]);
    a.restart();
    wait_answer(&a, "work", "prod", "three");
    let store = Store::open(a.data_dir().join("agent.db")).unwrap();
    let f = store.get_function("work").unwrap();
    let versions: Vec<u32> = f.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, [3], "the new state, whole");
    assert_eq!(f.aliases[0].name, "prod");
}

// ---------------------------------------------------------------- a fake cloud

/// Keys and the served document/artifacts of the fake cloud.
struct Fake {
    /// Secret keys, base64 (`keys::decode_secret`).
    root: String,
    signing: String,
    cert: Signed<edgefn_cloud::protocol::KeyCert>,
    device: String,
    /// (etag, body) of `GET /v1/device/desired`.
    doc: Mutex<Option<(String, Vec<u8>)>>,
    artifacts: Mutex<HashMap<String, Vec<u8>>>,
    reports: Mutex<Vec<Value>>,
}

struct FakeCloud {
    url: String,
    state: Arc<Fake>,
    etag: std::sync::atomic::AtomicU64,
}

impl FakeCloud {
    fn start() -> FakeCloud {
        let root = keys::generate();
        let now = edgefn_cloud::now_ms();
        let (signing, cert) = keys::issue_signing_key(&root, now - 1000, 86_400_000);
        let state = Arc::new(Fake {
            root: keys::encode_secret(&root),
            signing: keys::encode_secret(&signing),
            cert,
            device: "d-fake".into(),
            doc: Mutex::new(None),
            artifacts: Mutex::new(HashMap::new()),
            reports: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(&s, conn));
            }
        });
        FakeCloud {
            url,
            state,
            etag: 1.into(),
        }
    }

    fn manifest(&self, function: &str, version: u32, module: &[u8]) -> Signed<Manifest> {
        let m = Manifest {
            function: function.into(),
            version,
            sha256: sha256_hex(module),
            size: module.len() as u64,
            spec: String::new(),
            description: String::new(),
            published_ms: 0,
        };
        let k = keys::decode_secret(&self.state.signing).unwrap();
        Signed::sign(&m, Context::Manifest, &key_id(&k.verifying_key()), &k)
    }

    fn state(&self, seq: u64, module: &[u8], version: u32) -> DesiredState {
        DesiredState {
            device: self.state.device.clone(),
            sequence: seq,
            issued_ms: edgefn_cloud::now_ms(),
            expires_ms: edgefn_cloud::now_ms() + 3_600_000,
            functions: vec![FunctionState {
                name: "f".into(),
                enabled: true,
                deployment: format!("dep-{seq}"),
                versions: vec![self.manifest("f", version, module)],
                aliases: vec![],
            }],
            mappings: vec![],
            flows: vec![],
        }
    }

    fn sign(&self, s: &DesiredState) -> DesiredDocument {
        let k = keys::decode_secret(&self.state.signing).unwrap();
        DesiredDocument {
            keys: vec![self.state.cert.clone()],
            document: Signed::sign(s, Context::Desired, &key_id(&k.verifying_key()), &k),
        }
    }

    fn serve_doc(&self, doc: &DesiredDocument) {
        let n = self.etag.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.state.doc.lock().unwrap() =
            Some((format!("\"{n}\""), serde_json::to_vec(doc).unwrap()));
    }

    fn artifact(&self, sha: &str, bytes: Vec<u8>) {
        self.state
            .artifacts
            .lock()
            .unwrap()
            .insert(sha.to_string(), bytes);
    }

    fn reports(&self) -> Vec<Value> {
        self.state.reports.lock().unwrap().clone()
    }
}

/// One HTTP/1.1 exchange (the agent's client; Connection: close).
fn serve(s: &Fake, conn: TcpStream) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    let (status, extra, out): (u16, Vec<(String, String)>, Vec<u8>) = if path == "/v1/enroll" {
        let r = json!({"device_id": s.device, "device_name": "fake", "credential": "dc-fake",
            "root_public_key": encode_public(&keys::decode_secret(&s.root).unwrap().verifying_key()), "keys": [s.cert],
            "groups": []});
        (200, vec![], serde_json::to_vec(&r).unwrap())
    } else if path.starts_with("/v1/device/desired") {
        let doc = s.doc.lock().unwrap().clone();
        match doc {
            Some((etag, bytes)) if headers.get("if-none-match") != Some(&etag) => {
                (200, vec![("etag".into(), etag)], bytes)
            }
            _ => {
                std::thread::sleep(Duration::from_millis(200)); // a short long-poll
                (304, vec![], vec![])
            }
        }
    } else if let Some(sha) = path.strip_prefix("/v1/artifacts/") {
        match s.artifacts.lock().unwrap().get(sha) {
            Some(b) => (200, vec![], b.clone()),
            None => (404, vec![], b"{}".to_vec()),
        }
    } else if path == "/v1/device/status" && method == "POST" {
        s.reports
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        (204, vec![], vec![])
    } else {
        (404, vec![], b"{}".to_vec())
    };
    let mut conn = conn;
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nconnection: close\r\ncontent-length: {}\r\n",
        if status == 204 || status == 304 {
            0
        } else {
            out.len()
        }
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    if status != 204 && status != 304 {
        let _ = conn.write_all(&out);
    }
}

/// Every refusal names its reason (stderr, agent log, status report) and changes nothing.
#[test]
fn tampered_documents_and_modules_are_refused() {
    let fake = FakeCloud::start();
    let a = enrolled_agent("sync-fake", &fake.url, "et-fake");
    let m1 = guest("good", 0);
    fake.artifact(&sha256_hex(&m1), m1.clone());
    fake.serve_doc(&fake.sign(&fake.state(5, &m1, 1)));
    wait_answer(&a, "f", "1", "good");

    let m2 = guest("evil", 0);
    let refused = |doc: DesiredDocument, needle: &str, dep: &str| {
        fake.serve_doc(&doc);
        poll(
            needle,
            || a.stderr_text(),
            || a.stderr_text().contains(needle).then_some(()),
        );
        assert_eq!(answer(&a, "f", "1").as_deref(), Some("good"), "{needle}");
        assert_eq!(
            answer(&a, "f", "latest").as_deref(),
            Some("good"),
            "{needle}"
        );
        if !dep.is_empty() {
            poll(
                &format!("a failed report of {dep}"),
                || format!("{:?}", fake.reports()),
                || {
                    fake.reports().iter().rev().find_map(|r| {
                        r["deployments"].as_array()?.iter().find(|d| {
                            d["deployment"] == dep
                                && d["state"] == "failed"
                                && d["error"].as_str().is_some_and(|e| e.contains(needle))
                        })?;
                        Some(())
                    })
                },
            );
        }
    };

    // Bad signature: the document's bytes changed after signing.
    let mut doc = fake.sign(&fake.state(6, &m2, 2));
    let mut tampered = fake.state(6, &m2, 2);
    tampered.sequence = 60;
    doc.document.payload_base64 = b64(&serde_json::to_vec(&tampered).unwrap());
    refused(doc, "bad signature on desired state", "dep-6");

    // Unknown key: signed by a key the root never certified.
    let stranger = keys::generate();
    let s = fake.state(7, &m2, 2);
    let doc = DesiredDocument {
        keys: vec![fake.state.cert.clone()],
        document: Signed::sign(
            &s,
            Context::Desired,
            &key_id(&stranger.verifying_key()),
            &stranger,
        ),
    };
    refused(doc, "signed by unknown key", "dep-7");

    // Expired (freeze attack).
    let mut s = fake.state(8, &m2, 2);
    s.expires_ms = edgefn_cloud::now_ms() - 1000;
    refused(fake.sign(&s), "desired state expired", "dep-8");

    // Sequence going backwards (replay of an older document).
    refused(
        fake.sign(&fake.state(4, &m2, 2)),
        "lower than the applied 5 (rollback refused)",
        "dep-4",
    );

    // Module hash mismatch: the artifact's bytes differ (same size).
    let mut swapped = m2.clone();
    let last = swapped.len() - 1;
    swapped[last] ^= 0x55;
    fake.artifact(&sha256_hex(&m2), swapped);
    refused(
        fake.sign(&fake.state(9, &m2, 2)),
        &format!("manifest says {}", sha256_hex(&m2)),
        "dep-9",
    );

    // Size mismatch: endless data is cut at the manifest's size.
    let mut longer = m2.clone();
    longer.extend_from_slice(&[0u8; 4096]);
    fake.artifact(&sha256_hex(&m2), longer);
    refused(
        fake.sign(&fake.state(10, &m2, 2)),
        &format!("bytes, manifest says {}", m2.len()),
        "dep-10",
    );

    // And a good document still goes through afterwards.
    fake.artifact(&sha256_hex(&m2), m2.clone());
    fake.serve_doc(&fake.sign(&fake.state(11, &m2, 2)));
    wait_answer(&a, "f", "2", "evil");
    // The refusals are in the agent's log records too.
    let logs = a.cli(&["logs", "--json"]).ok();
    assert!(logs.contains("desired state refused"), "{logs}");
}

/// A new version that traps repeatedly within its health window is rolled back to the last
/// good one and reported `failed`.
#[test]
fn a_version_that_keeps_trapping_is_rolled_back() {
    let fake = FakeCloud::start();
    let a = enrolled_agent_with(
        "sync-traps",
        &fake.url,
        "et-fake",
        "[cloud]\npoll_wait = \"5s\"\nhealth_window = \"3s\"\nhealth_failures = 3\n",
    );
    let m1 = guest("good", 0);
    fake.artifact(&sha256_hex(&m1), m1.clone());
    fake.serve_doc(&fake.sign(&fake.state(5, &m1, 1)));
    poll(
        "sequence 5 healthy",
        || a.stderr_text(),
        || {
            a.stderr_text()
                .contains("sequence 5 is healthy")
                .then_some(())
        },
    );
    let trap = wat(r#"(module
  (memory (export "memory") 1)
  (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "edgefn_handle") (param i32 i32) (result i32) unreachable))"#);
    fake.artifact(&sha256_hex(&trap), trap.clone());
    fake.serve_doc(&fake.sign(&fake.state(6, &trap, 2)));
    poll(
        "version 2 active",
        || a.stderr_text(),
        || {
            let r = a.http().invoke("f", "2", None, b"x");
            (r.status == 200 && r.json()["outcome"] == "trap").then_some(())
        },
    );
    a.http().invoke("f", "2", None, b"x");
    a.http().invoke("f", "2", None, b"x");
    poll(
        "the rollback",
        || a.stderr_text(),
        || {
            a.stderr_text()
                .contains("failed invocations within the health window")
                .then_some(())
        },
    );
    wait_answer(&a, "f", "1", "good");
    assert_eq!(a.http().invoke("f", "2", None, b"x").status, 404);
    poll(
        "a failed report of dep-6",
        || format!("{:?}", fake.reports()),
        || {
            fake.reports().iter().rev().find_map(|r| {
                r["deployments"].as_array()?.iter().find(|d| {
                    d["deployment"] == "dep-6"
                        && d["state"] == "failed"
                        && d["error"].as_str().is_some_and(|e| e.contains("trap"))
                })?;
                Some(())
            })
        },
    );
}
