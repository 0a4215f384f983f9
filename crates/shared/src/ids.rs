//! Typed ids: a script id can never be passed where an app id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id (UUIDv7), so ids sort roughly by creation.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID (from the database or a request).
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

uuid_id!(
    /// An app: the unit that groups scripts and their data.
    AppId
);
uuid_id!(
    /// A script, stable across updates (the version changes, the id does not).
    ScriptId
);
uuid_id!(
    /// One run of a script.
    ExecutionId
);
uuid_id!(
    /// A trigger: (service, event, filter) → script.
    TriggerId
);
uuid_id!(
    /// A dead letter: an event whose delivery failed for good.
    DeadLetterId
);
uuid_id!(
    /// A person who logs in (a principal).
    UserId
);
uuid_id!(
    /// An API token or a login session's token.
    TokenId
);

/// The id that ties a request's log lines together across layers, taken from the
/// `X-Request-Id` header when the client sends a usable one and generated otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    /// Longest client-supplied id kept; a longer one is replaced rather than truncated so
    /// two different ids never collapse into one.
    pub const MAX_LEN: usize = 128;

    /// A fresh random id.
    pub fn generate() -> Self {
        Self(Uuid::new_v4().to_string())
    }

    /// Accepts a client-supplied id when it is 1..=128 visible ASCII characters, which keeps
    /// it safe to echo in a header and to write to logs.
    pub fn parse(raw: &str) -> Option<Self> {
        let usable = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.bytes().all(|b| b.is_ascii_graphic());
        usable.then(|| Self(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let id = ScriptId::new();
        let parsed: ScriptId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
        assert!("not-a-uuid".parse::<ScriptId>().is_err());
    }

    #[test]
    fn request_id_keeps_usable_client_ids_only() {
        assert_eq!(RequestId::parse("abc-123").unwrap().as_str(), "abc-123");
        assert!(RequestId::parse("").is_none());
        assert!(RequestId::parse("has space").is_none());
        assert!(RequestId::parse("new\nline").is_none());
        assert!(RequestId::parse(&"x".repeat(129)).is_none());
        assert!(RequestId::parse(&"x".repeat(128)).is_some());
    }
}
