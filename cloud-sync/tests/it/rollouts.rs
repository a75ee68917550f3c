//! Rollouts: batches, health wait, failure threshold, automatic rollback, cancel; key rotation.

use serde_json::{json, Value};

use crate::both;
use crate::support::{eventually, Backend, Server};

fn deploy(s: &Server, body: Value) -> Value {
    s.op().ok("POST", "/v1/deployments", Some(&body))
}

fn status(s: &Server, id: &str) -> Value {
    s.op().ok("GET", &format!("/v1/deployments/{id}"), None)
}

fn state_of(dep: &Value, device: &str) -> String {
    dep["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == device)
        .unwrap()["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn canary_failure(backend: Backend) {
    let s = Server::start(backend);
    let v1 = s.publish("f", 1);
    let mut devs = s.fleet("fleet", 4);
    // v1 everywhere first
    let base = deploy(
        &s,
        json!({"group": "fleet", "functions": [format!("f:{v1}")]}),
    );
    let base_id = base["id"].as_str().unwrap().to_owned();
    for d in devs.iter_mut() {
        assert_eq!(d.functions(), vec![("f".to_string(), vec![v1])]);
        d.report(&base_id, "healthy", None);
    }
    eventually(20, || {
        (status(&s, &base_id)["status"] == "succeeded").then_some(())
    });
    // v2 with a 25% canary batch; the canary fails
    let v2 = s.publish("f", 2);
    let dep = deploy(
        &s,
        json!({"group": "fleet", "functions": [format!("f:{v2}")], "batch_percent": 25, "failure_threshold_percent": 0, "health_wait_ms": 0}),
    );
    let id = dep["id"].as_str().unwrap().to_owned();
    assert_eq!(dep["batches"], 4);
    let canary: Vec<usize> = (0..4)
        .filter(|i| state_of(&dep, &devs[*i].name) == "released")
        .collect();
    assert_eq!(canary.len(), 1);
    let c = canary[0];
    assert_eq!(devs[c].functions(), vec![("f".to_string(), vec![v2])]);
    for (i, d) in devs.iter_mut().enumerate() {
        if i != c {
            assert_eq!(
                d.functions(),
                vec![("f".to_string(), vec![v1])],
                "only the canary gets v2"
            );
        }
    }
    devs[c].report(&id, "failed", Some("f version 2: init failed: unreachable"));
    let done = eventually(20, || {
        Some(status(&s, &id)).filter(|d| d["status"] != "running")
    });
    assert_eq!(done["status"], "rolled_back", "{done}");
    assert!(
        done["message"].as_str().unwrap().contains("1 of 1"),
        "{done}"
    );
    assert_eq!(state_of(&done, &devs[c].name), "failed");
    for (i, d) in devs.iter_mut().enumerate() {
        if i != c {
            assert_eq!(state_of(&done, &d.name), "rolled_back");
        }
        // everyone (the canary too) is told v1 again, with a higher sequence
        let before = d.last_sequence;
        assert_eq!(d.functions(), vec![("f".to_string(), vec![v1])]);
        assert!(d.last_sequence >= before);
    }
    let dev = s
        .op()
        .ok("GET", &format!("/v1/devices/{}", devs[c].name), None);
    assert!(
        dev["deployments"].to_string().contains("init failed"),
        "{dev}"
    );
}
both!(a_failing_canary_rolls_the_deployment_back, canary_failure);

fn batches_succeed(backend: Backend) {
    let s = Server::start(backend);
    let v1 = s.publish("f", 1);
    let mut devs = s.fleet("fleet", 3);
    let dep = deploy(
        &s,
        json!({"group": "fleet", "functions": [format!("f:{v1}")], "batch_percent": 34, "failure_threshold_percent": 50, "health_wait_ms": 300}),
    );
    let id = dep["id"].as_str().unwrap().to_owned();
    assert_eq!(dep["batches"], 2);
    // batch 1 (two devices): one fails (50% is not above the threshold), one applies
    let mut seen = 0;
    for d in devs.iter_mut() {
        if d.functions().is_empty() {
            continue;
        }
        seen += 1;
        if seen == 1 {
            d.report(&id, "failed", Some("trapped 3 times"));
        } else {
            d.report(&id, "applied", None);
        }
    }
    assert_eq!(seen, 2);
    // the applied one turns healthy after the health wait, then batch 2 is released
    let st = eventually(20, || {
        Some(status(&s, &id)).filter(|d| d["current_batch"] == 1)
    });
    assert_eq!(st["counts"]["healthy"], 1, "{st}");
    let last = devs
        .iter_mut()
        .find(|d| state_of(&st, &d.name) == "released")
        .unwrap();
    assert_eq!(last.functions().len(), 1);
    last.report(&id, "healthy", None);
    let done = eventually(20, || {
        Some(status(&s, &id)).filter(|d| d["status"] != "running")
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(
        done["message"]
            .as_str()
            .unwrap()
            .contains("1 device(s) failed"),
        "{done}"
    );
    // listing
    assert_eq!(
        s.op()
            .ok("GET", "/v1/deployments", None)
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
both!(batches_health_wait_and_threshold, batches_succeed);

fn cancel_and_rules(backend: Backend) {
    let s = Server::start(backend);
    let v1 = s.publish("f", 1);
    let mut devs = s.fleet("fleet", 2);
    let op = s.op();
    op.ok("POST", "/v1/mappings", Some(&json!({"function": "f", "name": "on-latest", "source": {"kind": "mqtt", "filter": "x"}})));
    op.ok(
        "POST",
        "/v1/mappings",
        Some(
            &json!({"function": "f:1", "name": "on-1", "source": {"kind": "mqtt", "filter": "y"}}),
        ),
    );
    s.publish("g", 1);
    for (body, code, needle) in [
        (
            json!({"group": "fleet", "functions": ["f:1"], "mappings": ["on-latest"]}),
            422,
            "does not carry",
        ),
        (
            json!({"group": "fleet", "functions": ["g:1"], "mappings": ["on-1"]}),
            422,
            "does not deploy",
        ),
        (
            json!({"group": "fleet", "functions": ["f:1"], "mappings": ["nope"]}),
            404,
            "no mapping nope",
        ),
        (
            json!({"group": "fleet", "functions": ["f:latest"]}),
            422,
            "latest",
        ),
        (
            json!({"group": "fleet", "functions": ["f:9"]}),
            404,
            "no version 9",
        ),
        (
            json!({"group": "fleet", "functions": ["f:prod"]}),
            404,
            "no alias prod",
        ),
        (
            json!({"group": "nope", "functions": ["f:1"]}),
            404,
            "no group",
        ),
        (
            json!({"group": "fleet", "functions": []}),
            422,
            "at least one",
        ),
        (
            json!({"group": "fleet", "functions": ["f:1"], "batch_percent": 0}),
            422,
            "batch",
        ),
    ] {
        let (st, v) = op.call("POST", "/v1/deployments", Some(&body));
        assert_eq!(st, code, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    let dep = deploy(
        &s,
        json!({"group": "fleet", "functions": [format!("f:{v1}")], "batch_percent": 50}),
    );
    let id = dep["id"].as_str().unwrap().to_owned();
    let c = op.ok("POST", &format!("/v1/deployments/{id}/cancel"), None);
    assert_eq!(c["status"], "cancelled");
    assert_eq!(
        op.call("POST", &format!("/v1/deployments/{id}/cancel"), None)
            .0,
        409
    );
    // the released device keeps it, the pending one never gets it
    let got: Vec<usize> = devs.iter_mut().map(|d| d.functions().len()).collect();
    assert_eq!(got.iter().sum::<usize>(), 1, "{got:?}");
    // a new deployment to the group supersedes a running one
    let a = deploy(
        &s,
        json!({"group": "fleet", "functions": [format!("f:{v1}")], "batch_percent": 50}),
    );
    let b = deploy(
        &s,
        json!({"group": "fleet", "functions": [format!("f:{v1}")], "batch_percent": 50}),
    );
    let a = status(&s, a["id"].as_str().unwrap());
    assert_eq!(a["status"], "cancelled");
    assert_eq!(
        a["message"],
        format!("superseded by {}", b["id"].as_str().unwrap())
    );
    assert_eq!(status(&s, b["id"].as_str().unwrap())["status"], "running");
    // a deployed version cannot be deleted
    let (st, v) = op.call("DELETE", "/v1/functions/f", None);
    assert_eq!(st, 409, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(&id), "{v}");
}
both!(cancel_and_deployment_rules, cancel_and_rules);

fn rotation(backend: Backend) {
    let s = Server::start(backend);
    let v1 = s.publish("f", 1);
    let mut devs = s.fleet("fleet", 2);
    let dep = deploy(
        &s,
        json!({"group": "fleet", "functions": [format!("f:{v1}")]}),
    );
    let old = devs[0].fetch();
    let old_key = old.key_id.clone();
    let op = s.op();
    let k = op.ok("POST", "/v1/keys/rotate", None);
    let new_key = k["id"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old_key);
    let keys = op.ok("GET", "/v1/keys", None);
    assert_eq!(
        keys.as_array()
            .unwrap()
            .iter()
            .map(|k| k["state"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["retiring", "active"]
    );
    // devices get a document signed by the new key, listing both, with manifests re-signed
    for d in devs.iter_mut() {
        let (_, _, body) = d.http.raw("GET", "/v1/device/desired", None, &[]);
        let doc: edgefn_cloud::protocol::DesiredDocument = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc.keys.len(), 2);
        let st = d.fetch();
        assert_eq!(st.key_id, new_key);
        assert_eq!(st.functions[0].versions[0].version, v1);
    }
    let version = op.ok("GET", "/v1/functions/f/versions/1", None);
    assert_eq!(version["manifest"]["key_id"], new_key.as_str());
    // the old key retires once every device confirms the new one
    let report = |d: &crate::support::Device, key: &str| {
        let body = json!({"sequence": d.last_sequence, "key_id": key, "deployments": [{"deployment": dep["id"], "state": "healthy"}]});
        assert_eq!(d.http.call("POST", "/v1/device/status", Some(&body)).0, 204);
    };
    report(&devs[0], &new_key);
    assert_eq!(op.ok("GET", "/v1/keys", None)[0]["state"], "retiring");
    report(&devs[1], &new_key);
    assert_eq!(op.ok("GET", "/v1/keys", None)[0]["state"], "retired");
    let (_, _, body) = devs[0].http.raw("GET", "/v1/device/desired", None, &[]);
    let doc: edgefn_cloud::protocol::DesiredDocument = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc.keys.len(), 1, "a retired key is no longer listed");
    devs[0].fetch();
    // a bad status report is refused clearly
    let (st, v) = devs[0]
        .http
        .call("POST", "/v1/device/status", Some(&json!({"sequence": "x"})));
    assert_eq!(st, 400, "{v}");
}
both!(key_rotation_retires_after_confirmation, rotation);

fn silent_device(backend: Backend) {
    let s = Server::start(backend);
    let v1 = s.publish("f", 1);
    let mut devs = s.fleet("fleet", 2);
    let dep = deploy(
        &s,
        // devs[0] must fetch, verify and report within the timeout: 3 s leaves room for a
        // debug build on a loaded machine (300 ms did not, with load average 10 on 2 cores).
        json!({"group": "fleet", "functions": [format!("f:{v1}")], "failure_threshold_percent": 50, "report_timeout_ms": 3000}),
    );
    let id = dep["id"].as_str().unwrap().to_owned();
    devs[0].fetch();
    devs[0].report(&id, "healthy", None);
    // devs[1] never reports: after the timeout it counts as failed (1 of 2 = 50%: tolerated)
    let done = eventually(20, || {
        Some(status(&s, &id)).filter(|d| d["status"] != "running")
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    let silent = done["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == devs[1].name.as_str())
        .unwrap()
        .clone();
    assert_eq!(silent["state"], "failed");
    assert!(
        silent["error"]
            .as_str()
            .unwrap()
            .contains("no status report"),
        "{silent}"
    );
    assert!(
        devs[1].functions().is_empty(),
        "a failed device is not told to run it"
    );
}
both!(a_silent_device_times_out, silent_device);
