//! Validated names ("parse, don't validate"): once a value is a [`ScriptName`] or an
//! [`AppSlug`], every layer can use it in a URL, a log line or a query without checking again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// What was being named ("script name", "app slug").
        kind: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{kind} must be at most {max} characters")]
    TooLong {
        /// What was being named.
        kind: &'static str,
        /// The longest allowed.
        max: usize,
    },
    /// The name holds a character outside the allowed set, or starts badly.
    #[error("{kind} {rule}")]
    BadCharacters {
        /// What was being named.
        kind: &'static str,
        /// The rule, phrased to follow the kind.
        rule: &'static str,
    },
}

/// A script's name: unique within its app, usable as a URL path segment.
///
/// 1 to 64 characters of ASCII letters, digits, `-` and `_`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
#[serde(try_from = "String", into = "String")]
pub struct ScriptName(String);

impl ScriptName {
    /// The longest script name accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates a script name.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        const KIND: &str = "script name";
        check_length(KIND, raw, Self::MAX_LEN)?;
        let first_ok = raw.starts_with(|c: char| c.is_ascii_alphanumeric());
        let rest_ok = raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !(first_ok && rest_ok) {
            return Err(NameError::BadCharacters {
                kind: KIND,
                rule: "may contain only ASCII letters, digits, '-' and '_', and must start with a letter or digit",
            });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An app's URL-safe slug, used by the by-name execute route.
///
/// 1 to 63 characters of lowercase ASCII letters, digits and `-`, neither starting nor
/// ending with `-` (the same shape as a DNS label, so a slug can later become a subdomain).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
#[serde(try_from = "String", into = "String")]
pub struct AppSlug(String);

impl AppSlug {
    /// The longest slug accepted.
    pub const MAX_LEN: usize = 63;

    /// The slug of the app every instance starts with.
    pub fn default_app() -> Self {
        Self("default".to_owned())
    }

    /// Validates an app slug.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        const KIND: &str = "app slug";
        check_length(KIND, raw, Self::MAX_LEN)?;
        let chars_ok = raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !chars_ok || raw.starts_with('-') || raw.ends_with('-') {
            return Err(NameError::BadCharacters {
                kind: KIND,
                rule: "may contain only lowercase ASCII letters, digits and '-', and must not start or end with '-'",
            });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The slug as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user's login name: 1 to 64 characters of lowercase ASCII letters, digits, `.`, `_`
/// and `-`, starting with a letter or digit. Lowercase only, so `Ada` and `ada` can never
/// be two accounts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    /// The longest username accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates a username.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        const KIND: &str = "username";
        check_length(KIND, raw, Self::MAX_LEN)?;
        let first_ok = raw.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = raw.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_' || c == '-'
        });
        if !(first_ok && rest_ok) {
            return Err(NameError::BadCharacters {
                kind: KIND,
                rule: "may contain only lowercase ASCII letters, digits, '.', '_' and '-', and must start with a letter or digit",
            });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The username as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a free-text label (an app's display name, a token's name): not blank, at most
/// `max` characters, and no character that could hide or reorder what a person reads next
/// to it: control characters (NUL, which PostgreSQL `text` cannot hold, escapes, line
/// breaks) and bidirectional controls.
pub fn check_label(kind: &'static str, raw: &str, max: usize) -> Result<(), NameError> {
    if raw.trim().is_empty() {
        return Err(NameError::Empty { kind });
    }
    if raw.chars().count() > max {
        return Err(NameError::TooLong { kind, max });
    }
    if raw.chars().any(char::is_control) {
        return Err(NameError::BadCharacters {
            kind,
            rule: "must not contain control characters",
        });
    }
    if raw.chars().any(is_bidi_control) {
        return Err(NameError::BadCharacters {
            kind,
            rule: "must not contain bidirectional control characters",
        });
    }
    Ok(())
}

/// The Unicode bidirectional formatting characters: the embeddings, overrides and isolates
/// (U+202A–U+202E, U+2066–U+2069) and the implicit marks (U+200E, U+200F, U+061C). They are
/// what "Trojan Source" spoofing uses to make text read differently from how it sorts and
/// compares, so no name or key may hold one.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    )
}

fn check_length(kind: &'static str, raw: &str, max: usize) -> Result<(), NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if raw.chars().count() > max {
        return Err(NameError::TooLong { kind, max });
    }
    Ok(())
}

/// `Display`, `FromStr`, `TryFrom<String>`, `From<_> for String` and `AsRef<str>` for a
/// validated string newtype whose `parse` fails with `$error`.
macro_rules! string_newtype_impls {
    ($name:ident, $error:ty) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = $error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = $error;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

pub(crate) use string_newtype_impls;

string_newtype_impls!(ScriptName, NameError);
string_newtype_impls!(AppSlug, NameError);
string_newtype_impls!(Username, NameError);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn script_names_follow_the_rules() {
        assert!(ScriptName::parse("hello").is_ok());
        assert!(ScriptName::parse("Hello_World-2").is_ok());
        assert_eq!(
            ScriptName::parse(""),
            Err(NameError::Empty {
                kind: "script name"
            })
        );
        assert!(ScriptName::parse("-leading").is_err());
        assert!(ScriptName::parse("has space").is_err());
        assert!(ScriptName::parse("slash/inside").is_err());
        assert!(ScriptName::parse(&"a".repeat(64)).is_ok());
        assert!(matches!(
            ScriptName::parse(&"a".repeat(65)),
            Err(NameError::TooLong { max: 64, .. })
        ));
    }

    #[test]
    fn app_slugs_follow_the_rules() {
        assert!(AppSlug::parse("default").is_ok());
        assert!(AppSlug::parse("my-app-2").is_ok());
        assert!(AppSlug::parse("My-App").is_err());
        assert!(AppSlug::parse("-x").is_err());
        assert!(AppSlug::parse("x-").is_err());
        assert!(AppSlug::parse("a_b").is_err());
    }

    #[test]
    fn usernames_follow_the_rules() {
        assert!(Username::parse("ada").is_ok());
        assert!(Username::parse("ada.lovelace_1-x").is_ok());
        assert!(Username::parse("Ada").is_err());
        assert!(Username::parse(".ada").is_err());
        assert!(Username::parse("a d").is_err());
        assert!(Username::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn error_messages_name_the_problem() {
        let err = ScriptName::parse("bad name").unwrap_err().to_string();
        assert!(err.starts_with("script name may contain only"), "{err}");
    }

    /// Script names around the rules' edges: most parse; the rest are empty, too long,
    /// start with `-` or `_`, or hold one character from just outside the alphabet.
    fn near_script_names() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[a-zA-Z0-9_-]{0,70}",
            1 => "[a-zA-Z0-9_-]{0,32}[ ./:~é]?[a-zA-Z0-9_-]{0,32}",
        ]
    }

    /// Slugs around the rules' edges: most parse; the rest are empty, too long, start or
    /// end with `-`, or hold one character from just outside the alphabet.
    fn near_slugs() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[a-z0-9-]{0,70}",
            1 => "[a-z0-9-]{0,32}[A-Z_. é]?[a-z0-9-]{0,32}",
        ]
    }

    proptest! {
        #[test]
        fn accepted_script_names_are_path_safe(raw in near_script_names()) {
            match ScriptName::parse(&raw) {
                Ok(name) => {
                    prop_assert!(name.as_str().len() <= ScriptName::MAX_LEN);
                    prop_assert!(name.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
                }
                Err(_) => prop_assert!(
                    raw.is_empty()
                        || raw.len() > ScriptName::MAX_LEN
                        || raw.starts_with(['-', '_'])
                        || !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                    "{raw:?} was refused"
                ),
            }
        }

        #[test]
        fn valid_script_names_are_accepted(raw in "[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}") {
            let name = ScriptName::parse(&raw).unwrap();
            prop_assert_eq!(name.as_str(), raw.as_str());
        }

        #[test]
        fn valid_slugs_are_accepted_and_round_trip(raw in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
            let slug: AppSlug = raw.parse().unwrap();
            prop_assert_eq!(slug.to_string(), raw);
        }

        #[test]
        fn accepted_slugs_are_dns_labels(raw in near_slugs()) {
            match AppSlug::parse(&raw) {
                Ok(slug) => {
                    prop_assert!(!slug.as_str().starts_with('-') && !slug.as_str().ends_with('-'));
                    prop_assert!(slug.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                }
                Err(_) => prop_assert!(
                    raw.is_empty()
                        || raw.len() > AppSlug::MAX_LEN
                        || raw.starts_with('-')
                        || raw.ends_with('-')
                        || !raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                    "{raw:?} was refused"
                ),
            }
        }
    }
}
