//! The registry's lifecycle and its rules, on both backends.

use serde_json::json;

use crate::both;
use crate::support::{b64, eventually, module, Backend, Server};

fn lifecycle(backend: Backend) {
    let s = Server::start(backend);
    let op = s.op();
    // create
    let v = op.ok("POST", "/v1/functions", Some(&json!({"name": "temp", "module_base64": b64(&module(1)), "spec": "[limits]\nfuel = 5000\n"})));
    assert_eq!(v["latest"]["size"], 13);
    let (st, v) = op.call(
        "POST",
        "/v1/functions",
        Some(&json!({"name": "temp", "module_base64": b64(&module(1))})),
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    // publish, and again without a change
    assert_eq!(
        op.ok(
            "POST",
            "/v1/functions/temp/publish",
            Some(&json!({"description": "first"}))
        ),
        json!({"version": 1, "created": true})
    );
    assert_eq!(
        op.ok("POST", "/v1/functions/temp/publish", None),
        json!({"version": 1, "created": false})
    );
    // update latest, publish 2
    op.ok(
        "PUT",
        "/v1/functions/temp",
        Some(&json!({"module_base64": b64(&module(2))})),
    );
    assert_eq!(
        op.ok("POST", "/v1/functions/temp/publish", None)["version"],
        2
    );
    // the version carries a signed manifest naming module hash and size
    let v = op.ok("GET", "/v1/functions/temp/versions/1", None);
    let m: edgefn_cloud::protocol::Signed<edgefn_cloud::protocol::Manifest> =
        serde_json::from_value(v["manifest"].clone()).unwrap();
    let m = m.payload_unverified().unwrap();
    assert_eq!((m.function.as_str(), m.version, m.size), ("temp", 1, 13));
    assert_eq!(
        m.sha256,
        edgefn_cloud::protocol::verify::sha256_hex(&module(1))
    );
    assert_eq!(m.spec, "[limits]\nfuel = 5000\n");
    assert_eq!(m.description, "first");
    // aliases with weights
    let a = op.ok(
        "PUT",
        "/v1/functions/temp/aliases/prod",
        Some(&json!({"version": 1, "also_version": 2, "weight": 0.1})),
    );
    assert_eq!(
        (
            a["version"].as_u64(),
            a["also_version"].as_u64(),
            a["weight"].as_f64()
        ),
        (Some(1), Some(2), Some(0.1))
    );
    for (body, code, needle) in [
        (
            json!({"version": 1, "also_version": 2, "weight": 1.5}),
            422,
            "weight",
        ),
        (
            json!({"version": 1, "also_version": 1, "weight": 0.5}),
            422,
            "differ",
        ),
        (json!({"version": 1, "also_version": 2}), 422, "together"),
        (json!({"version": 7}), 404, "no version 7"),
    ] {
        let (st, v) = op.call("PUT", "/v1/functions/temp/aliases/beta", Some(&body));
        assert_eq!(st, code, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    let (st, v) = op.call(
        "PUT",
        "/v1/functions/temp/aliases/latest",
        Some(&json!({"version": 1})),
    );
    assert_eq!(st, 422, "{v}");
    assert_eq!(
        op.ok("GET", "/v1/functions/temp/aliases", None)
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // a version an alias uses cannot go
    let (st, v) = op.call("DELETE", "/v1/functions/temp/versions/2", None);
    assert_eq!(st, 409, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("prod"),
        "{v}"
    );
    let (st, _) = op.call("DELETE", "/v1/functions/temp/aliases/prod", None);
    assert_eq!(st, 204);
    assert_eq!(
        op.call("DELETE", "/v1/functions/temp/versions/2", None).0,
        204
    );
    // numbers are never reused
    op.ok(
        "PUT",
        "/v1/functions/temp",
        Some(&json!({"module_base64": b64(&module(3))})),
    );
    assert_eq!(
        op.ok("POST", "/v1/functions/temp/publish", None)["version"],
        3
    );
    // enable/disable, list, get
    assert_eq!(
        op.ok("POST", "/v1/functions/temp/disable", None)["enabled"],
        false
    );
    assert_eq!(
        op.ok("POST", "/v1/functions/temp/enable", None)["enabled"],
        true
    );
    let list = op.ok("GET", "/v1/functions", None);
    assert_eq!(list[0]["name"], "temp");
    assert_eq!(list[0]["versions"], 2);
    assert_eq!(list[0]["last_version"], 3);
    let f = op.ok("GET", "/v1/functions/temp", None);
    assert_eq!(f["versions"].as_array().unwrap().len(), 2);
    // delete
    assert_eq!(op.call("DELETE", "/v1/functions/temp", None).0, 204);
    assert_eq!(op.call("GET", "/v1/functions/temp", None).0, 404);
}
both!(function_lifecycle, lifecycle);

fn bad_input(backend: Backend) {
    let s = Server::start(backend);
    let op = s.op();
    let create = |name: &str, module: &[u8], spec: &str| {
        op.call(
            "POST",
            "/v1/functions",
            Some(&json!({"name": name, "module_base64": b64(module), "spec": spec})),
        )
    };
    let (st, v) = create("f", b"hello world", "");
    assert_eq!(st, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a WebAssembly binary"),
        "{v}"
    );
    let (st, v) = create("f", b"\0asm\x0d\0\x01\0", "");
    assert_eq!(st, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("component"),
        "{v}"
    );
    let (st, v) = create("f", &module(1), "max_concurency = 2");
    assert_eq!(st, 422);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_concurency"),
        "{v}"
    );
    let (st, v) = create("f", &module(1), "[limits]\nmemory_mb = 0");
    assert_eq!(st, 422);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("memory_mb"),
        "{v}"
    );
    let (st, v) = create("bad name", &module(1), "");
    assert_eq!(st, 422, "{v}");
    let (st, v) = op.call(
        "POST",
        "/v1/functions",
        Some(&json!({"name": "f", "module_base64": "!!"})),
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
    let (st, v) = op.call(
        "POST",
        "/v1/functions",
        Some(&json!({"name": "f", "module_base64": "", "extra": 1})),
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(op.call("POST", "/v1/functions/nope/publish", None).0, 404);
    assert_eq!(op.call("GET", "/v1/functions/nope/versions/0", None).0, 400);
    // wrong and missing tokens
    let (st, v) = s.with_token("wrong").call("GET", "/v1/functions", None);
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(s.with_token("").call("GET", "/v1/functions", None).0, 401);
    // a device credential is not an operator token
    s.fleet("g", 1);
    let d = crate::support::Device::enroll(&s, "other", &[]);
    assert_eq!(d.http.call("GET", "/v1/functions", None).0, 401);
}
both!(bad_input_is_refused_clearly, bad_input);

fn mappings(backend: Backend) {
    let s = Server::start(backend);
    let op = s.op();
    s.publish("celsius", 1);
    let m = op.ok("POST", "/v1/mappings", Some(&json!({"function": "celsius:1", "source": {"kind": "mqtt", "filter": "sensors/+/temp"}})));
    let id = m["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("m-"));
    assert_eq!(
        (
            m["qualifier"].as_str(),
            m["source"]["qos"].as_u64(),
            m["retries"].as_u64()
        ),
        (Some("1"), Some(1), Some(2))
    );
    let h = op.ok("POST", "/v1/mappings", Some(&json!({"function": "celsius", "name": "convert", "source": {"kind": "http", "path": "/convert"}, "on_failure": "topic:errors"})));
    assert_eq!(h["name"], "convert");
    for (body, code, needle) in [
        (
            json!({"function": "celsius", "source": {"kind": "http", "path": "/convert"}}),
            409,
            "/convert",
        ),
        (
            json!({"function": "celsius", "source": {"kind": "mqtt", "filter": "a/#/b"}}),
            422,
            "a/#/b",
        ),
        (
            json!({"function": "celsius", "source": {"kind": "every", "interval_ms": 5}}),
            422,
            "too short",
        ),
        (
            json!({"function": "celsius", "source": {"kind": "cron", "expr": "nonsense"}}),
            422,
            "cron",
        ),
        (
            json!({"function": "celsius", "source": {"kind": "mqtt", "filter": "x"}, "on_success": "topic:a/+"}),
            422,
            "destination",
        ),
        (
            json!({"function": "nope", "source": {"kind": "mqtt", "filter": "x"}}),
            404,
            "nope",
        ),
        (
            json!({"function": "celsius", "source": {"kind": "mqtt", "filter": "x"}, "retries": 101}),
            422,
            "101 retries is too many: at most 100",
        ),
        // The agent's rules and words, from protocol::mapping (shared with the agent).
        (
            json!({"function": "celsius", "source": {"kind": "cron", "expr": "0 0 0 30 2 *"}}),
            422,
            "never fires",
        ),
        (
            json!({"function": "celsius", "source": {"kind": "stream-mqtt", "filter": "a/+", "partition_key": "topic:3"}}),
            422,
            "partition key `topic:3`: the filter \"a/+\" has only 2 levels",
        ),
        (
            json!({"function": "celsius", "source": {"kind": "stream-mqtt", "filter": "a", "batch_size": 0}}),
            422,
            "batch size 0 is out of range: 1 to 10000",
        ),
        (
            json!({"function": "celsius", "source": {"kind": "stream-mqtt", "filter": "a", "batch_window_ms": 300001}}),
            422,
            "batch window 300001ms is too long",
        ),
        (
            json!({"function": "celsius", "source": {"kind": "stream-file", "path": "data.csv", "format": "csv"}}),
            422,
            "bad stream file \"data.csv\": give an absolute path",
        ),
        (
            json!({"function": "celsius", "source": {"kind": "stream-file", "path": "/d.csv", "format": "csv", "partition_key": "topic"}}),
            422,
            "partition key `topic` is for MQTT streams",
        ),
        (
            json!({"function": "flow:bad name", "source": {"kind": "mqtt", "filter": "x"}}),
            422,
            "invalid name \"bad name\"",
        ),
        (
            json!({"function": "celsius", "name": "m-x", "source": {"kind": "mqtt", "filter": "x"}}),
            422,
            "reserved for mapping ids",
        ),
    ] {
        let (st, v) = op.call("POST", "/v1/mappings", Some(&body));
        assert_eq!(st, code, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    let (st, _) = op.call(
        "POST",
        "/v1/mappings",
        Some(&json!({"function": "celsius", "source": {"kind": "smoke"}})),
    );
    assert_eq!(st, 400);
    // A bad partition key or file format is refused while the body is read (as by the agent).
    for (source, needle) in [
        (
            json!({"kind": "stream-mqtt", "filter": "a", "partition_key": "device"}),
            "bad partition key \"device\"",
        ),
        (
            json!({"kind": "stream-file", "path": "/a", "format": "xml"}),
            "xml",
        ),
    ] {
        let (st, v) = op.call(
            "POST",
            "/v1/mappings",
            Some(&json!({"function": "celsius", "source": source})),
        );
        assert_eq!(st, 400, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    // Streams and flow targets are taken, with the agent's defaults.
    let sm = op.ok("POST", "/v1/mappings", Some(&json!({"function": "celsius", "source": {"kind": "stream-mqtt", "filter": "plant/+/t", "partition_key": "topic:2", "batch_window_ms": 500}})));
    assert_eq!(
        sm["source"],
        json!({"kind": "stream-mqtt", "filter": "plant/+/t", "partition_key": "topic:2", "batch_size": 100, "batch_window_ms": 500})
    );
    let sf = op.ok("POST", "/v1/mappings", Some(&json!({"function": "celsius", "source": {"kind": "stream-file", "path": "/var/lib/in.jsonl", "format": "jsonl", "follow": true, "partition_key": "json:/device"}})));
    assert_eq!(sf["source"]["partition_key"], "json:/device");
    let fm = op.ok(
        "POST",
        "/v1/mappings",
        Some(
            &json!({"function": "flow:orders", "source": {"kind": "mqtt", "filter": "orders/new"}}),
        ),
    );
    assert_eq!(
        (fm["function"].as_str(), fm["qualifier"].as_str()),
        (Some("flow:orders"), Some("latest"))
    );
    let fm = op.ok(
        "PATCH",
        &format!("/v1/mappings/{}", sm["id"].as_str().unwrap()),
        Some(&json!({"function": "flow:other"})),
    );
    assert_eq!(fm["function"], "flow:other");
    for m in [&sm, &sf] {
        assert_eq!(
            op.call(
                "DELETE",
                &format!("/v1/mappings/{}", m["id"].as_str().unwrap()),
                None
            )
            .0,
            204
        );
    }
    let fid = op
        .ok("GET", "/v1/mappings", None)
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["function"] == "flow:orders")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        op.call("DELETE", &format!("/v1/mappings/{fid}"), None).0,
        204
    );
    // update, pause/resume, by name
    let u = op.ok(
        "PATCH",
        &format!("/v1/mappings/{id}"),
        Some(&json!({"retries": 5, "on_success": "function:other:prod"})),
    );
    assert_eq!(
        (u["retries"].as_u64(), u["on_success"].as_str()),
        (Some(5), Some("function:other:prod"))
    );
    let u = op.ok(
        "PATCH",
        &format!("/v1/mappings/{id}"),
        Some(&json!({"on_success": null})),
    );
    assert!(u["on_success"].is_null());
    assert_eq!(
        op.ok("POST", "/v1/mappings/convert/pause", None)["enabled"],
        false
    );
    assert_eq!(
        op.ok("POST", "/v1/mappings/convert/resume", None)["enabled"],
        true
    );
    assert_eq!(
        op.ok("GET", "/v1/mappings?function=celsius", None)
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(op.call("DELETE", "/v1/mappings/convert", None).0, 204);
    assert_eq!(op.call("GET", "/v1/mappings/convert", None).0, 404);
}
both!(mapping_rules, mappings);

#[test]
fn a_large_module_is_accepted() {
    let s = Server::start(Backend::Sqlite);
    let mut m = module(9);
    // a 3 MiB custom section: above axum's default body limit once base64-encoded
    let payload = vec![7u8; 3 << 20];
    m.push(0);
    let mut len = payload.len() as u32 + 2;
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        m.push(if len > 0 { b | 0x80 } else { b });
        if len == 0 {
            break;
        }
    }
    m.extend_from_slice(&[1, b'x']);
    m.extend_from_slice(&payload);
    let v = s.op().ok(
        "POST",
        "/v1/functions",
        Some(&json!({"name": "big", "module_base64": b64(&m)})),
    );
    assert_eq!(v["latest"]["size"].as_u64(), Some(m.len() as u64));
}

fn flows(backend: Backend) {
    let s = Server::start(backend);
    let op = s.op();
    s.publish("celsius", 1);
    let def = json!({"steps": [{"name": "convert", "function": "celsius:1"}]});
    let f = op.ok(
        "POST",
        "/v1/flows",
        Some(&json!({"name": "conv", "definition": def})),
    );
    assert_eq!(
        (
            f["name"].as_str(),
            f["revision"].as_u64(),
            f["enabled"].as_bool()
        ),
        (Some("conv"), Some(1), Some(true)),
        "{f}"
    );
    // The agent's parser and rules, with its words (they name the step and field).
    for (body, code, needle) in [
        (
            json!({"name": "conv", "definition": def}),
            409,
            "already exists",
        ),
        (json!({"definition": def}), 422, "the flow has no name"),
        (
            json!({"name": "bad name", "definition": def}),
            422,
            "invalid flow name \"bad name\"",
        ),
        (
            json!({"name": "x", "definition": {"name": "y", "steps": def["steps"]}}),
            422,
            "is named \"y\" but is stored as \"x\"",
        ),
        (
            json!({"name": "x", "definition": {"steps": [{"name": "a"}]}}),
            422,
            "step \"a\" does nothing",
        ),
        (
            json!({"name": "x", "definition": {"steps": [{"name": "a", "function": "celsius", "next": "zz"}]}}),
            422,
            "step \"a\": next names unknown step \"zz\"",
        ),
        (
            json!({"name": "x", "definition": {"steps": [{"name": "a", "function": "celsius", "retries": 99}]}}),
            422,
            "step \"a\": retries 99 is too many",
        ),
        (
            json!({"name": "x", "definition": {"steps": [{"name": "a", "function": "nope"}]}}),
            422,
            "step \"a\": unknown function \"nope\" (create it first)",
        ),
        (
            json!({"name": "x", "definition": {"steps": [{"name": "a", "function": "celsius", "nxt": "b"}]}}),
            422,
            "nxt",
        ),
    ] {
        let (st, v) = op.call("POST", "/v1/flows", Some(&body));
        assert_eq!(st, code, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    // Update (a new revision only when the definition changes), enable/disable, list.
    let def2 = json!({"description": "two", "steps": [{"name": "convert", "function": "celsius:1", "retries": 3}]});
    assert_eq!(
        op.ok("PUT", "/v1/flows/conv", Some(&json!({"definition": def2})))["revision"],
        2
    );
    assert_eq!(
        op.ok("PUT", "/v1/flows/conv", Some(&json!({"definition": def2})))["revision"],
        2
    );
    assert_eq!(
        op.ok("POST", "/v1/flows/conv/disable", None)["enabled"],
        false
    );
    assert_eq!(
        op.ok("POST", "/v1/flows/conv/enable", None)["enabled"],
        true
    );
    let list = op.ok("GET", "/v1/flows", None);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["definition"]["steps"][0]["retries"], 3, "{list}");
    // A deployment carries it, pinned.
    let mut dev = s.fleet("fl", 1).remove(0);
    let d = op.ok(
        "POST",
        "/v1/deployments",
        Some(&json!({"group": "fl", "functions": ["celsius:1"], "flows": ["conv"]})),
    );
    assert_eq!(d["flows"], json!(["conv"]), "{d}");
    let state = dev.fetch();
    assert_eq!(state.flows.len(), 1, "{state:?}");
    assert_eq!(
        (state.flows[0].name.as_str(), state.flows[0].enabled),
        ("conv", true)
    );
    assert_eq!(state.flows[0].definition["steps"][0]["retries"], 3);
    assert_eq!(state.flows[0].deployment, d["id"].as_str().unwrap());
    // The registry's enabled flag reaches the document (like a function's).
    op.ok("POST", "/v1/flows/conv/disable", None);
    let state = eventually(10, || {
        let st = dev.fetch();
        (!st.flows[0].enabled).then_some(st)
    });
    assert_eq!(state.flows[0].name, "conv");
    let (st, v) = op.call(
        "POST",
        "/v1/deployments",
        Some(&json!({"group": "fl", "functions": ["celsius:1"], "flows": ["nope"]})),
    );
    assert_eq!(st, 404, "{v}");
    assert_eq!(op.call("DELETE", "/v1/flows/conv", None).0, 204);
    assert_eq!(op.call("GET", "/v1/flows/conv", None).0, 404);
}
both!(flow_rules, flows);
