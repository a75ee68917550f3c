//! MQTT nudges through the local Mosquitto (127.0.0.1:1883): a change of a device's desired
//! state publishes its new sequence to `edgefn/devices/{id}/desired`.

use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::json;

use crate::support::Server;

#[test]
fn a_deployment_nudges_its_devices() {
    nudge_scenario(
        "mqtt://127.0.0.1:1883",
        None,
        MqttOptions::new(client_id(), "127.0.0.1", 1883),
    );
}

/// A private Mosquitto with a TLS listener on a free port; the nudges go through it.
#[test]
fn nudges_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = crate::support::make_certs(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "allow_anonymous true\nuser root\nlistener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            ca.display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let broker = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let broker = Kill(broker);
    crate::support::eventually(10, || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &std::fs::read(&ca).unwrap()[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut options = MqttOptions::new(client_id(), "127.0.0.1", port);
    options.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
        std::sync::Arc::new(config),
    )));
    nudge_scenario(&format!("mqtts://127.0.0.1:{port}"), Some(ca), options);
    drop(broker);
}

fn client_id() -> String {
    edgefn_cloud::keys::random_token("nudge-test-")
        .chars()
        .take(23)
        .collect()
}

fn nudge_scenario(url: &str, ca: Option<std::path::PathBuf>, subscriber: MqttOptions) {
    let dir = tempfile::tempdir().unwrap();
    edgefn_cloud::server::init(dir.path(), edgefn_cloud::server::DEFAULT_KEY_VALIDITY).unwrap();
    let db = format!("sqlite://{}", dir.path().join("cloud.db").display());
    let s = Server::start_with(dir, db, None, None, |o| {
        o.mqtt = Some(edgefn_cloud::server::nudge::BrokerOptions {
            url: url.into(),
            ca: ca.clone(),
            client_cert: None,
        })
    });
    let v = s.publish("f", 1);
    let mut devs = s.fleet("g", 1);
    let d = &mut devs[0];
    let before = d.fetch().sequence;
    let (client, mut conn) = Client::new(subscriber, 16);
    client
        .subscribe(edgefn_cloud::server::nudge::topic(&d.id), QoS::AtLeastOnce)
        .unwrap();
    // wait for the SUBACK before changing anything
    for e in conn.iter() {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = e {
            break;
        }
    }
    s.op().ok(
        "POST",
        "/v1/deployments",
        Some(&json!({"group": "g", "functions": [format!("f:{v}")]})),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let payload = loop {
        assert!(Instant::now() < deadline, "no nudge");
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => break p.payload,
            _ => continue,
        }
    };
    let n: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    let seq = n["sequence"].as_u64().unwrap();
    assert!(seq > before, "{n}");
    assert_eq!(
        d.fetch().sequence,
        seq,
        "the nudge names the document the device then gets"
    );
}
