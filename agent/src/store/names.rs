//! What function and alias names may look like.
//!
//! Names appear in `NAME:QUALIFIER`, URLs, MQTT topics and file names, so they are kept to a
//! conservative ASCII set. Alias names additionally must not be mistakable for the other kinds of
//! qualifier: not `latest`, not a number.

use super::error::{Result, StoreError};

/// Longest function or alias name.
pub const MAX_NAME_LEN: usize = 64;

/// The charset and length rule, shared with the cloud (`protocol::names`).
fn check_charset(name: &str) -> std::result::Result<(), &'static str> {
    edgefn_cloud::protocol::names::name_reason(name)
}

/// Checks a function name: 1-64 of `A-Z a-z 0-9 - _`, starting with a letter or digit (the
/// rule of the admin API, docs/agent-api.md).
pub fn validate_function_name(name: &str) -> Result<()> {
    check_charset(name).map_err(|reason| StoreError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Checks an alias name: like a function name, but not `latest` (any case) and not all digits.
pub fn validate_alias_name(name: &str) -> Result<()> {
    let invalid = |reason| StoreError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    check_charset(name).map_err(invalid)?;
    if name.eq_ignore_ascii_case("latest") {
        return Err(invalid("`latest` is reserved"));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("a number would be read as a version"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names() {
        for ok in ["f", "temp-sensor", "a_b-9", "9lives", &"x".repeat(64)] {
            validate_function_name(ok).unwrap();
        }
        for bad in [
            "",
            "-x",
            "_x",
            "a.b",
            "a:b",
            "a b",
            "ä",
            "a/b",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(
                    validate_function_name(bad),
                    Err(StoreError::InvalidName { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn alias_names() {
        for ok in ["prod", "beta-2", "v1", "1a"] {
            validate_alias_name(ok).unwrap();
        }
        for bad in ["latest", "LATEST", "12", "0", "", "a:b"] {
            assert!(validate_alias_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
