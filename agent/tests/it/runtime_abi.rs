//! The runtime against hand-written WAT modules: validation errors, every limit, bad pointers to
//! every import, effects only on success, instance reuse and init.

use crate::support::wat;
use edgefn_agent::runtime::{FunctionEnv, Instance, Limits, LoadError, MemoryKv, Outcome, Runtime};
use edgefn_sdk::abi::status;
use edgefn_sdk::check::ShapeError;
use edgefn_sdk::Event;
use std::sync::Arc;
use std::time::Duration;

const IMPORTS: &str = r#"
  (import "edgefn" "log" (func $log (param i32 i32 i32)))
  (import "edgefn" "respond" (func $respond (param i32 i32)))
  (import "edgefn" "publish" (func $publish (param i32 i32 i32 i32 i32) (result i32)))
  (import "edgefn" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "edgefn" "kv_set" (func $kv_set (param i32 i32 i32 i32) (result i32)))
  (import "edgefn" "kv_delete" (func $kv_delete (param i32 i32) (result i32)))
  (import "edgefn" "config_get" (func $config_get (param i32 i32 i32 i32) (result i32)))
"#;

/// A module with all imports, one page of memory, `alloc` returning 1024, static data
/// "hello" at 16, "t/x" at 32, "k" at 48, "v" at 49, and `body` as the handler (must leave an i32).
fn guest(body: &str, extra: &str) -> Vec<u8> {
    wat(&format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 16) "hello")
  (data (i32.const 32) "t/x")
  (data (i32.const 48) "kv")
  (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "edgefn_handle") (param $ptr i32) (param $len i32) (result i32) {body})
  {extra})"#
    ))
}

fn event(data: &[u8]) -> Event<'_> {
    Event {
        id: "e1",
        source: "invoke",
        subject: "s",
        time_ms: 1,
        content_type: "",
        data,
        attempt: 1,
    }
}

fn start(wasm: &[u8], limits: Limits, env: FunctionEnv) -> Instance {
    let rt = Runtime::new();
    let m = rt.load(wasm).expect("module loads");
    rt.instantiate(&m, Arc::new(limits), env)
        .expect("instance starts")
}

fn run(body: &str) -> edgefn_agent::runtime::Invocation {
    let mut i = start(&guest(body, ""), Limits::default(), FunctionEnv::default());
    i.invoke(&event(b"x"))
}

#[test]
fn garbage_and_invalid_modules_are_refused_clearly() {
    let rt = Runtime::new();
    let e = rt.load(b"this is not wasm at all").unwrap_err();
    assert!(matches!(e, LoadError::Invalid(_)), "{e}");
    assert!(e.to_string().contains("not a WebAssembly binary"), "{e}");
    let mut truncated = guest("(i32.const 0)", "");
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(rt.load(&truncated), Err(LoadError::Invalid(_))));
    assert!(matches!(rt.load(&[]), Err(LoadError::Invalid(_))));
}

#[test]
fn unknown_import_is_named() {
    let rt = Runtime::new();
    let m = wat(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "edgefn_handle") (param i32 i32) (result i32) (i32.const 0)))"#,
    );
    let e = rt.load(&m).unwrap_err().to_string();
    assert!(
        e.contains("unknown import `wasi_snapshot_preview1.fd_write`"),
        "{e}"
    );
    let m = wat(r#"(module (import "edgefn" "exit" (func (param i32)))
        (memory (export "memory") 1)
        (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "edgefn_handle") (param i32 i32) (result i32) (i32.const 0)))"#);
    let e = rt.load(&m).unwrap_err().to_string();
    assert!(
        e.contains("unknown import `edgefn.exit`") && e.contains("kv_get"),
        "{e}"
    );
}

#[test]
fn wrong_import_signature_is_named() {
    let m = wat(r#"(module (import "edgefn" "log" (func (param i32)))
        (memory (export "memory") 1)
        (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "edgefn_handle") (param i32 i32) (result i32) (i32.const 0)))"#);
    let e = Runtime::new().load(&m).unwrap_err().to_string();
    assert_eq!(
        e,
        "import `edgefn.log` has signature (i32) -> (), ABI v1 expects (i32, i32, i32) -> ()"
    );
}

#[test]
fn missing_and_wrong_exports_are_named() {
    let rt = Runtime::new();
    let no_handle = wat(r#"(module (memory (export "memory") 1)
        (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 0)))"#);
    assert_eq!(
        rt.load(&no_handle).unwrap_err(),
        LoadError::Shape(ShapeError::MissingExport("edgefn_handle"))
    );
    let no_memory = wat(r#"(module (memory 1)
        (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "edgefn_handle") (param i32 i32) (result i32) (i32.const 0)))"#);
    assert_eq!(
        rt.load(&no_memory).unwrap_err(),
        LoadError::Shape(ShapeError::MissingExport("memory"))
    );
    let bad_sig = wat(r#"(module (memory (export "memory") 1)
        (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "edgefn_handle") (param i32) (result i32) (i32.const 0)))"#);
    let e = rt.load(&bad_sig).unwrap_err().to_string();
    assert!(
        e.contains("export `edgefn_handle` has signature (i32) -> (i32)"),
        "{e}"
    );
    let bad_init = guest(
        "(i32.const 0)",
        r#"(func (export "edgefn_init") (result i64) (i64.const 0))"#,
    );
    assert!(rt
        .load(&bad_init)
        .unwrap_err()
        .to_string()
        .contains("edgefn_init"));
}

#[test]
fn infinite_loop_runs_out_of_fuel_and_host_survives() {
    let wasm = guest("(loop $l (br $l)) (i32.const 0)", "");
    let limits = Limits {
        fuel: 3_000_000,
        timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let mut inst = start(&wasm, limits, FunctionEnv::default());
    let inv = inst.invoke(&event(b""));
    assert_eq!(inv.outcome, Outcome::OutOfFuel, "{:?}", inv.error);
    assert!(inv.error.unwrap().contains("3000000"));
    assert!(
        inv.fuel_used >= 2_900_000 && inv.fuel_used <= 3_000_000,
        "fuel used {}",
        inv.fuel_used
    );
    assert!(
        !inst.is_usable(),
        "an instance that ran out of fuel is spent"
    );
}

#[test]
fn infinite_loop_with_ample_fuel_times_out_on_the_wall_clock() {
    let wasm = guest("(loop $l (br $l)) (i32.const 0)", "");
    let limits = Limits {
        fuel: u64::MAX / 2,
        timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let mut inst = start(&wasm, limits, FunctionEnv::default());
    let inv = inst.invoke(&event(b""));
    assert_eq!(inv.outcome, Outcome::Timeout, "{:?}", inv.error);
    assert!(inv.error.unwrap().contains("50 ms"));
    assert!(inv.duration >= Duration::from_millis(50) && inv.duration < Duration::from_secs(5));
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let body = "(loop $l (drop (memory.grow (i32.const 1))) (br $l)) (i32.const 0)";
    let limits = Limits {
        memory_bytes: 2 << 20,
        ..Limits::default()
    };
    let mut inst = start(&guest(body, ""), limits, FunctionEnv::default());
    let inv = inst.invoke(&event(b""));
    assert_eq!(inv.outcome, Outcome::MemoryLimit, "{:?}", inv.error);
    assert!(inv.error.unwrap().contains("2097152 bytes"));
    assert!(inst.memory_bytes() <= 2 << 20);
}

#[test]
fn module_whose_initial_memory_exceeds_the_limit_is_refused() {
    let wasm = wat(r#"(module (memory (export "memory") 100)
        (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "edgefn_handle") (param i32 i32) (result i32) (i32.const 0)))"#);
    let rt = Runtime::new();
    let m = rt.load(&wasm).unwrap();
    let limits = Arc::new(Limits {
        memory_bytes: 1 << 20,
        ..Limits::default()
    });
    let e = rt
        .instantiate(&m, limits, FunctionEnv::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("6553600 bytes of initial memory") && e.contains("1048576"),
        "{e}"
    );
}

#[test]
fn unbounded_recursion_is_a_stack_overflow_trap() {
    let extra = r#"(func $r (param i32) (result i32) (i32.add (call $r (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))"#;
    let mut inst = start(
        &guest("(call $r (i32.const 0))", extra),
        Limits::default(),
        FunctionEnv::default(),
    );
    let inv = inst.invoke(&event(b""));
    assert_eq!(inv.outcome, Outcome::Trap);
    assert!(inv.error.unwrap().contains("stack overflow"));
    assert!(!inst.is_usable());
}

#[test]
fn oversized_event_is_refused_before_the_guest_runs_and_the_instance_stays() {
    let limits = Limits {
        max_event_bytes: 100,
        ..Limits::default()
    };
    let mut inst = start(&guest("(i32.const 0)", ""), limits, FunctionEnv::default());
    let big = vec![b'a'; 200];
    let inv = inst.invoke(&event(&big));
    assert_eq!(inv.outcome, Outcome::EventTooLarge);
    assert!(inv.error.unwrap().contains("max_event_bytes of 100"));
    assert_eq!(inv.fuel_used, 0);
    assert!(inst.is_usable());
    assert_eq!(inst.invoke(&event(b"small")).outcome, Outcome::Success);
}

#[test]
fn alloc_returning_zero_or_a_bad_pointer_fails_cleanly() {
    let zero = wat(r#"(module (memory (export "memory") 1)
        (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "edgefn_handle") (param i32 i32) (result i32) (i32.const 0)))"#);
    let mut inst = start(&zero, Limits::default(), FunctionEnv::default());
    let inv = inst.invoke(&event(b"x"));
    assert_eq!(inv.outcome, Outcome::EventTooLarge);
    assert!(inv.error.unwrap().contains("edgefn_alloc returned 0"));
    let oob = wat(r#"(module (memory (export "memory") 1)
        (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 65530))
        (func (export "edgefn_handle") (param i32 i32) (result i32) (i32.const 0)))"#);
    let mut inst = start(&oob, Limits::default(), FunctionEnv::default());
    let inv = inst.invoke(&event(b"0123456789"));
    assert_eq!(inv.outcome, Outcome::Trap);
    assert!(inv.error.unwrap().contains("bad pointer: edgefn_alloc"));
}

#[test]
fn out_of_bounds_pointers_to_every_import_are_traps_naming_the_import() {
    // (import, argument, call) — each passes one pointer past the 64 KiB memory.
    let cases = [
        ("log", "text", "(call $log (i32.const 2) (i32.const 65535) (i32.const 2)) (i32.const 0)"),
        ("log", "text", "(call $log (i32.const 2) (i32.const 16) (i32.const -1)) (i32.const 0)"),
        ("respond", "data", "(call $respond (i32.const 70000) (i32.const 1)) (i32.const 0)"),
        ("publish", "topic", "(call $publish (i32.const -4) (i32.const 8) (i32.const 16) (i32.const 5) (i32.const 0))"),
        ("publish", "data", "(call $publish (i32.const 32) (i32.const 3) (i32.const 65000) (i32.const 1000) (i32.const 0))"),
        ("kv_get", "key", "(call $kv_get (i32.const 65536) (i32.const 1) (i32.const 0) (i32.const 0))"),
        ("kv_get", "output buffer", "(call $kv_get (i32.const 48) (i32.const 2) (i32.const 65000) (i32.const 4096))"),
        ("kv_set", "key", "(call $kv_set (i32.const 99999) (i32.const 2) (i32.const 16) (i32.const 5))"),
        ("kv_set", "value", "(call $kv_set (i32.const 48) (i32.const 2) (i32.const 16) (i32.const 100000))"),
        ("kv_delete", "key", "(call $kv_delete (i32.const 65535) (i32.const 9))"),
        ("config_get", "key", "(call $config_get (i32.const 65535) (i32.const 9) (i32.const 0) (i32.const 0))"),
        ("config_get", "output buffer", "(call $config_get (i32.const 48) (i32.const 2) (i32.const 0) (i32.const 65537))"),
    ];
    for (import, what, body) in cases {
        let inv = run(body);
        assert_eq!(inv.outcome, Outcome::Trap, "{import}: {:?}", inv.error);
        let msg = inv.error.unwrap();
        assert!(
            msg.starts_with(&format!("bad pointer: `{import}` {what}")),
            "{import}: {msg}"
        );
        assert!(inv.effects.is_empty());
    }
}

#[test]
fn effects_apply_only_when_the_invocation_succeeds() {
    let effects = "(drop (call $publish (i32.const 32) (i32.const 3) (i32.const 16) (i32.const 5) (i32.const 1))) \
                   (drop (call $kv_set (i32.const 48) (i32.const 2) (i32.const 16) (i32.const 5)))";
    let ok = run(&format!(
        "{effects} (call $respond (i32.const 16) (i32.const 5)) (i32.const 0)"
    ));
    assert_eq!(ok.outcome, Outcome::Success);
    assert_eq!(ok.response, b"hello");
    assert_eq!(ok.effects.publishes.len(), 1);
    assert_eq!(ok.effects.publishes[0].topic, "t/x");
    assert_eq!(ok.effects.publishes[0].data, b"hello");
    assert_eq!(
        ok.effects.kv_writes.get(&b"kv"[..]),
        Some(&Some(b"hello".to_vec()))
    );

    let failed = run(&format!(
        "{effects} (call $respond (i32.const 16) (i32.const 5)) (i32.const 7)"
    ));
    assert_eq!(failed.outcome, Outcome::Error);
    assert_eq!(
        failed.error.as_deref(),
        Some("hello"),
        "the response is the error message"
    );
    assert!(failed.effects.is_empty() && failed.response.is_empty());

    let trapped = run(&format!("{effects} unreachable"));
    assert_eq!(trapped.outcome, Outcome::Trap);
    assert!(trapped.error.unwrap().contains("unreachable"));
    assert!(trapped.effects.is_empty());

    let silent = run("(i32.const 3)");
    assert_eq!(
        silent.error.as_deref(),
        Some("function returned 3 without an error message")
    );
}

#[test]
fn instance_reuse_keeps_memory_and_init_runs_once() {
    // init bumps a counter at 0; handle bumps one at 4 and responds with both (8 bytes).
    let extra = r#"(func (export "edgefn_init") (result i32)
        (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1))) (i32.const 0))"#;
    let body = "(i32.store (i32.const 4) (i32.add (i32.load (i32.const 4)) (i32.const 1))) \
                (call $respond (i32.const 0) (i32.const 8)) (i32.const 0)";
    let rt = Runtime::new();
    let m = rt.load(&guest(body, extra)).unwrap();
    assert!(m.has_init());
    let mut inst = rt
        .instantiate(&m, Arc::new(Limits::default()), FunctionEnv::default())
        .unwrap();
    for n in 1u32..=5 {
        let inv = inst.invoke(&event(b""));
        assert_eq!(inv.outcome, Outcome::Success);
        let init = u32::from_le_bytes(inv.response[0..4].try_into().unwrap());
        let served = u32::from_le_bytes(inv.response[4..8].try_into().unwrap());
        assert_eq!((init, served), (1, n));
    }
    assert_eq!(inst.served(), 5);
    // A second instance starts fresh.
    let mut other = rt
        .instantiate(&m, Arc::new(Limits::default()), FunctionEnv::default())
        .unwrap();
    assert_eq!(
        &other.invoke(&event(b"")).response[..],
        &[1, 0, 0, 0, 1, 0, 0, 0]
    );
}

#[test]
fn failing_init_is_reported_with_its_logs() {
    let extra = r#"(func (export "edgefn_init") (result i32)
        (call $log (i32.const 4) (i32.const 16) (i32.const 5)) (i32.const 1))"#;
    let rt = Runtime::new();
    let m = rt.load(&guest("(i32.const 0)", extra)).unwrap();
    match rt.instantiate(&m, Arc::new(Limits::default()), FunctionEnv::default()) {
        Err(edgefn_agent::runtime::InstanceError::Init {
            outcome,
            message,
            logs,
        }) => {
            assert_eq!(outcome, Outcome::InitFailed);
            assert!(message.contains("returned 1"));
            assert_eq!(logs.len(), 1);
            assert_eq!(logs[0].text, "hello");
        }
        other => panic!("expected init failure, got {other:?}"),
    }
    let looping = r#"(func (export "edgefn_init") (result i32) (loop $l (br $l)) (i32.const 0))"#;
    let m = rt.load(&guest("(i32.const 0)", looping)).unwrap();
    let limits = Arc::new(Limits {
        fuel: 1_000_000,
        ..Limits::default()
    });
    let e = rt
        .instantiate(&m, limits, FunctionEnv::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("out_of_fuel"), "{e}");
}

#[test]
fn kv_reads_see_own_writes_and_the_small_buffer_convention() {
    let kv = Arc::new(MemoryKv::default());
    kv.apply(
        &[(b"kv".to_vec(), Some(b"stored".to_vec()))]
            .into_iter()
            .collect(),
    );
    let env = FunctionEnv {
        kv: kv.clone(),
        ..FunctionEnv::default()
    };
    // kv_get into a 2-byte buffer: returns 6, copies nothing; then write "hello", read it back.
    let body = r#"
        (i32.store8 (i32.const 200) (i32.const 35))
        (if (i32.ne (call $kv_get (i32.const 48) (i32.const 2) (i32.const 200) (i32.const 2)) (i32.const 6)) (then unreachable))
        (if (i32.ne (i32.load8_u (i32.const 200)) (i32.const 35)) (then unreachable))
        (drop (call $kv_set (i32.const 48) (i32.const 2) (i32.const 16) (i32.const 5)))
        (if (i32.ne (call $kv_get (i32.const 48) (i32.const 2) (i32.const 300) (i32.const 64)) (i32.const 5)) (then unreachable))
        (drop (call $kv_delete (i32.const 48) (i32.const 2)))
        (if (i32.ne (call $kv_get (i32.const 48) (i32.const 2) (i32.const 300) (i32.const 64)) (i32.const -1)) (then unreachable))
        (call $respond (i32.const 300) (i32.const 5))
        (i32.const 0)"#;
    let mut inst = start(&guest(body, ""), Limits::default(), env);
    let inv = inst.invoke(&event(b""));
    assert_eq!(inv.outcome, Outcome::Success, "{:?}", inv.error);
    assert_eq!(inv.response, b"hello");
    assert_eq!(
        inv.effects.kv_writes.get(&b"kv"[..]),
        Some(&None),
        "last write (delete) wins"
    );
    assert_eq!(
        kv.snapshot().get(&b"kv"[..]).map(Vec::as_slice),
        Some(&b"stored"[..]),
        "nothing committed by the runtime"
    );
}

#[test]
fn publish_status_codes() {
    let call = |topic_ptr: i32, topic_len: i32, qos: i32| {
        format!("(call $publish (i32.const {topic_ptr}) (i32.const {topic_len}) (i32.const 16) (i32.const 5) (i32.const {qos}))")
    };
    let wildcard = wat_status(&call(60, 3, 0), "(data (i32.const 60) \"a/#\")", None);
    assert_eq!(wildcard, status::INVALID);
    assert_eq!(
        wat_status(&call(32, 3, 3), "", None),
        status::INVALID,
        "qos 3"
    );
    assert_eq!(
        wat_status(&call(32, 0, 0), "", None),
        status::INVALID,
        "empty topic"
    );
    assert_eq!(wat_status(&call(32, 3, 2), "", None), status::OK);
    assert_eq!(
        wat_status(&call(32, 3, 1), "", Some(vec!["t/+".into()])),
        status::OK
    );
    assert_eq!(
        wat_status(&call(32, 3, 1), "", Some(vec!["other/#".into()])),
        status::DENIED
    );
    // Quota: the 65th publish of an invocation is refused.
    let many = format!("(loop $l (drop {}) (local.set $ptr (i32.add (local.get $ptr) (i32.const 1))) (br_if $l (i32.lt_u (local.get $ptr) (i32.const 1088)))) {}", call(32, 3, 0), call(32, 3, 0));
    assert_eq!(wat_status(&many, "", None), status::QUOTA);
    // A denied publish is logged.
    let env = FunctionEnv {
        publish_allow: Some(Arc::new(vec!["x/#".into()])),
        ..FunctionEnv::default()
    };
    let mut inst = start(
        &guest(&format!("(drop {}) (i32.const 0)", call(32, 3, 0)), ""),
        Limits::default(),
        env,
    );
    let inv = inst.invoke(&event(b""));
    assert!(inv.effects.publishes.is_empty());
    assert!(
        inv.logs
            .iter()
            .any(|l| l.text.contains("publish to `t/x` denied")),
        "{:?}",
        inv.logs
    );
}

/// Runs `expr` (an i32 status) and returns it via the response.
fn wat_status(expr: &str, extra: &str, allow: Option<Vec<String>>) -> i32 {
    let body = format!("(i32.store (i32.const 500) {expr}) (call $respond (i32.const 500) (i32.const 4)) (i32.const 0)");
    let env = FunctionEnv {
        publish_allow: allow.map(Arc::new),
        ..FunctionEnv::default()
    };
    let mut inst = start(&guest(&body, extra), Limits::default(), env);
    let inv = inst.invoke(&event(b""));
    assert_eq!(inv.outcome, Outcome::Success, "{:?}", inv.error);
    i32::from_le_bytes(inv.response[..4].try_into().unwrap())
}

#[test]
fn config_get_and_log_limits() {
    let env = FunctionEnv {
        config: Arc::new([("kv".to_string(), "42".to_string())].into_iter().collect()),
        ..FunctionEnv::default()
    };
    let body = r#"(drop (call $config_get (i32.const 48) (i32.const 2) (i32.const 300) (i32.const 8)))
        (call $respond (i32.const 300) (i32.const 2))
        (loop $l (call $log (i32.const 2) (i32.const 16) (i32.const 5))
           (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
           (br_if $l (i32.lt_u (local.get $ptr) (i32.const 3024))))
        (i32.const 0)"#;
    let limits = Limits {
        max_log_lines: 100,
        ..Limits::default()
    };
    let mut inst = start(&guest(body, ""), limits, env);
    let inv = inst.invoke(&event(b""));
    assert_eq!(inv.response, b"42");
    assert_eq!(inv.logs.len(), 100);
    assert_eq!(inv.logs_dropped, 1900);
}

#[test]
fn logs_are_cut_at_the_line_limit_and_lossy_utf8() {
    let body = r#"(call $log (i32.const 9) (i32.const 0) (i32.const 4000)) (i32.const 0)"#;
    let limits = Limits {
        max_log_line_bytes: 64,
        ..Limits::default()
    };
    let mut inst = start(&guest(body, ""), limits, FunctionEnv::default());
    let inv = inst.invoke(&event(b""));
    assert_eq!(inv.logs.len(), 1);
    assert!(inv.logs[0].text.len() <= 64 && inv.logs[0].text.ends_with("..."));
    assert_eq!(
        inv.logs[0].level,
        edgefn_sdk::Level::Error,
        "levels above 4 clamp to error"
    );
}

/// wasmi's tail-call dispatch leaves a host stack frame per executed `memory.grow` until the
/// guest call returns to the host; fuel slicing bounds how many can pile up. A guest spinning on
/// `memory.grow` must end out of fuel, not overflow the stack of the thread running it.
#[test]
fn memory_grow_spin_cannot_overflow_the_host_stack() {
    for delta in ["0", "100000"] {
        let body =
            format!("(loop $l (drop (memory.grow (i32.const {delta}))) (br $l)) (i32.const 0)");
        let wasm = guest(&body, "");
        let handle = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                let limits = Limits {
                    fuel: 20_000_000,
                    timeout: Duration::from_secs(60),
                    ..Limits::default()
                };
                let mut inst = start(&wasm, limits, FunctionEnv::default());
                inst.invoke(&event(b"")).outcome
            })
            .unwrap();
        let outcome = handle.join().expect("the host thread survives");
        assert!(
            matches!(outcome, Outcome::OutOfFuel | Outcome::MemoryLimit),
            "delta {delta}: {outcome:?}"
        );
    }
}
