//! Qualifiers: what an invocation or a mapping names (`latest`, a version number, an alias).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::{Result, StoreError};
use super::names::validate_alias_name;

/// A parsed qualifier.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Qualifier {
    /// The mutable `latest` (module and spec as last created/updated).
    Latest,
    /// A published version.
    Version(u32),
    /// An alias of the function.
    Alias(String),
}

impl Qualifier {
    /// Parses `latest`, a version number (`1`, `2`, ...) or an alias name.
    pub fn parse(text: &str) -> Result<Qualifier> {
        let invalid = |reason| StoreError::InvalidQualifier {
            qualifier: text.to_owned(),
            reason,
        };
        if text == "latest" {
            return Ok(Qualifier::Latest);
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u32>() {
                Ok(0) => Err(invalid("versions are numbered from 1")),
                Ok(v) => Ok(Qualifier::Version(v)),
                Err(_) => Err(invalid("version number too large")),
            };
        }
        validate_alias_name(text)
            .map_err(|_| invalid("expected `latest`, a version number or an alias name"))?;
        Ok(Qualifier::Alias(text.to_owned()))
    }
}

impl fmt::Display for Qualifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Qualifier::Latest => f.write_str("latest"),
            Qualifier::Version(v) => write!(f, "{v}"),
            Qualifier::Alias(a) => f.write_str(a),
        }
    }
}

impl FromStr for Qualifier {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        Qualifier::parse(s)
    }
}

impl From<Qualifier> for String {
    fn from(q: Qualifier) -> String {
        q.to_string()
    }
}

impl TryFrom<String> for Qualifier {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self> {
        Qualifier::parse(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        assert_eq!(Qualifier::parse("latest").unwrap(), Qualifier::Latest);
        assert_eq!(Qualifier::parse("7").unwrap(), Qualifier::Version(7));
        assert_eq!(
            Qualifier::parse("prod").unwrap(),
            Qualifier::Alias("prod".into())
        );
        for text in ["latest", "7", "prod"] {
            assert_eq!(Qualifier::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn rejects_bad_qualifiers() {
        for bad in ["", "0", "99999999999", "LATEST", "a:b", "-x"] {
            assert!(
                matches!(
                    Qualifier::parse(bad),
                    Err(StoreError::InvalidQualifier { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn serde_uses_the_text_form() {
        let q: Qualifier = serde_json::from_str("\"3\"").unwrap();
        assert_eq!(q, Qualifier::Version(3));
        assert_eq!(
            serde_json::to_string(&Qualifier::Latest).unwrap(),
            "\"latest\""
        );
        assert!(serde_json::from_str::<Qualifier>("\"0\"").is_err());
    }
}
