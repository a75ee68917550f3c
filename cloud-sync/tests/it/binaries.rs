//! The two binaries end to end: `edgefn-cloud init` / `serve` (plain and TLS) and the `edgefn`
//! operator CLI's verbs with tables, `--json` and exit codes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{eventually, module, Backend, Server};

const EDGEFN: &str = env!("CARGO_BIN_EXE_edgefn");
const CLOUD: &str = env!("CARGO_BIN_EXE_edgefn-cloud");

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

fn edgefn(s: &Server, args: &[&str]) -> Out {
    edgefn_at(&s.url, &s.token, None, args)
}

fn edgefn_at(url: &str, token: &str, ca: Option<&Path>, args: &[&str]) -> Out {
    let mut c = Command::new(EDGEFN);
    c.args(args)
        .env("EDGEFN_CLOUD", url)
        .env("EDGEFN_TOKEN", token)
        .env_remove("EDGEFN_CA");
    if let Some(ca) = ca {
        c.env("EDGEFN_CA", ca);
    }
    let o = c.output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn init_makes_keys_and_token_private() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("cloud");
    let o = Command::new(CLOUD)
        .args(["init", "--dir"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    use std::os::unix::fs::PermissionsExt;
    for f in ["root.key", "signing.key", "operator.token"] {
        let mode = std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    for f in ["root.pub", "signing.cert"] {
        assert!(d.join(f).exists(), "{f}");
    }
    let again = Command::new(CLOUD)
        .args(["init", "--dir"])
        .arg(&d)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already initialised"));
    // serve without init is a clear error
    let empty = tempfile::tempdir().unwrap();
    let o = Command::new(CLOUD)
        .args(["serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("edgefn-cloud init"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn operator_cli_verbs() {
    let s = Server::start(Backend::Sqlite);
    let m = s.path().join("m.wasm");
    std::fs::write(&m, module(1)).unwrap();
    let spec = s.path().join("spec.toml");
    std::fs::write(&spec, "[limits]\nfuel = 1000\n").unwrap();
    let mp = m.to_str().unwrap();
    let o = edgefn(
        &s,
        &[
            "function",
            "create",
            "temp",
            "--module",
            mp,
            "--spec",
            spec.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("name:") && o.stdout.contains("temp"),
        "{}",
        o.stdout
    );
    // publish prints the number alone
    let o = edgefn(
        &s,
        &["function", "publish", "temp", "--description", "first"],
    );
    assert_eq!((o.code, o.stdout.as_str()), (0, "1\n"));
    let o = edgefn(&s, &["alias", "set", "temp", "prod", "1"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.starts_with("ALIAS"), "{}", o.stdout);
    let o = edgefn(&s, &["--json", "function", "list"]);
    assert_eq!(o.json()[0]["name"], "temp");
    let o = edgefn(&s, &["function", "list"]);
    assert!(
        o.stdout.starts_with("NAME") && o.stdout.contains("temp"),
        "{}",
        o.stdout
    );
    let o = edgefn(&s, &["function", "get", "temp", "--version", "1", "--json"]);
    assert_eq!(o.json()["manifest"]["key_id"].as_str().unwrap().len(), 18);
    // refused by the cloud: exit 1 with its message
    let o = edgefn(&s, &["function", "create", "temp", "--module", mp]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("already exists"), "{}", o.stderr);
    let o = edgefn(
        &s,
        &[
            "alias", "set", "temp", "beta", "1", "--also", "5", "--weight", "0.5",
        ],
    );
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("no version 5"), "{}", o.stderr);
    // usage and connection problems: exit 2
    let o = edgefn(
        &s,
        &["function", "create", "x", "--module", "/no/such/file"],
    );
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = edgefn_at("http://127.0.0.1:1", &s.token, None, &["function", "list"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = edgefn_at(&s.url, "wrong", None, &["function", "list"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("wrong operator token"), "{}", o.stderr);
    let o = edgefn(&s, &["function", "frobnicate"]);
    assert_eq!(o.code, 2);
    // mappings
    let o = edgefn(
        &s,
        &[
            "mapping",
            "create",
            "--function",
            "temp:prod",
            "--every",
            "10s",
            "--name",
            "tick",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.trim().starts_with("m-"), "{}", o.stdout);
    let o = edgefn(
        &s,
        &["mapping", "create", "--function", "temp", "--mqtt", "a/#/b"],
    );
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("a/#/b"), "{}", o.stderr);
    assert!(edgefn(&s, &["mapping", "list"]).stdout.contains("tick"));
    // groups and devices
    assert_eq!(edgefn(&s, &["group", "create", "lab"]).code, 0);
    let o = edgefn(&s, &["--json", "device", "enroll", "pi1", "--group", "lab"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let token = o.json()["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("et-"));
    let o = edgefn(&s, &["device", "enroll", "pi2", "--group", "lab"]);
    assert!(o.stdout.trim().starts_with("et-"), "{}", o.stdout);
    let anon = crate::support::Http::new(&s.url, "x");
    let e = anon.ok(
        "POST",
        "/v1/enroll",
        Some(&serde_json::json!({"token": token})),
    );
    let o = edgefn(&s, &["device", "list"]);
    assert!(
        o.stdout.starts_with("NAME") && o.stdout.contains("pi1") && o.stdout.contains("pi2"),
        "{}",
        o.stdout
    );
    assert_eq!(
        edgefn(&s, &["--json", "group", "get", "lab"]).json()["devices"],
        serde_json::json!(["pi1", "pi2"])
    );
    assert_eq!(edgefn(&s, &["device", "delete", "pi2"]).code, 0);
    assert_eq!(edgefn(&s, &["device", "get", "pi2"]).code, 1);
    // a rollout with progress: a simulated device reports healthy while `deploy create --wait` runs
    let cred = e["credential"].as_str().unwrap().to_owned();
    let url = s.url.clone();
    let device = std::thread::spawn(move || {
        let http = crate::support::Http::new(&url, &cred);
        eventually(20, || {
            let v = http.ok("GET", "/v1/device/desired", None);
            let doc: edgefn_cloud::protocol::DesiredDocument = serde_json::from_value(v).unwrap();
            let st = doc.document.payload_unverified().unwrap();
            let f = st.functions.first()?;
            let body = serde_json::json!({"sequence": st.sequence, "deployments": [{"deployment": f.deployment, "state": "healthy"}]});
            assert_eq!(http.call("POST", "/v1/device/status", Some(&body)).0, 204);
            Some(())
        })
    });
    let o = edgefn(
        &s,
        &[
            "deploy",
            "create",
            "--group",
            "lab",
            "--function",
            "temp:prod",
            "--mapping",
            "tick",
            "--health-wait",
            "0s",
            "--wait",
        ],
    );
    device.join().unwrap();
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("running:") && o.stderr.contains("succeeded"),
        "progress: {}",
        o.stderr
    );
    assert!(
        o.stdout.contains("DEVICE") && o.stdout.contains("pi1") && o.stdout.contains("healthy"),
        "{}",
        o.stdout
    );
    let o = edgefn(&s, &["--json", "deploy", "list"]);
    let id = o.json()[0]["id"].as_str().unwrap().to_owned();
    let o = edgefn(&s, &["deploy", "status", &id]);
    assert!(o.stdout.contains("succeeded"), "{}", o.stdout);
    let o = edgefn(&s, &["deploy", "cancel", &id]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    // a rollout that fails: --wait exits 1
    std::fs::write(&m, module(2)).unwrap();
    edgefn(&s, &["function", "update", "temp", "--module", mp]);
    assert_eq!(edgefn(&s, &["function", "publish", "temp"]).stdout, "2\n");
    let o = edgefn(
        &s,
        &[
            "--json",
            "deploy",
            "create",
            "--group",
            "lab",
            "--function",
            "temp:2",
        ],
    );
    let id = o.json()["id"].as_str().unwrap().to_owned();
    let http = crate::support::Http::new(&s.url, e["credential"].as_str().unwrap());
    let body = serde_json::json!({"sequence": 0, "deployments": [{"deployment": id, "state": "failed", "error": "init failed"}]});
    assert_eq!(http.call("POST", "/v1/device/status", Some(&body)).0, 204);
    let o = edgefn(&s, &["deploy", "status", &id, "--follow"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("rolled_back"), "{}", o.stderr);
    // keys
    let o = edgefn(&s, &["key", "rotate"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("active"), "{}", o.stdout);
    let o = edgefn(&s, &["--json", "key", "list"]);
    assert_eq!(o.json().as_array().unwrap().len(), 2);
}

#[test]
fn serve_binary_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(Command::new(CLOUD)
        .args(["init", "--dir"])
        .arg(d)
        .status()
        .unwrap()
        .success());
    let (ca, cert, key) = crate::support::make_certs(d);
    let mut child = Command::new(CLOUD)
        .args(["serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(d)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    assert!(url.starts_with("https://"), "{url}");
    let token = std::fs::read_to_string(d.join("operator.token"))
        .unwrap()
        .trim()
        .to_owned();
    let o = edgefn_at(&url, &token, Some(&ca), &["--json", "function", "list"]);
    let untrusted = edgefn_at(&url, &token, None, &["function", "list"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.json(), serde_json::json!([]));
    assert_eq!(
        untrusted.code, 2,
        "an unknown CA is refused: {}",
        untrusted.stderr
    );
}

fn offline_rotation(backend: crate::support::Backend) {
    let s = Server::start(backend);
    let v = s.publish("f", 1);
    let mut devs = s.fleet("g", 1);
    s.op().ok(
        "POST",
        "/v1/deployments",
        Some(&serde_json::json!({"group": "g", "functions": [format!("f:{v}")]})),
    );
    let before = devs[0].fetch();
    let etag = devs[0].etag.clone().unwrap();
    // the root key stays off the server: rotate where it is, straight on the store
    let o = Command::new(CLOUD)
        .args(["rotate-key", "--dir"])
        .arg(s.path())
        .args(["--db", &s.db])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let keys = s.op().ok("GET", "/v1/keys", None);
    let new_key = keys[1]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (keys[0]["state"].as_str(), keys[1]["state"].as_str()),
        (Some("retiring"), Some("active"))
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains(&new_key));
    // a waiting device wakes with a document signed by the new key
    let (st, _, _) = devs[0].http.raw(
        "GET",
        "/v1/device/desired?wait=10",
        None,
        &[("if-none-match", &etag)],
    );
    assert_eq!(st, 200);
    let after = devs[0].fetch();
    assert_eq!(after.key_id, new_key);
    assert!(after.sequence > before.sequence);
    // without the root key a rotation is refused clearly
    std::fs::remove_file(s.path().join("root.key")).unwrap();
    let o = Command::new(CLOUD)
        .args(["rotate-key", "--dir"])
        .arg(s.path())
        .args(["--db", &s.db])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("root.key"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
crate::both!(rotate_key_offline, offline_rotation);

/// `edgefn new --lang c` + `function create|update --module DIR`: the project is built and
/// checked, its module uploaded and its `function.toml` sent as the spec.
#[test]
fn function_create_and_update_take_a_project() {
    let s = Server::start(Backend::Sqlite);
    let dir = s.path().join("thermo");
    let o = edgefn(
        &s,
        &[
            "new",
            "thermo",
            "--lang",
            "c",
            "--dir",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let built = edgefn(&s, &["build", dir.to_str().unwrap(), "--json"]);
    assert_eq!(built.code, 0, "{}", built.stderr);
    let sha = built.json()["sha256"].as_str().unwrap().to_string();

    let o = edgefn(
        &s,
        &[
            "function",
            "create",
            "thermo",
            "--module",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("uploading thermo"), "{}", o.stderr);
    let got = edgefn(&s, &["function", "get", "thermo", "--json"]).json();
    assert_eq!(got["latest"]["sha256"], sha.as_str(), "{got}");
    let spec = got["latest"]["spec"].as_str().unwrap();
    assert!(spec.contains("timeout_ms = 500"), "{spec}");

    // A changed spec rides with the next update; --spec still wins over the project's.
    let toml = dir.join("function.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, text.replace("timeout_ms = 500", "timeout_ms = 250")).unwrap();
    let o = edgefn(
        &s,
        &[
            "function",
            "update",
            "thermo",
            "--module",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let got = edgefn(&s, &["function", "get", "thermo", "--json"]).json();
    assert!(
        got["latest"]["spec"]
            .as_str()
            .unwrap()
            .contains("timeout_ms = 250"),
        "{got}"
    );
    let other = s.path().join("other.toml");
    std::fs::write(&other, "max_queue = 7\n").unwrap();
    let o = edgefn(
        &s,
        &[
            "function",
            "update",
            "thermo",
            "--module",
            dir.to_str().unwrap(),
            "--spec",
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let got = edgefn(&s, &["function", "get", "thermo", "--json"]).json();
    assert_eq!(got["latest"]["spec"], "max_queue = 7\n", "{got}");

    // A project that fails its build uploads nothing.
    std::fs::write(dir.join("thermo.c"), "this is not C").unwrap();
    let o = edgefn(
        &s,
        &[
            "function",
            "update",
            "thermo",
            "--module",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    let got = edgefn(&s, &["function", "get", "thermo", "--json"]).json();
    assert_eq!(got["latest"]["spec"], "max_queue = 7\n", "{got}");
}
