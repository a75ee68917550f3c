//! A job's results as JSON lines, one per task in input order (docs/agent-api.md, "Jobs"):
//!
//! ```text
//! {"index":0,"status":"succeeded","attempts":1,"output":{"c":21.5},"invocation_id":"01J..."}
//! {"index":1,"status":"failed","attempts":3,"error":"error: too hot","invocation_id":"01J..."}
//! {"index":2,"status":"pending","attempts":0}
//! ```
//!
//! `output` is the function's response: embedded as JSON when it is JSON text (compacted, so
//! it stays on one line), else as a JSON string; a response that is not UTF-8 is
//! `output_base64` instead.

use super::input::compact_json;
use crate::store::jobs::{TaskResult, TaskState};
use base64::Engine as _;

/// One task's line, with its trailing newline.
pub fn line(r: &TaskResult) -> String {
    let mut out = format!(
        "{{\"index\":{},\"status\":\"{}\",\"attempts\":{}",
        r.index,
        r.state.as_str(),
        r.attempts
    );
    match r.state {
        TaskState::Succeeded => {
            let bytes = r.result.as_deref().unwrap_or_default();
            match std::str::from_utf8(bytes) {
                Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
                    out.push_str(",\"output\":");
                    out.push_str(&compact_json(text.trim()));
                }
                Ok(text) => {
                    out.push_str(",\"output\":");
                    out.push_str(&json_string(text));
                }
                Err(_) => {
                    out.push_str(",\"output_base64\":");
                    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                    out.push_str(&json_string(&b64));
                }
            }
        }
        TaskState::Failed | TaskState::Pending => {
            if let Some(error) = &r.error {
                out.push_str(",\"error\":");
                out.push_str(&json_string(error));
            }
        }
    }
    if let Some(id) = &r.invocation_id {
        out.push_str(",\"invocation_id\":");
        out.push_str(&json_string(id));
    }
    out.push_str("}\n");
    out
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(state: TaskState, output: Option<&[u8]>, error: Option<&str>) -> TaskResult {
        TaskResult {
            index: 7,
            state,
            attempts: 2,
            result: output.map(<[u8]>::to_vec),
            error: error.map(str::to_string),
            invocation_id: Some("inv".into()),
        }
    }

    #[test]
    fn json_outputs_are_embedded_on_one_line_and_text_is_a_string() {
        let json = line(&result(
            TaskState::Succeeded,
            Some(b"{ \"b\": 2,\n \"a\": 1 }\n"),
            None,
        ));
        assert_eq!(
            json,
            "{\"index\":7,\"status\":\"succeeded\",\"attempts\":2,\"output\":{\"b\":2,\"a\":1},\"invocation_id\":\"inv\"}\n"
        );
        let text = line(&result(TaskState::Succeeded, Some(b"hot\n"), None));
        assert!(text.contains(",\"output\":\"hot\\n\","), "{text}");
        let empty = line(&result(TaskState::Succeeded, Some(b""), None));
        assert!(empty.contains(",\"output\":\"\","), "{empty}");
        let binary = line(&result(TaskState::Succeeded, Some(&[0xff, 0]), None));
        assert!(binary.contains(",\"output_base64\":\"/wA=\""), "{binary}");
        for l in [json, text, empty, binary] {
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            assert_eq!(v["index"], 7);
        }
    }

    #[test]
    fn failures_carry_the_error_and_pending_tasks_only_their_attempts() {
        let failed = line(&result(TaskState::Failed, None, Some("error: \"boom\"")));
        let v: serde_json::Value = serde_json::from_str(&failed).unwrap();
        assert_eq!(v["status"], "failed");
        assert_eq!(v["error"], "error: \"boom\"");
        let mut pending = result(TaskState::Pending, None, None);
        pending.invocation_id = None;
        pending.attempts = 0;
        assert_eq!(
            line(&pending),
            "{\"index\":7,\"status\":\"pending\",\"attempts\":0}\n"
        );
    }
}
