//! `edgefn-agent run` under systemd's notify protocol (the packaged unit is `Type=notify` with
//! `WatchdogSec=`): READY=1 with a status once it serves, WATCHDOG=1 pings at half the watchdog
//! period, STOPPING=1 on SIGTERM. A datagram socket stands in for systemd's $NOTIFY_SOCKET.
//! Also: the packaged default config (packaging/deb/agent.toml) is one the agent accepts.

use crate::support::{agent, TempDir};
use edgefn_agent::config::{AgentConfig, MqttUrl};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Collects notify datagrams until `done` says so or `timeout` passes.
fn receive_until(
    sock: &UnixDatagram,
    got: &mut Vec<String>,
    timeout: Duration,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while !done(got) && Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[test]
fn run_notifies_ready_watchdog_and_stopping() {
    let dir = TempDir::new("systemd-notify");
    let socket_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    let mut child = agent()
        .args([
            "run",
            "--api",
            "127.0.0.1:0",
            "--http",
            "off",
            "--mqtt",
            "none",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &socket_path)
        // 1 s watchdog: pings every 500 ms. No WATCHDOG_PID: the watchdog is ours.
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start edgefn-agent run");
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});

    let mut got = Vec::new();
    receive_until(&sock, &mut got, Duration::from_secs(30), |g| {
        g.iter().any(|m| m.lines().any(|l| l == "READY=1"))
    });
    let ready = got
        .iter()
        .find(|m| m.lines().any(|l| l == "READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 within 30 s; got {got:?}"));
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=admin API http://127.0.0.1:")),
        "READY=1 comes with a status naming the admin API: {ready:?}"
    );

    // At least three pings in the next 2.5 s (one every 500 ms).
    let before = got.len();
    let started = Instant::now();
    receive_until(&sock, &mut got, Duration::from_millis(2500), |_| false);
    let pings = got[before..]
        .iter()
        .filter(|m| m.trim() == "WATCHDOG=1")
        .count();
    assert!(
        pings >= 3,
        "expected >= 3 WATCHDOG=1 in {:?}, got {pings}: {:?}",
        started.elapsed(),
        &got[before..]
    );

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    receive_until(&sock, &mut got, Duration::from_secs(20), |g| {
        g.iter().any(|m| m.lines().any(|l| l == "STOPPING=1"))
    });
    assert!(
        got.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "no STOPPING=1 after SIGTERM: {got:?}"
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn run_without_notify_socket_does_not_notify() {
    // Outside systemd nothing is sent and nothing fails: the daemon tests run that way; here the
    // watchdog variable alone (no socket) must not make the agent complain or exit.
    let dir = TempDir::new("systemd-none");
    let mut child = agent()
        .args([
            "run",
            "--api",
            "127.0.0.1:0",
            "--http",
            "off",
            "--mqtt",
            "none",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env_remove("NOTIFY_SOCKET")
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains(" ready: "));
    assert!(ready.is_some(), "the agent printed its ready line");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the agent keeps running"
    );
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success());
    assert!(
        !rest.iter().any(|l| l.contains("notify")),
        "no notify errors without a socket: {rest:?}"
    );
}

#[test]
fn packaged_config_is_accepted() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/deb/agent.toml");
    let config = AgentConfig::load(&path).expect("packaging/deb/agent.toml loads");
    assert_eq!(
        config.data_dir.as_deref(),
        Some(Path::new("/var/lib/edgefn"))
    );
    assert_eq!(config.api_listen, "127.0.0.1:7878".parse().unwrap());
    assert_eq!(
        config.mqtt.url,
        MqttUrl::External("mqtt://127.0.0.1:1883".into()),
        "the packaged agent uses the gateway's Mosquitto"
    );
    // Everything else is the agent's default.
    let default = AgentConfig::default();
    assert_eq!(config.retention_interval, default.retention_interval);
    assert_eq!(config.sync_full, default.sync_full);
}
