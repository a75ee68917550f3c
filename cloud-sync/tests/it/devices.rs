//! Devices: enrollment, the signed desired state (ETag, long-poll), artifacts (Range), groups.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::both;
use crate::support::{header, module, Backend, Device, Http, Server};

fn enrollment(backend: Backend) {
    let s = Server::start(backend);
    let op = s.op();
    // an unknown group is refused
    let (st, v) = op.call(
        "POST",
        "/v1/devices",
        Some(&json!({"name": "pi1", "groups": ["nope"]})),
    );
    assert_eq!(st, 404, "{v}");
    op.ok("POST", "/v1/groups", Some(&json!({"name": "lab"})));
    let t = op.ok(
        "POST",
        "/v1/devices",
        Some(&json!({"name": "pi1", "groups": ["lab"]})),
    );
    let token = t["token"].as_str().unwrap();
    assert_eq!(
        op.call("POST", "/v1/devices", Some(&json!({"name": "pi1"})))
            .0,
        409
    );
    let anon = Http::new(&s.url, "x");
    let (st, v) = anon.call("POST", "/v1/enroll", Some(&json!({"token": "et-wrong"})));
    assert_eq!(st, 401, "{v}");
    let e = anon.ok("POST", "/v1/enroll", Some(&json!({"token": token})));
    assert_eq!(e["device_name"], "pi1");
    assert_eq!(e["groups"], json!(["lab"]));
    assert_eq!(
        e["root_public_key"].as_str().unwrap(),
        std::fs::read_to_string(s.path().join("root.pub"))
            .unwrap()
            .trim()
    );
    assert_eq!(e["keys"].as_array().unwrap().len(), 1);
    // one time only
    let (st, v) = anon.call("POST", "/v1/enroll", Some(&json!({"token": token})));
    assert_eq!(st, 401);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{v}"
    );
    // the credential works, a wrong one does not
    let dev = Http::new(&s.url, e["credential"].as_str().unwrap());
    assert_eq!(dev.call("GET", "/v1/device/desired", None).0, 200);
    assert_eq!(
        Http::new(&s.url, "dc-wrong")
            .call("GET", "/v1/device/desired", None)
            .0,
        401
    );
    // the operator sees it
    let d = op.ok("GET", "/v1/devices/pi1", None);
    assert_eq!(
        (d["enrolled"].as_bool(), d["groups"].clone()),
        (Some(true), json!(["lab"]))
    );
    assert_eq!(
        op.ok("GET", "/v1/groups/lab", None)["devices"],
        json!(["pi1"])
    );
    // deleting the device revokes the credential
    assert_eq!(op.call("DELETE", "/v1/devices/pi1", None).0, 204);
    assert_eq!(dev.call("GET", "/v1/device/desired", None).0, 401);
}
both!(enrollment_is_one_time, enrollment);

fn desired_state(backend: Backend) {
    let s = Server::start(backend);
    let op = s.op();
    let mut devs = s.fleet("lab", 1);
    let d = &mut devs[0];
    let first = d.fetch();
    assert!(first.functions.is_empty());
    let etag = d.etag.clone().unwrap();
    // unchanged: 304 with the same ETag
    let (st, hs, _) = d.http.raw(
        "GET",
        "/v1/device/desired",
        None,
        &[("if-none-match", &etag)],
    );
    assert_eq!(st, 304);
    assert_eq!(header(&hs, "etag"), Some(etag.as_str()));
    // long-poll: returns when a deployment changes the state
    let v = s.publish("temp", 1);
    op.ok(
        "PUT",
        "/v1/functions/temp/aliases/prod",
        Some(&json!({"version": v})),
    );
    let m = op.ok(
        "POST",
        "/v1/mappings",
        Some(&json!({"function": "temp:prod", "source": {"kind": "every", "interval_ms": 1000}})),
    );
    let url = s.url.clone();
    let op_token = s.token.clone();
    let mapping = m["id"].as_str().unwrap().to_owned();
    let deployer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        Http::new(&url, &op_token).ok(
            "POST",
            "/v1/deployments",
            Some(&json!({"group": "lab", "functions": ["temp:prod"], "mappings": [mapping]})),
        )
    });
    let started = Instant::now();
    let (st, hs, body) = d.http.raw(
        "GET",
        "/v1/device/desired?wait=20",
        None,
        &[("if-none-match", &etag)],
    );
    let waited = started.elapsed();
    let dep = deployer.join().unwrap();
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert_ne!(header(&hs, "etag"), Some(etag.as_str()));
    let doc: edgefn_cloud::protocol::DesiredDocument = serde_json::from_slice(&body).unwrap();
    let state = edgefn_cloud::protocol::verify_desired(
        &doc,
        &d.root,
        &d.id,
        first.sequence.into(),
        edgefn_cloud::now_ms(),
    )
    .unwrap();
    assert!(state.sequence > first.sequence);
    assert_eq!(state.functions.len(), 1);
    let f = &state.functions[0];
    assert_eq!(
        (f.name.as_str(), f.deployment.as_str()),
        ("temp", dep["id"].as_str().unwrap())
    );
    assert_eq!(f.aliases[0].name, "prod");
    assert_eq!(state.mappings.len(), 1);
    assert_eq!(state.mappings[0].source["kind"], "every");
    // a long-poll with nothing new ends with 304 after `wait`
    let etag2 = header(&hs, "etag").unwrap().to_owned();
    let started = Instant::now();
    let (st, _, _) = d.http.raw(
        "GET",
        "/v1/device/desired?wait=1",
        None,
        &[("if-none-match", &etag2)],
    );
    assert_eq!(st, 304);
    assert!(started.elapsed() >= Duration::from_millis(900));
    // artifacts: whole, ranges (resume), verified against the manifest
    let manifest = &f.versions[0];
    let path = format!("/v1/artifacts/{}", manifest.sha256);
    let (st, hs, whole) = d.http.raw("GET", &path, None, &[]);
    assert_eq!(st, 200);
    assert_eq!(header(&hs, "accept-ranges"), Some("bytes"));
    edgefn_cloud::protocol::verify_module(manifest, &whole).unwrap();
    assert_eq!(whole, module(1));
    let (st, hs, tail) = d.http.raw("GET", &path, None, &[("range", "bytes=5-")]);
    assert_eq!(st, 206);
    assert_eq!(
        header(&hs, "content-range"),
        Some(format!("bytes 5-12/{}", whole.len()).as_str())
    );
    let mut resumed = whole[..5].to_vec();
    resumed.extend(tail);
    edgefn_cloud::protocol::verify_module(manifest, &resumed).unwrap();
    assert_eq!(
        d.http.raw("GET", &path, None, &[("range", "bytes=99-")]).0,
        416
    );
    assert_eq!(
        d.http
            .raw(
                "GET",
                &format!("/v1/artifacts/{}", "0".repeat(64)),
                None,
                &[]
            )
            .0,
        404
    );
    assert_eq!(
        d.http
            .raw("GET", "/v1/artifacts/..%2Fcloud.db", None, &[])
            .0,
        404
    );
    assert_eq!(
        Http::new(&s.url, "nope").raw("GET", &path, None, &[]).0,
        401
    );
    // a device outside the group gets nothing
    let mut outsider = Device::enroll(&s, "outsider", &[]);
    assert!(outsider.functions().is_empty());
    // joining the group brings the succeeded deployment... once it succeeded
    d.report(dep["id"].as_str().unwrap(), "healthy", None);
    crate::support::eventually(20, || {
        (op.ok(
            "GET",
            &format!("/v1/deployments/{}", dep["id"].as_str().unwrap()),
            None,
        )["status"]
            == "succeeded")
            .then_some(())
    });
    op.ok("PUT", "/v1/groups/lab/devices/outsider", None);
    assert_eq!(outsider.functions(), vec![("temp".to_string(), vec![v])]);
    // disabling the function reaches the devices
    op.ok("POST", "/v1/functions/temp/disable", None);
    assert!(!outsider.fetch().functions[0].enabled);
}
both!(desired_state_etag_long_poll_artifacts, desired_state);

fn restart(backend: Backend) {
    let s = Server::start(backend);
    let v = s.publish("f", 1);
    let mut devs = s.fleet("lab", 1);
    s.op().ok(
        "POST",
        "/v1/deployments",
        Some(&json!({"group": "lab", "functions": [format!("f:{v}")]})),
    );
    let before = devs[0].fetch();
    let etag = devs[0].etag.clone().unwrap();
    let s = s.restart();
    let d = &mut devs[0];
    d.http = Http::new(&s.url, d.http.auth.trim_start_matches("Bearer "));
    // the same document (same sequence, 304), the credential still works, the operator token too
    let (st, _, _) = d.http.raw(
        "GET",
        "/v1/device/desired",
        None,
        &[("if-none-match", &etag)],
    );
    assert_eq!(st, 304);
    let after = d.fetch();
    assert_eq!(
        (after.sequence, after.functions.len()),
        (before.sequence, 1)
    );
    assert_eq!(
        s.op().ok("GET", "/v1/functions/f", None)["versions"][0]["version"],
        v
    );
    // and it still signs (the signing key came back from the store)
    let v2 = s.publish("f", 2);
    s.op().ok(
        "POST",
        "/v1/deployments",
        Some(&json!({"group": "lab", "functions": [format!("f:{v2}")]})),
    );
    let newer = d.fetch();
    assert!(newer.sequence > after.sequence);
    assert_eq!(newer.functions[0].versions[0].version, v2);
}
both!(state_survives_a_restart, restart);

/// Polls answered from memory still see every change, a deleted device is refused on every
/// path (also a `304` poll), and last-seen times reach the store (written in batches, and when
/// the server stops).
fn polls_from_memory(backend: Backend) {
    let s = Server::start(backend);
    let op = s.op();
    let v = s.publish("f", 1);
    let mut devs = s.fleet("lab", 2);
    op.ok("POST", "/v1/groups", Some(&json!({"name": "other"})));
    op.ok(
        "POST",
        "/v1/deployments",
        Some(&json!({"group": "other", "functions": [format!("f:{v}")]})),
    );
    let first = devs[0].fetch();
    assert!(first.functions.is_empty());
    let etag = devs[0].etag.clone().unwrap();
    let poll = |d: &Device, etag: &str| {
        d.http
            .raw(
                "GET",
                "/v1/device/desired",
                None,
                &[("if-none-match", etag)],
            )
            .0
    };
    for _ in 0..3 {
        assert_eq!(poll(&devs[0], &etag), 304);
    }
    // the operator sees the device as seen (this replica's noted time)
    let seen = op.ok("GET", &format!("/v1/devices/{}", devs[0].id), None)["last_seen_ms"]
        .as_i64()
        .expect("last_seen_ms after polls");
    assert!(seen >= edgefn_cloud::now_ms() - 60_000, "{seen}");
    // a change that only moves group membership reaches the next poll of the old ETag
    op.ok(
        "PUT",
        &format!("/v1/groups/other/devices/{}", devs[0].name),
        None,
    );
    assert_eq!(poll(&devs[0], &etag), 200);
    let now = devs[0].fetch();
    assert!(now.sequence > first.sequence);
    assert_eq!(now.functions.len(), 1);
    // the other device's document did not change: still 304 on its ETag
    devs[1].fetch();
    let etag1 = devs[1].etag.clone().unwrap();
    assert_eq!(poll(&devs[1], &etag1), 304);
    // deleting a device refuses its credential at once, on the 304 path and for artifacts
    let etag0 = devs[0].etag.clone().unwrap();
    assert_eq!(poll(&devs[0], &etag0), 304);
    assert_eq!(
        op.call("DELETE", &format!("/v1/devices/{}", devs[0].id), None)
            .0,
        204
    );
    assert_eq!(poll(&devs[0], &etag0), 401);
    let sha = &now.functions[0].versions[0].sha256;
    assert_eq!(
        devs[0]
            .http
            .raw("GET", &format!("/v1/artifacts/{sha}"), None, &[])
            .0,
        401
    );
    assert_eq!(poll(&devs[1], &etag1), 304);
    // the noted times are in the store after a stop (another server on the same store sees them)
    let seen1 = op.ok("GET", &format!("/v1/devices/{}", devs[1].id), None)["last_seen_ms"]
        .as_i64()
        .unwrap();
    let s = s.restart();
    let stored = s
        .op()
        .ok("GET", &format!("/v1/devices/{}", devs[1].id), None)["last_seen_ms"]
        .as_i64();
    assert_eq!(stored, Some(seen1));
}
both!(
    polls_answered_from_memory_see_changes_and_revocation,
    polls_from_memory
);

/// 16 devices created, enrolled, fetching their documents and reporting at once, while the
/// operator deploys to their group: every request succeeds (on PostgreSQL the serializable
/// transactions that collide are run again, never surfaced as errors).
fn concurrent_writes(backend: Backend) {
    const N: usize = 16;
    let s = Server::start(backend);
    let op = s.op();
    let v = s.publish("f", 1);
    op.ok("POST", "/v1/groups", Some(&json!({"name": "lab"})));
    let dep = op.ok(
        "POST",
        "/v1/deployments",
        Some(&json!({"group": "lab", "functions": [format!("f:{v}")]})),
    );
    let dep = dep["id"].as_str().unwrap().to_owned();
    // The device threads, the deployer and this thread start together.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(N + 2));
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let (url, token, barrier, dep) =
                (s.url.clone(), s.token.clone(), barrier.clone(), dep.clone());
            std::thread::spawn(move || {
                let op = Http::new(&url, &token);
                barrier.wait();
                let t = op.call(
                    "POST",
                    "/v1/devices",
                    Some(&json!({"name": format!("c{i}"), "groups": ["lab"]})),
                );
                assert_eq!(t.0, 201, "create device c{i}: {}", t.1);
                let anon = Http::new(&url, "none");
                let e = anon.call("POST", "/v1/enroll", Some(&json!({"token": t.1["token"]})));
                assert_eq!(e.0, 200, "enroll c{i}: {}", e.1);
                let dev = Http::new(&url, e.1["credential"].as_str().unwrap());
                let (st, _, body) = dev.raw("GET", "/v1/device/desired", None, &[]);
                assert_eq!(st, 200, "fetch c{i}: {}", String::from_utf8_lossy(&body));
                let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert!(doc["document"]["payload_base64"].is_string());
                let report = json!({"sequence": 1, "deployments":
                    [{"deployment": dep, "state": "healthy"}]});
                let r = dev.call("POST", "/v1/device/status", Some(&report));
                assert_eq!(r.0, 204, "report c{i}: {}", r.1);
            })
        })
        .collect();
    // meanwhile, the operator deploys to the group the devices join
    let deployer = {
        let (url, token, barrier) = (s.url.clone(), s.token.clone(), barrier.clone());
        std::thread::spawn(move || {
            let op = Http::new(&url, &token);
            barrier.wait();
            for _ in 0..4 {
                let r = op.call(
                    "POST",
                    "/v1/deployments",
                    Some(&json!({"group": "lab", "functions": [format!("f:{v}")]})),
                );
                assert_eq!(r.0, 201, "deploy: {}", r.1);
            }
        })
    };
    barrier.wait();
    for t in threads {
        t.join().unwrap();
    }
    deployer.join().unwrap();
    let devices = op.ok("GET", "/v1/devices", None);
    assert_eq!(devices.as_array().unwrap().len(), N, "{devices}");
    assert!(devices
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["enrolled"] == true && d["sequence"].as_u64() >= Some(1)));
}
both!(
    concurrent_enrollments_reports_and_deployments_all_succeed,
    concurrent_writes
);
