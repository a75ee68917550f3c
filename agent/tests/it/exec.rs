//! `edgefn-agent exec` as a user runs it: stdout, stderr and exit codes.

use crate::support::{agent, example_path, wat, TempDir};
use std::process::Output;

fn exec(args: &[&str]) -> Output {
    agent()
        .arg("exec")
        .args(args)
        .output()
        .expect("run edgefn-agent")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn echo_prints_exactly_the_response() {
    let echo = example_path("echo");
    let out = exec(&[echo.to_str().unwrap(), "--data", "hello world"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"hello world");
    let out = exec(&[echo.to_str().unwrap()]);
    assert_eq!(
        (out.status.code(), out.stdout.len()),
        (Some(0), 0),
        "default payload is empty"
    );
}

#[test]
fn data_file_and_repeat() {
    let dir = TempDir::new("exec-data");
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, [0u8, 255, 10, 1]).unwrap();
    let echo = example_path("echo");
    let out = exec(&[
        echo.to_str().unwrap(),
        "--data-file",
        file.to_str().unwrap(),
        "--repeat",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, [[0u8, 255, 10, 1, b'\n']; 3].concat());
    let out = exec(&[
        echo.to_str().unwrap(),
        "--data",
        "x",
        "--data-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--data and --data-file conflict"
    );
}

#[test]
fn logs_and_publishes_go_to_stderr() {
    let celsius = example_path("celsius");
    let out = exec(&[
        celsius.to_str().unwrap(),
        "--subject",
        "sensors/a/t1",
        "--data",
        r#"{"seq":1,"ts_us":2,"temp":100}"#,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"seq":1,"ts_us":2,"temp_f":212.0}));
    let err = text(&out.stderr);
    assert!(err.contains("publish bench/out/t1 qos=1 bytes=34"), "{err}");

    let ta = example_path("threshold_alert");
    let out = exec(&[
        ta.to_str().unwrap(),
        "--config",
        "threshold=5",
        "--subject",
        "s",
        "--data",
        r#"{"value":9}"#,
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("warn"))
        .expect("a warn log line");
    // level, invocation id (26-char ULID), text
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(parts[1].len(), 26, "{line}");
}

#[test]
fn json_output_has_one_object_per_invocation() {
    let counter = example_path("counter");
    let out = exec(&[counter.to_str().unwrap(), "--repeat", "3", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, v) in lines.iter().enumerate() {
        assert_eq!(v["outcome"], "success");
        assert_eq!(v["response"], (i + 1).to_string());
        assert!(v["duration_us"].is_u64() && v["fuel_used"].as_u64().unwrap() > 0);
        assert!(v["logs"].is_array() && v["publishes"].is_array());
        assert_eq!(v["invocation_id"].as_str().unwrap().len(), 26);
    }
    let ids: std::collections::HashSet<_> = lines
        .iter()
        .map(|v| v["invocation_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn kv_file_persists_between_runs() {
    let dir = TempDir::new("exec-kv");
    let kv = dir.path().join("counter.json");
    let counter = example_path("counter");
    for n in 1..=3 {
        let out = exec(&[counter.to_str().unwrap(), "--kv", kv.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), n.to_string());
    }
    std::fs::write(&kv, "not json").unwrap();
    let out = exec(&[counter.to_str().unwrap(), "--kv", kv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a JSON object"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn function_failures_exit_1_with_kind_and_message() {
    let m = example_path("misbehave");
    let m = m.to_str().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (
            &["--data", "error"],
            "error: error: misbehave: requested error",
        ),
        (&["--data", "trap"], "error: trap: "),
        (
            &["--data", "loop", "--fuel", "2000000"],
            "error: out_of_fuel: ",
        ),
        (
            &[
                "--data",
                "loop",
                "--fuel",
                "100000000000",
                "--timeout-ms",
                "100",
            ],
            "error: timeout: ",
        ),
        (
            &["--data", "grow", "--memory-mb", "2"],
            "error: memory_limit: ",
        ),
        (
            &["--data", "grow-spin", "--fuel", "20000000"],
            "error: out_of_fuel: ",
        ),
        (&["--data", "recurse"], "error: trap: out of bounds memory access (a bad pointer, or the guest's shadow stack overflowed)"),
    ];
    for (args, want) in cases {
        let mut all = vec![m];
        all.extend_from_slice(args);
        let out = exec(&all);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: expected `{want}` in {err}");
        assert!(out.stdout.is_empty(), "{args:?}: no response on failure");
    }
    let out = exec(&[m, "--data", "ok", "--config", "fail_init=1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("init_failed"),
        "{}",
        text(&out.stderr)
    );
    let out = exec(&[m, "--data", &"x".repeat(300), "--max-event-bytes", "100"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("event_too_large"));
}

#[test]
fn usage_errors_and_bad_modules_exit_2() {
    let dir = TempDir::new("exec-bad");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"definitely not wasm").unwrap();
    let out = exec(&[garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a WebAssembly binary"),
        "{}",
        text(&out.stderr)
    );

    let unknown = dir.path().join("unknown.wasm");
    std::fs::write(
        &unknown,
        wat(
            r#"(module (import "env" "abort" (func)) (memory (export "memory") 1)
            (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 0))
            (func (export "edgefn_handle") (param i32 i32) (result i32) (i32.const 0)))"#,
        ),
    )
    .unwrap();
    let out = exec(&[unknown.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown import `env.abort`"));

    let out = exec(&["/nonexistent/x.wasm"]);
    assert_eq!(out.status.code(), Some(2));
    let echo = example_path("echo");
    let out = exec(&[echo.to_str().unwrap(), "--config", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
    let out = exec(&[echo.to_str().unwrap(), "--repeat", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = agent().args(["exec"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
