//! MQTT topic names and filters: validation and matching (`+` one level, `#` the rest). The
//! same rules on both sides: the cloud's registry checks mappings and specs with them, the agent
//! its mappings, specs and every publish of a function.

/// Why a topic name cannot be published to.
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

/// Whether `topic` matches `filter` (MQTT rules; `$`-topics are not matched by leading wildcards).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_like_mqtt() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(matches("a/+", "a/b"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("#", "x/y"));
        assert!(matches("+/+", "/x"));
        assert!(!matches("#", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn bad_names_and_filters_are_named() {
        assert!(check_topic("a/+").is_err());
        assert!(check_topic("").is_err());
        assert!(check_topic("a/b").is_ok());
        assert!(check_filter("a/#/b").is_err());
        assert!(check_filter("a/b+").is_err());
        assert!(check_filter("a/+/#").is_ok());
    }
}
