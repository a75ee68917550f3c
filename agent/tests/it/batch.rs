//! `Daemon::invoke_batch` in process (the MQTT link's path under load): every item commits, a
//! function's items keep their order even when its one instance holds kv writes until their
//! commit (the batch runs them in rounds), and a batch that holds instances does not let the
//! next batch of the same caller overtake it.

use std::sync::Arc;

use edgefn_agent::config::AgentConfig;
use edgefn_agent::daemon::{Daemon, Finish, InvokeRequest};
use edgefn_agent::pool::OwnedEvent;
use edgefn_agent::store::{Origin, Qualifier, Store};
use tokio::sync::Semaphore;

use crate::support::{example, TempDir};

fn daemon(dir: &TempDir) -> Daemon {
    let store = Store::open(dir.path().join("agent.db")).unwrap();
    // One instance each: `counter` writes kv, so its instance is held until each commit.
    store
        .create_function(
            "counter",
            &example("counter"),
            "max_concurrency = 1",
            Origin::Local,
        )
        .unwrap();
    store
        .create_function(
            "echo",
            &example("echo"),
            "max_concurrency = 1",
            Origin::Local,
        )
        .unwrap();
    Daemon::new(store, &AgentConfig::default())
}

fn item(function: &str, n: usize) -> (InvokeRequest, Finish) {
    let id = ulid::Ulid::new().to_string();
    let req = InvokeRequest {
        function: function.into(),
        qualifier: Qualifier::Latest,
        event: OwnedEvent {
            id: id.clone(),
            source: "mqtt".into(),
            subject: format!("t/{n}"),
            time_ms: 0,
            content_type: String::new(),
            data: format!("{n}").into_bytes(),
            attempt: 1,
        },
        invocation_id: id,
    };
    (req, Box::new(|_| Default::default()))
}

fn responses(
    results: Vec<Result<edgefn_agent::daemon::Invoked, edgefn_agent::daemon::InvokeError>>,
) -> Vec<String> {
    results
        .into_iter()
        .map(|r| {
            let inv = r.expect("every item runs").invocation;
            assert!(inv.is_success(), "{inv:?}");
            String::from_utf8(inv.response).unwrap()
        })
        .collect()
}

#[test]
fn a_batch_commits_every_item_and_keeps_each_function_s_order() {
    let dir = TempDir::new("batch-order");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = rt.block_on(async { daemon(&dir) });
    // counter and echo interleaved: echo's items run in the first round, counter's one per
    // round (its instance waits for each commit), then the rest queue one by one.
    let items: Vec<_> = (0..24)
        .map(|n| item(if n % 2 == 0 { "counter" } else { "echo" }, n))
        .collect();
    let got = responses(rt.block_on(d.invoke_batch::<()>(items, None)));
    let counts: Vec<String> = got.iter().step_by(2).cloned().collect();
    let echoes: Vec<String> = got.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(counts, (1..=12).map(|n| n.to_string()).collect::<Vec<_>>());
    assert_eq!(
        echoes,
        (0..24)
            .skip(1)
            .step_by(2)
            .map(|n: usize| n.to_string())
            .collect::<Vec<_>>()
    );
    let stored = d.store().kv_get("counter", b"count").unwrap().unwrap();
    assert_eq!(u64::from_le_bytes(stored.try_into().unwrap()), 12);
    assert_eq!(d.store().row_counts().unwrap().invocations, 24);
}

#[test]
fn the_next_batch_cannot_overtake_one_holding_instances() {
    let dir = TempDir::new("batch-turns");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = rt.block_on(async { daemon(&dir) });
    // As the MQTT link's batcher: a batch takes the turn, the next waits for it.
    let turn = Arc::new(Semaphore::new(1));
    let (first, second) = rt.block_on(async {
        let a = {
            let (d, t) = (d.clone(), turn.clone().acquire_owned().await.unwrap());
            let items = (0..8).map(|n| item("counter", n)).collect();
            tokio::spawn(async move { d.invoke_batch(items, Some(t)).await })
        };
        let t = turn.clone().acquire_owned().await.unwrap();
        let items = (8..16).map(|n| item("counter", n)).collect();
        let b = d.invoke_batch(items, Some(t)).await;
        (a.await.unwrap(), b)
    });
    assert_eq!(
        responses(first),
        (1..=8).map(|n| n.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(
        responses(second),
        (9..=16).map(|n| n.to_string()).collect::<Vec<_>>()
    );
}
