//! The example functions (built from examples/) through the runtime.

use crate::support::example;
use edgefn_agent::runtime::{
    FunctionEnv, Instance, Invocation, Limits, MemoryKv, Outcome, Runtime,
};
use edgefn_sdk::{Event, QoS};
use std::collections::BTreeMap;
use std::sync::Arc;

fn start_with(name: &str, config: &[(&str, &str)], kv: Arc<MemoryKv>) -> Instance {
    let rt = Runtime::new();
    let module = rt
        .load(&example(name))
        .unwrap_or_else(|e| panic!("{name} loads: {e}"));
    let config: BTreeMap<String, String> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let env = FunctionEnv {
        config: Arc::new(config),
        kv,
        publish_allow: None,
    };
    rt.instantiate(&module, Arc::new(Limits::default()), env)
        .unwrap_or_else(|e| panic!("{name} starts: {e}"))
}

fn start(name: &str) -> Instance {
    start_with(name, &[], Arc::default())
}

fn invoke(inst: &mut Instance, subject: &str, data: &[u8]) -> Invocation {
    let ev = Event {
        id: "t",
        source: "mqtt",
        subject,
        time_ms: 5,
        content_type: "",
        data,
        attempt: 1,
    };
    inst.invoke(&ev)
}

#[test]
fn every_example_loads_with_small_memory() {
    let rt = Runtime::new();
    for name in [
        "echo",
        "celsius",
        "threshold_alert",
        "counter",
        "rolling_average",
        "misbehave",
        "hello_c",
    ] {
        let m = rt
            .load(&example(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            m.initial_memory() <= 4 * 65536,
            "{name} starts with {} bytes",
            m.initial_memory()
        );
    }
}

#[test]
fn echo_returns_the_data_and_memory_stays_flat() {
    let mut inst = start("echo");
    let big = vec![7u8; 100_000];
    assert_eq!(invoke(&mut inst, "", &big).response, big);
    let after_first = inst.memory_bytes();
    for i in 0..200u32 {
        let data = i.to_le_bytes().repeat(1 + (i as usize % 50) * 100);
        let inv = invoke(&mut inst, "x", &data);
        assert_eq!(inv.outcome, Outcome::Success);
        assert_eq!(inv.response, data);
    }
    assert_eq!(
        inst.memory_bytes(),
        after_first,
        "memory must not grow across invocations"
    );
    assert_eq!(invoke(&mut inst, "", b"").response, b"");
}

#[test]
fn celsius_converts_publishes_and_responds() {
    let mut inst = start("celsius");
    let inv = invoke(
        &mut inst,
        "sensors/pi-7/temp",
        br#"{"seq":3,"ts_us":1700,"temp":21.5}"#,
    );
    assert_eq!(inv.outcome, Outcome::Success, "{:?}", inv.error);
    let out: serde_json::Value = serde_json::from_slice(&inv.response).unwrap();
    assert_eq!(out, serde_json::json!({"seq":3,"ts_us":1700,"temp_f":70.7}));
    assert_eq!(inv.effects.publishes.len(), 1);
    let p = &inv.effects.publishes[0];
    assert_eq!(p.topic, "bench/out/temp");
    assert_eq!(p.data, inv.response);
    assert_eq!(p.qos, QoS::AtLeastOnce);
    let bad = invoke(&mut inst, "sensors/x", b"{\"seq\": \"nope\"}");
    assert_eq!(bad.outcome, Outcome::Error);
    assert!(bad.effects.is_empty());
    assert!(!bad.error.unwrap().is_empty());
    assert!(inst.is_usable(), "a returned error keeps the instance");
}

#[test]
fn threshold_alert_publishes_only_above_the_threshold() {
    let mut inst = start_with("threshold_alert", &[("threshold", "30")], Arc::default());
    let low = invoke(&mut inst, "room/1", br#"{"value": 20}"#);
    assert_eq!(
        (low.outcome, &low.response[..]),
        (Outcome::Success, &b"ok"[..])
    );
    assert!(low.effects.publishes.is_empty());
    let high = invoke(&mut inst, "room/1", br#"{"value": 31.5}"#);
    assert_eq!(&high.response[..], b"alert");
    assert_eq!(high.effects.publishes.len(), 1);
    assert_eq!(high.effects.publishes[0].topic, "alerts/room/1");
    let alert: serde_json::Value = serde_json::from_slice(&high.effects.publishes[0].data).unwrap();
    assert_eq!(alert["value"], 31.5);
    assert_eq!(alert["threshold"], 30.0);
    assert!(high.logs.iter().any(|l| l.level == edgefn_sdk::Level::Warn));

    let mut missing = start("threshold_alert");
    let inv = invoke(&mut missing, "room/1", br#"{"value": 1}"#);
    assert_eq!(inv.outcome, Outcome::Error);
    assert!(inv.error.unwrap().contains("threshold"));
}

#[test]
fn counter_keeps_state_in_kv_through_commits() {
    let kv = Arc::new(MemoryKv::default());
    let mut inst = start_with("counter", &[], kv.clone());
    for n in 1..=3 {
        let inv = invoke(&mut inst, "", b"");
        assert_eq!(inv.response, n.to_string().as_bytes());
        kv.apply(&inv.effects.kv_writes);
    }
    // A fresh instance sees the committed count.
    let mut fresh = start_with("counter", &[], kv.clone());
    assert_eq!(invoke(&mut fresh, "", b"").response, b"4");
    // Without committing, the count does not move.
    assert_eq!(invoke(&mut fresh, "", b"").response, b"4");
}

#[test]
fn rolling_average_over_a_window() {
    let kv = Arc::new(MemoryKv::default());
    let mut inst = start_with("rolling_average", &[("window", "3")], kv.clone());
    let mut last = Vec::new();
    for v in ["1", "2", "3", "10"] {
        let inv = invoke(&mut inst, "", v.as_bytes());
        assert_eq!(inv.outcome, Outcome::Success, "{:?}", inv.error);
        kv.apply(&inv.effects.kv_writes);
        last = inv.response;
    }
    let avg: f64 = std::str::from_utf8(&last).unwrap().trim().parse().unwrap();
    assert!((avg - 5.0).abs() < 1e-9, "avg of 2,3,10 = {avg}");
}

#[test]
fn misbehave_commands_give_their_outcomes_and_the_host_survives() {
    let cases = [
        ("loop", Outcome::OutOfFuel),
        ("grow", Outcome::MemoryLimit),
        ("recurse", Outcome::Trap),
        ("trap", Outcome::Trap),
        ("panic", Outcome::Trap),
        ("error", Outcome::Error),
        ("publish-then-error", Outcome::Error),
    ];
    let rt = Runtime::new();
    let module = rt.load(&example("misbehave")).unwrap();
    let limits = Arc::new(Limits {
        fuel: 20_000_000,
        memory_bytes: 4 << 20,
        ..Limits::default()
    });
    for (cmd, want) in cases {
        let mut inst = rt
            .instantiate(&module, limits.clone(), FunctionEnv::default())
            .unwrap();
        let inv = invoke(&mut inst, "", cmd.as_bytes());
        assert_eq!(inv.outcome, want, "{cmd}: {:?}", inv.error);
        assert!(inv.effects.is_empty(), "{cmd} left effects");
        assert_eq!(
            inst.is_usable(),
            !want.ends_instance() && want != Outcome::Trap,
            "{cmd}"
        );
        // The same module keeps serving afterwards.
        let mut next = rt
            .instantiate(&module, limits.clone(), FunctionEnv::default())
            .unwrap();
        assert_eq!(invoke(&mut next, "", b"ok").response, b"ok");
    }
}

#[test]
fn misbehave_instance_reuse_and_init_once() {
    let mut inst = start("misbehave");
    for _ in 0..4 {
        assert_eq!(invoke(&mut inst, "", b"ok").outcome, Outcome::Success);
    }
    assert_eq!(invoke(&mut inst, "", b"instance-count").response, b"5");
    assert_eq!(invoke(&mut inst, "", b"init-count").response, b"1");
    let rt = Runtime::new();
    let module = rt.load(&example("misbehave")).unwrap();
    let env = FunctionEnv {
        config: Arc::new([("fail_init".into(), "1".into())].into()),
        ..FunctionEnv::default()
    };
    let err = rt
        .instantiate(&module, Arc::new(Limits::default()), env)
        .unwrap_err();
    assert!(err.to_string().contains("edgefn_init"), "{err}");
}

#[test]
fn c_example_runs() {
    let kv = Arc::new(MemoryKv::default());
    let mut inst = start_with("hello_c", &[], kv.clone());
    let inv = invoke(&mut inst, "greet/me", b"world");
    assert_eq!(inv.outcome, Outcome::Success, "{:?}", inv.error);
    let text = String::from_utf8(inv.response).unwrap();
    assert!(
        text.contains("greet/me") && text.contains("world"),
        "{text}"
    );
    assert!(
        inv.logs.iter().any(|l| l.text.contains("greet/me")),
        "{:?}",
        inv.logs
    );
}
