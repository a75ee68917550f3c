//! MQTT topic names and filters (as agent/src/runtime/topic.rs).

/// Why a topic name is malformed.
pub fn check_topic(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        Err("empty topic")
    } else if topic.len() > 65535 {
        Err("topic longer than 65535 bytes")
    } else if topic.contains(['+', '#']) {
        Err("wildcards `+`/`#` are not allowed in a topic name")
    } else if topic.contains('\0') {
        Err("NUL in topic")
    } else {
        Ok(())
    }
}

/// Why a topic filter is malformed.
pub fn check_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("empty topic filter");
    }
    if filter.contains('\0') {
        return Err("NUL in topic filter");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err("`#` must be a whole level and the last one");
        }
        if level.contains('+') && *level != "+" {
            return Err("`+` must be a whole level");
        }
    }
    Ok(())
}
