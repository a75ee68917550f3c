//! Names and qualifiers, with the agent's rules (docs/agent-api.md): function and alias names
//! are 1-64 of `A-Z a-z 0-9 - _` starting with a letter or digit; alias names are not `latest`
//! and not all digits; a qualifier is `latest`, a version number (from 1) or an alias name.
//! The agent's store types its errors (agent/src/store/names.rs) but takes the reasons from
//! [`name_reason`] and [`qualifier_reason`], so both say the same.

/// Longest function or alias name.
pub const MAX_NAME_LEN: usize = 64;

/// Why `name` is not a valid function, alias or mapping name (the charset and length rule).
pub fn name_reason(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("longer than 64 characters");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("must start with a letter or digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("only letters, digits, '-' and '_' are allowed");
    }
    Ok(())
}

/// A name's problem, or `Ok`. Used for function, group and device names too.
pub fn check_name(name: &str) -> Result<(), String> {
    name_reason(name).map_err(|r| format!("bad name {name:?}: {r}"))
}

/// An alias name's problem, or `Ok`.
pub fn check_alias_name(name: &str) -> Result<(), String> {
    name_reason(name).map_err(|r| format!("bad alias name {name:?}: {r}"))?;
    if name.eq_ignore_ascii_case("latest") {
        return Err(format!("bad alias name {name:?}: `latest` is reserved"));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "bad alias name {name:?}: a number would be read as a version"
        ));
    }
    Ok(())
}

/// A parsed qualifier.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Qualifier {
    Latest,
    Version(u32),
    Alias(String),
}

/// Why `text` is not a qualifier, in the agent's words (`versions are numbered from 1`).
pub fn qualifier_reason(text: &str) -> Result<Qualifier, &'static str> {
    if text == "latest" {
        return Ok(Qualifier::Latest);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(0) => Err("versions are numbered from 1"),
            Ok(v) => Ok(Qualifier::Version(v)),
            Err(_) => Err("version number too large"),
        };
    }
    check_alias_name(text).map_err(|_| "expected `latest`, a version number or an alias name")?;
    Ok(Qualifier::Alias(text.to_owned()))
}

impl Qualifier {
    pub fn parse(text: &str) -> Result<Qualifier, String> {
        if text == "latest" {
            return Ok(Qualifier::Latest);
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u32>() {
                Ok(0) => Err(format!(
                    "bad qualifier {text:?}: versions are numbered from 1"
                )),
                Ok(v) => Ok(Qualifier::Version(v)),
                Err(_) => Err(format!("bad qualifier {text:?}: version number too large")),
            };
        }
        check_alias_name(text).map_err(|_| {
            format!("bad qualifier {text:?}: expected `latest`, a version number or an alias name")
        })?;
        Ok(Qualifier::Alias(text.to_owned()))
    }
}

impl std::fmt::Display for Qualifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Qualifier::Latest => f.write_str("latest"),
            Qualifier::Version(v) => write!(f, "{v}"),
            Qualifier::Alias(a) => f.write_str(a),
        }
    }
}

/// Splits `NAME[:QUALIFIER]` (qualifier default `latest`) and checks both parts.
pub fn parse_target(text: &str) -> Result<(String, Qualifier), String> {
    let (name, q) = match text.split_once(':') {
        Some((n, q)) => (n, Qualifier::parse(q)?),
        None => (text, Qualifier::Latest),
    };
    check_name(name)?;
    Ok((name.to_owned(), q))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_qualifiers() {
        assert!(check_name("temp-sensor").is_ok());
        assert!(check_name("-x").is_err());
        assert!(check_alias_name("latest").is_err());
        assert!(check_alias_name("12").is_err());
        assert_eq!(Qualifier::parse("3").unwrap(), Qualifier::Version(3));
        assert!(Qualifier::parse("0").is_err());
        assert_eq!(
            parse_target("f:prod").unwrap(),
            ("f".to_string(), Qualifier::Alias("prod".into()))
        );
    }
}
