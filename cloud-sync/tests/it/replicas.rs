//! Two stateless replicas on one PostgreSQL (and one artifacts directory): what one writes the
//! other serves, a long-poll on one wakes for a change made on the other, concurrent publishes
//! get distinct version numbers.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{b64, header, module, unique_schema, Device, Server, PG_BASE};

fn replica_pair() -> (Server, Server, tempfile::TempDir) {
    let artifacts = tempfile::tempdir().unwrap();
    let dir_a = tempfile::tempdir().unwrap();
    edgefn_cloud::server::init(dir_a.path(), edgefn_cloud::server::DEFAULT_KEY_VALIDITY).unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    for f in [
        "root.key",
        "root.pub",
        "signing.key",
        "signing.cert",
        "operator.token",
    ] {
        std::fs::copy(dir_a.path().join(f), dir_b.path().join(f)).unwrap();
    }
    let schema = unique_schema();
    let db = format!("{PG_BASE}?schema={schema}");
    let a = Server::start_with(
        dir_a,
        db.clone(),
        Some(schema),
        Some(artifacts.path().to_owned()),
        |_| {},
    );
    let b = Server::start_with(dir_b, db, None, Some(artifacts.path().to_owned()), |_| {});
    (a, b, artifacts)
}

#[test]
fn two_replicas_share_one_postgresql() {
    let (a, b, _artifacts) = replica_pair();
    let v = a.publish("f", 1);
    // b serves a's function, its signed manifest and its artifact
    let f = b.op().ok("GET", "/v1/functions/f", None);
    assert_eq!(f["versions"][0]["version"], v);
    b.op().ok("POST", "/v1/groups", Some(&json!({"name": "g"})));
    // a device enrolled on a (token made on b) long-polls b; a deployment made on a wakes it
    let mut d = Device::enroll(&b, "pi", &["g"]);
    d.http = crate::support::Http::new(&b.url, d.http.auth.trim_start_matches("Bearer "));
    d.fetch();
    let etag = d.etag.clone().unwrap();
    let (url, token) = (a.url.clone(), a.token.clone());
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        crate::support::Http::new(&url, &token).ok(
            "POST",
            "/v1/deployments",
            Some(&json!({"group": "g", "functions": ["f:1"]})),
        )
    });
    let started = Instant::now();
    let (st, hs, body) = d.http.raw(
        "GET",
        "/v1/device/desired?wait=20",
        None,
        &[("if-none-match", &etag)],
    );
    t.join().unwrap();
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woke within the poll interval"
    );
    assert_ne!(header(&hs, "etag"), Some(etag.as_str()));
    let state = d.fetch();
    let m = &state.functions[0].versions[0];
    let (_, _, bytes) = d
        .http
        .raw("GET", &format!("/v1/artifacts/{}", m.sha256), None, &[]);
    edgefn_cloud::protocol::verify_module(m, &bytes).unwrap();
    // sequences never go backwards whichever replica answers
    let mut d_a = Device {
        http: crate::support::Http::new(&a.url, d.http.auth.trim_start_matches("Bearer ")),
        ..d
    };
    d_a.fetch();
    // concurrent publishes through both replicas get distinct numbers
    let publish = |url: String, token: String, tag: u8| {
        std::thread::spawn(move || {
            let http = crate::support::Http::new(&url, &token);
            let mut got = Vec::new();
            for i in 0..5u8 {
                http.ok(
                    "PUT",
                    "/v1/functions/f",
                    Some(&json!({"module_base64": b64(&module(tag * 10 + i))})),
                );
                let v = http.ok("POST", "/v1/functions/f/publish", None);
                got.push(v["version"].as_u64().unwrap());
            }
            got
        })
    };
    let ta = publish(a.url.clone(), a.token.clone(), 2);
    let tb = publish(b.url.clone(), b.token.clone(), 3);
    let mut all: Vec<u64> = ta
        .join()
        .unwrap()
        .into_iter()
        .chain(tb.join().unwrap())
        .collect();
    all.sort_unstable();
    let n = all.len();
    all.dedup();
    // A publish of an unchanged latest returns the newest version instead of a new one, so
    // numbers may repeat across the threads only through that rule; all versions exist.
    assert!(all.len() <= n);
    let versions = a.op().ok("GET", "/v1/functions/f", None)["versions"]
        .as_array()
        .unwrap()
        .len();
    assert!(versions >= 2, "{versions}");
    let last = b.op().ok("GET", "/v1/functions", None)[0]["last_version"]
        .as_u64()
        .unwrap();
    assert_eq!(last as usize, versions, "no gaps, no duplicates");
}

/// Schema migration 4 (PostgreSQL only): `devices` pages keep free space, so rewriting a
/// device's document is an in-place (HOT) update and concurrent rewrites for different devices
/// stop colliding in SSI's index-page locks. Checked on the table, and that SQLite, which has no
/// such setting, migrates to the same version.
#[test]
fn postgresql_devices_table_leaves_room_for_document_updates() {
    let server = Server::start(crate::support::Backend::Postgres);
    let schema = server.schema.clone().unwrap();
    let mut c = postgres::Client::connect(PG_BASE, postgres::NoTls).unwrap();
    let options: Option<Vec<String>> = c
        .query_one(
            "SELECT c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = 'devices'",
            &[&schema],
        )
        .unwrap()
        .get(0);
    assert_eq!(options, Some(vec!["fillfactor=40".to_owned()]));
    let pg: i64 = c
        .query_one(
            &format!("SELECT max(version) FROM {schema}.schema_version"),
            &[],
        )
        .unwrap()
        .get(0);
    let sqlite = Server::start(crate::support::Backend::Sqlite);
    let file = rusqlite::Connection::open(sqlite.db.trim_start_matches("sqlite://")).unwrap();
    let version: i64 = file
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    // Both at the latest migration (4 brought the setting; later ones add tables).
    let latest = edgefn_cloud::store::schema::MIGRATIONS.len() as i64;
    assert!(latest >= 4);
    assert_eq!((pg, version), (latest, latest));
}
