//! A real `edgefn-agent run` process for the daemon tests: started on port 0 with its own data
//! directory, its address read from the ready line on stderr, killed on drop, restartable on the
//! same data directory. The CLI verbs run as a user runs them (`--agent URL --data-dir DIR`), and
//! [`Http`] talks to the admin API directly where a test needs raw status codes.

use crate::support::{agent, TempDir};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an agent may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running agent (or one between a stop and a restart).
pub struct Agent {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` of the admin API.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the HTTP trigger (empty when off).
    pub http_url: String,
    /// Extra `run` arguments (e.g. `--mqtt URL`), kept across restarts.
    extra_args: Vec<String>,
    /// Holds `data/` (the agent's data directory) and files the test writes.
    pub dir: TempDir,
    /// Everything the agent wrote to stderr, across restarts.
    stderr: Arc<Mutex<String>>,
    /// Extra environment of the next start ([`Agent::set_env`]).
    env: Vec<(String, String)>,
}

impl Agent {
    /// Starts an agent on a fresh data directory.
    pub fn start(tag: &str) -> Agent {
        Agent::start_with(tag, &[])
    }

    /// Starts an agent with extra `run` arguments (the HTTP trigger binds port 0 unless they
    /// say `--http`).
    pub fn start_with(tag: &str, extra: &[&str]) -> Agent {
        Agent::start_prepared(tag, extra, |_| {})
    }

    /// Like [`Agent::start_with`], running `prepare` on the (not yet existing) data directory
    /// path first (e.g. `edgefn-agent enroll --data-dir`).
    pub fn start_prepared(tag: &str, extra: &[&str], prepare: impl FnOnce(&Path)) -> Agent {
        Agent::start_prepared_env(tag, extra, &[], prepare)
    }

    /// Like [`Agent::start_prepared`], with extra environment from the first start on (kept
    /// until [`Agent::set_env`] changes it).
    pub fn start_prepared_env(
        tag: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
    ) -> Agent {
        let dir = TempDir::new(&format!("daemon-{tag}"));
        let mut a = Agent {
            child: None,
            url: String::new(),
            http_url: String::new(),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            dir,
            stderr: Arc::new(Mutex::new(String::new())),
            env: Vec::new(),
        };
        a.set_env(env);
        prepare(&a.data_dir());
        a.spawn();
        a
    }

    /// Sets the extra environment of the next (re)start; `&[]` clears it.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// The agent's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A path in the test's scratch directory (outside the data directory).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a scratch file and returns its path as a string (for CLI arguments).
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let p = self.file(name);
        std::fs::write(&p, contents).unwrap();
        p.to_str().unwrap().to_string()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the agent is already running");
        let mut cmd = agent();
        cmd.args(["run", "--api", "127.0.0.1:0", "--data-dir"])
            .arg(self.data_dir());
        if !self.extra_args.iter().any(|a| a == "--http") {
            cmd.args(["--http", "127.0.0.1:0"]);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edgefn-agent run");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = self.stderr.clone();
        // Reads until the ready line, then keeps draining so the agent never blocks on stderr.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(addr) = ready_address(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((addr, http_address(&line)));
                    }
                }
            }
        });
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok((addr, http)) => {
                self.url = format!("http://{addr}");
                self.http_url = http.map(|h| format!("http://{h}")).unwrap_or_default();
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the agent printed no ready line within {READY_TIMEOUT:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
        }
        self.child = Some(child);
    }

    /// Everything the agent printed on stderr so far (for failure messages).
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the agent to exit; returns its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop("TERM")
    }

    /// Sends SIGINT (Ctrl-C) and waits for the agent to exit; returns its exit status.
    pub fn interrupt(&mut self) -> ExitStatus {
        self.stop("INT")
    }

    fn stop(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("the agent is running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
        wait_with_deadline(&mut child, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("the agent did not exit within 20 s of SIG{signal}"))
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the agent is running");
        child.kill().expect("SIGKILL the agent");
        let _ = child.wait();
    }

    /// Starts the agent again on the same data directory (a new port).
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Runs `edgefn-agent ARGS --agent URL --data-dir DIR`.
    pub fn cli(&self, args: &[&str]) -> Out {
        self.cli_with_stdin(args, None)
    }

    /// Like [`Agent::cli`], feeding `stdin` to the command.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Out {
        let mut cmd = agent();
        cmd.args(args)
            .arg("--agent")
            .arg(&self.url)
            .arg("--data-dir")
            .arg(self.data_dir())
            .env_remove("EDGEFN_AGENT")
            .env_remove("EDGEFN_TOKEN")
            .env_remove("EDGEFN_DATA_DIR");
        run(cmd, args, stdin)
    }

    /// The admin token the agent created.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// A raw HTTP client of the admin API, with the token.
    pub fn http(&self) -> Http {
        Http::new(&self.url, Some(&self.token()))
    }

    /// Creates function `name` from `module` (and an optional spec text) with the CLI.
    pub fn create(&self, name: &str, module: &Path, spec: Option<&str>) {
        let mut args = vec![
            "function".to_string(),
            "create".into(),
            name.into(),
            "--module".into(),
            module.to_str().unwrap().into(),
        ];
        if let Some(s) = spec {
            args.push("--spec".into());
            args.push(self.write(&format!("{name}.spec.toml"), s));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cli(&args).ok();
    }

    /// Polls `f` until it returns `Some`, failing after `timeout` with `what`.
    pub fn poll<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; agent stderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `edgefn-agent 0.1.0 ready: admin API http://ADDR, ...` → `ADDR`.
fn ready_address(line: &str) -> Option<String> {
    let rest = line.split_once(" ready: admin API http://")?.1;
    Some(rest.split([',', ' ']).next()?.to_string())
}

/// `..., HTTP trigger http://ADDR, ...` → `ADDR` (`None` when the trigger is off).
fn http_address(line: &str) -> Option<String> {
    let rest = line.split_once(" HTTP trigger http://")?.1;
    Some(rest.split([',', ' ']).next()?.to_string())
}

fn wait_with_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a CLI command did.
#[derive(Debug)]
pub struct Out {
    /// The command line, for messages.
    pub args: String,
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Asserts exit 0 and returns stdout as text.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert_eq!(self.code, Some(0), "`{}` failed: {self:?}", self.args);
        self.stdout()
    }

    /// Asserts exit 0 and parses stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        let text = self.ok();
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "`{}`: stdout is not one JSON document: {e}\n{text}",
                self.args
            )
        })
    }

    /// Asserts exit `code` and a stderr that mentions every one of `needles` (case-insensitive);
    /// returns stderr.
    #[track_caller]
    pub fn fails(&self, code: i32, needles: &[&str]) -> String {
        assert_eq!(
            self.code,
            Some(code),
            "`{}`: expected exit {code}: {self:?}",
            self.args
        );
        let lower = self.stderr.to_lowercase();
        for n in needles {
            assert!(
                lower.contains(&n.to_lowercase()),
                "`{}`: stderr does not mention {n:?}: {}",
                self.args,
                self.stderr
            );
        }
        self.stderr.clone()
    }
}

fn run(mut cmd: std::process::Command, args: &[&str], stdin: Option<&[u8]>) -> Out {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run edgefn-agent");
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Out {
        args: args.join(" "),
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the agent binary with `args` and nothing added (no `--agent`, no `--data-dir`).
pub fn cli_bare(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = agent();
    cmd.args(args)
        .env_remove("EDGEFN_AGENT")
        .env_remove("EDGEFN_TOKEN")
        .env_remove("EDGEFN_DATA_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd, args, None)
}

/// A minimal admin API client over ureq: status codes and bodies as they are.
#[derive(Clone)]
pub struct Http {
    http: ureq::Agent,
    base: String,
    token: Option<String>,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON: {e}: {}",
                self.status,
                self.text()
            )
        })
    }
}

impl Http {
    pub fn new(base: &str, token: Option<&str>) -> Http {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Http {
            http,
            base: base.to_string(),
            token: token.map(str::to_string),
        }
    }

    /// The same client with another token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Http {
        Http {
            token: token.map(str::to_string),
            ..self.clone()
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        let mut rb = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            rb = rb.header("authorization", format!("Bearer {t}"));
        }
        finish(rb.call())
    }

    /// `POST`/`PUT`/`PATCH`/`DELETE` with a body and extra headers.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let url = format!("{}{path}", self.base);
        if method == "DELETE" {
            let mut rb = self.http.delete(url);
            if let Some(t) = &self.token {
                rb = rb.header("authorization", format!("Bearer {t}"));
            }
            return finish(rb.call());
        }
        let mut rb = match method {
            "POST" => self.http.post(url),
            "PUT" => self.http.put(url),
            "PATCH" => self.http.patch(url),
            other => panic!("method {other}"),
        };
        if let Some(t) = &self.token {
            rb = rb.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        finish(rb.send(body))
    }

    pub fn send_json(&self, method: &str, path: &str, body: &Value) -> Resp {
        self.send(
            method,
            path,
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    /// One invocation through the API; `event_id` sets `X-Edgefn-Event-Id`.
    pub fn invoke(
        &self,
        function: &str,
        qualifier: &str,
        event_id: Option<&str>,
        data: &[u8],
    ) -> Resp {
        let mut headers = vec![("content-type", "application/octet-stream")];
        if let Some(id) = event_id {
            headers.push(("x-edgefn-event-id", id));
        }
        self.send(
            "POST",
            &format!("/v1/functions/{function}/invoke?qualifier={qualifier}"),
            &headers,
            data,
        )
    }

    /// Like [`Http::invoke`], but a connection failure is an `Err` (the agent may be killed).
    pub fn try_invoke(&self, function: &str, data: &[u8]) -> Result<Resp, String> {
        let mut rb = self
            .http
            .post(format!("{}/v1/functions/{function}/invoke", self.base));
        if let Some(t) = &self.token {
            rb = rb.header("authorization", format!("Bearer {t}"));
        }
        try_finish(rb.send(data))
    }

    /// `GET /metrics` as text.
    pub fn metrics(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    }
}

fn finish(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Resp {
    try_finish(r).expect("HTTP request to the agent")
}

fn try_finish(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Resp, String> {
    let mut resp = r.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_vec().map_err(|e| e.to_string())?;
    Ok(Resp { status, body })
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
