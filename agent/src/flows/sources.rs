//! How flows' event sources reach the trigger machinery: each source of a flow's `[trigger]`
//! and of its `wait` steps becomes a mapping of the trigger runtime's mapping set (not stored
//! in the `mappings` table), targeting `flow:NAME`, so MQTT subscriptions (with dedup marks and
//! acks after commit), schedules and HTTP routes are the mappings' own. Its id says which
//! source it is ([`SourceRef`]); the dispatcher hands such events to the flow's join or to its
//! waiting runs instead of starting a run per event.

use crate::store::flows::FlowInfo;
use crate::store::mappings::FLOW_TARGET;
use crate::store::Mapping;

/// Which flow source a trigger runtime mapping stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceRef {
    /// Source `index` (from 0) of flow `flow`'s `[trigger]`: id `trigger:FLOW:INDEX`.
    Trigger { flow: String, index: usize },
    /// Event `index` of wait step `step` of `flow`: id `wait:FLOW:STEP:INDEX`.
    Wait {
        flow: String,
        step: String,
        index: usize,
    },
}

impl SourceRef {
    /// The id of its mapping (dedup marks, schedule state and logs use it).
    pub fn mapping_id(&self) -> String {
        match self {
            SourceRef::Trigger { flow, index } => format!("trigger:{flow}:{index}"),
            SourceRef::Wait { flow, step, index } => format!("wait:{flow}:{step}:{index}"),
        }
    }

    /// The source a mapping id names (`None` for a stored mapping's `m-...` id).
    pub fn parse(id: &str) -> Option<SourceRef> {
        let parts: Vec<&str> = id.split(':').collect();
        match parts.as_slice() {
            ["trigger", flow, i] => Some(SourceRef::Trigger {
                flow: flow.to_string(),
                index: i.parse().ok()?,
            }),
            ["wait", flow, step, i] => Some(SourceRef::Wait {
                flow: flow.to_string(),
                step: step.to_string(),
                index: i.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// The mappings of the sources of `flows`: trigger sources of enabled flows (a disabled flow
/// starts no runs), then wait steps' events of every flow (its running runs go on), by step.
/// A source that does not convert (it was validated when stored, so this does not happen) is
/// left out.
pub fn mappings(flows: &[FlowInfo]) -> Vec<Mapping> {
    let mut out = Vec::new();
    for f in flows {
        let mut add = |r: SourceRef, s: &super::trigger::SourceDef| {
            let Ok(source) = s.source() else { return };
            let id = r.mapping_id();
            out.push(Mapping {
                name: id.clone(),
                id,
                function: format!("{FLOW_TARGET}{}", f.name),
                qualifier: "latest".into(),
                source,
                enabled: true,
                retries: 0,
                on_success: None,
                on_failure: None,
                // Schedules anchor on it and restart when it moves.
                created_ms: f.updated_ms,
                updated_ms: f.updated_ms,
            });
        };
        if let Some(t) = f.definition.trigger.as_ref().filter(|_| f.enabled) {
            for (index, s) in t.sources().0.iter().enumerate() {
                let r = SourceRef::Trigger {
                    flow: f.name.clone(),
                    index,
                };
                add(r, s);
            }
        }
        for step in &f.definition.steps {
            for (index, e) in step.wait.iter().flat_map(|w| w.events.iter().enumerate()) {
                let r = SourceRef::Wait {
                    flow: f.name.clone(),
                    step: step.name.clone(),
                    index,
                };
                add(r, e);
            }
        }
    }
    out
}

/// The HTTP paths of a definition's sources (trigger, then wait events), for uniqueness checks.
pub fn http_paths(def: &super::FlowDef) -> Vec<&str> {
    let trigger = def.trigger.iter().flat_map(|t| t.sources().0.iter());
    let waits = def
        .steps
        .iter()
        .flat_map(|s| s.wait.iter().flat_map(|w| w.events.iter()));
    trigger
        .chain(waits)
        .filter_map(|s| s.http.as_deref())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for r in [
            SourceRef::Trigger {
                flow: "f-1".into(),
                index: 3,
            },
            SourceRef::Wait {
                flow: "f_2".into(),
                step: "await".into(),
                index: 0,
            },
        ] {
            assert_eq!(SourceRef::parse(&r.mapping_id()), Some(r));
        }
        assert_eq!(SourceRef::parse("m-01ABC"), None);
        assert_eq!(SourceRef::parse("trigger:f:x"), None);
    }
}
