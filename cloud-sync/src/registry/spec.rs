//! Function spec validation (docs/function-spec.md): the agent's keys and ranges; unknown keys
//! are errors that name them.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Raw {
    min_instances: Option<usize>,
    max_concurrency: Option<usize>,
    max_queue: Option<usize>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    permissions: RawPermissions,
    #[serde(default)]
    destinations: RawDestinations,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    fuel: Option<u64>,
    memory_mb: Option<usize>,
    timeout_ms: Option<u64>,
    max_event_bytes: Option<usize>,
}

/// Where a function's asynchronous results go (`[destinations]`, docs/function-spec.md).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDestinations {
    on_success: Option<String>,
    on_failure: Option<String>,
    retries: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPermissions {
    publish: Option<Vec<String>>,
}

/// Checks a spec; the error reads `bad function spec: ...` and names the key.
pub fn validate_spec(text: &str) -> Result<(), String> {
    let raw: Raw =
        toml::from_str(text).map_err(|e| format!("bad function spec: {}", located(text, &e)))?;
    let bad = |m: String| Err(format!("bad function spec: {m}"));
    if raw.limits.fuel == Some(0) {
        return bad("limits.fuel must be > 0".into());
    }
    if let Some(m) = raw.limits.memory_mb {
        if !(1..=4096).contains(&m) {
            return bad(format!("limits.memory_mb must be 1..=4096, got {m}"));
        }
    }
    if let Some(t) = raw.limits.timeout_ms {
        if !(1..=3_600_000).contains(&t) {
            return bad(format!("limits.timeout_ms must be 1..=3600000, got {t}"));
        }
    }
    if let Some(e) = raw.limits.max_event_bytes {
        if !(16..=64 << 20).contains(&e) {
            return bad(format!(
                "limits.max_event_bytes must be 16..=67108864, got {e}"
            ));
        }
    }
    let max_concurrency = raw.max_concurrency.unwrap_or(1);
    if !(1..=256).contains(&max_concurrency) {
        return bad(format!(
            "max_concurrency must be 1..=256, got {max_concurrency}"
        ));
    }
    let min_instances = raw.min_instances.unwrap_or(0);
    if min_instances > max_concurrency {
        return bad(format!(
            "min_instances ({min_instances}) cannot exceed max_concurrency ({max_concurrency})"
        ));
    }
    for (k, v) in &raw.config {
        if !matches!(
            v,
            toml::Value::String(_)
                | toml::Value::Integer(_)
                | toml::Value::Float(_)
                | toml::Value::Boolean(_)
        ) {
            return bad(format!(
                "config.{k} must be a string, number or boolean, got {}",
                v.type_str()
            ));
        }
    }
    for f in raw.permissions.publish.iter().flatten() {
        if let Err(e) = super::topic::check_filter(f) {
            return bad(format!("permissions.publish: `{f}`: {e}"));
        }
    }
    let d = &raw.destinations;
    for (key, text) in [("on_success", &d.on_success), ("on_failure", &d.on_failure)] {
        if let Some(t) = text {
            super::mapping::check_destination(t)
                .map_err(|e| format!("bad function spec: destinations.{key}: {e}"))?;
        }
    }
    if let Some(r) = d.retries.filter(|r| *r > 10) {
        return bad(format!("destinations.retries must be 0..=10, got {r}"));
    }
    Ok(())
}

fn located(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let Some(start) = e.span().map(|s| s.start) else {
        return message.to_string();
    };
    let before = text.get(..start).unwrap_or(text);
    let number = before.matches('\n').count() + 1;
    match text.lines().nth(number - 1).map(str::trim) {
        Some(line) if !line.is_empty() => format!("line {number} `{line}`: {message}"),
        _ => format!("line {number}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_mistakes() {
        assert!(validate_spec("").is_ok());
        assert!(validate_spec("[limits]\nfuel = 5\n").is_ok());
        assert!(validate_spec("max_concurency = 2")
            .unwrap_err()
            .contains("max_concurency"));
        assert!(validate_spec("[limits]\nmemory_mb = 0")
            .unwrap_err()
            .contains("memory_mb"));
        assert!(validate_spec("[permissions]\npublish = [\"a/#/b\"]")
            .unwrap_err()
            .contains("a/#/b"));
    }

    #[test]
    fn destinations_follow_the_agents_rules() {
        // The agent's spec has `[destinations]` (docs/function-spec.md): the cloud takes it too.
        let spec = "[destinations]\non_success = \"topic:out/ok\"\n\
                    on_failure = \"function:fallback:prod\"\nretries = 3\n";
        assert_eq!(validate_spec(spec), Ok(()));
        let e = validate_spec("[destinations]\non_failure = \"queue:x\"").unwrap_err();
        assert!(
            e.contains("destinations.on_failure") && e.contains("queue:x"),
            "{e}"
        );
        let e = validate_spec("[destinations]\nretries = 11").unwrap_err();
        assert!(e.contains("destinations.retries"), "{e}");
        let e = validate_spec("[destinations]\nevery = 1").unwrap_err();
        assert!(e.contains("every"), "{e}");
    }
}
