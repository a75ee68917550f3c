//! How an event of a flow's sources appears in a run (docs/flows.md): the envelope a trigger's
//! input lists and a wait step's result is. (The sources' definitions and checks are shared with
//! the cloud in `edgefn_cloud::protocol::flow_trigger`; this part needs the agent's events.)

use serde_json::Value;

use super::trigger::SourceDef;

/// How an event appears in a run: in a trigger's input (`{"key", "events": [E, ...]}`) and as
/// the result of a wait step. `index` is the source's place in its list (from 0).
pub fn envelope(
    index: usize,
    def: &SourceDef,
    event: &crate::pool::OwnedEvent,
    key: Option<&str>,
) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("index".into(), index.into());
    if let Some(n) = &def.name {
        o.insert("name".into(), n.clone().into());
    }
    o.insert("source".into(), event.source.clone().into());
    o.insert("subject".into(), event.subject.clone().into());
    o.insert("time_ms".into(), event.time_ms.into());
    if let Some(k) = key {
        o.insert("key".into(), k.into());
    }
    o.insert("data".into(), super::value_from_bytes(&event.data));
    Value::Object(o)
}
