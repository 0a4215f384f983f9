//! The key-value service: JSON values under `(app, collection, key)`, the validated names
//! that address them, and the limits every implementation enforces the same way.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::names::string_newtype_impls;
use crate::{Capability, EventSubject, KvOp, ServiceContext, ServiceError, ServiceEvent};

/// The largest value accepted, in bytes of its compact JSON form.
pub const MAX_KV_VALUE_BYTES: usize = 64 * 1024;

/// The deepest nesting of arrays and objects a value may have. Deeper values could not be
/// read back by every JSON parser on the way (the database driver's refuses past 128).
pub const MAX_KV_VALUE_DEPTH: usize = 64;

/// Page size of [`KvService::list`] when none is asked for.
pub const DEFAULT_KV_LIST_LIMIT: u32 = 100;

/// Largest page [`KvService::list`] returns.
pub const MAX_KV_LIST_LIMIT: u32 = 1000;

/// Most value bytes (as JSON text) one page of [`KvService::list`] holds, its last entry
/// aside: a page of 1,000 values of 64 KiB would otherwise be 64 MiB at once, for a
/// script or the admin API (review L10). A page cut short by it has a `next_cursor` like
/// any other.
pub const MAX_KV_PAGE_BYTES: usize = 1024 * 1024;

/// Why a collection name or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvNameError {
    /// The name is empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// `collection name` or `key`.
        kind: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{kind} is {len} bytes, over the limit of {max} bytes")]
    TooLong {
        /// `collection name` or `key`.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The longest allowed.
        max: usize,
    },
    /// The name holds a character outside the allowed set.
    #[error("{kind} {rule}")]
    BadCharacters {
        /// `collection name` or `key`.
        kind: &'static str,
        /// The rule, phrased to follow the kind.
        rule: &'static str,
    },
}

impl From<KvNameError> for ServiceError {
    fn from(err: KvNameError) -> Self {
        Self::InvalidArgument(err.to_string())
    }
}

/// A KV collection's name: 1 to 128 ASCII letters, digits, `_`, `-`, `.` and `:`
/// (`orders:2024` reads as a namespace and matches a trigger glob `orders:*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
#[serde(try_from = "String", into = "String")]
pub struct CollectionName(String);

impl CollectionName {
    /// The longest collection name accepted.
    pub const MAX_LEN: usize = 128;

    /// Validates a collection name.
    pub fn parse(raw: &str) -> Result<Self, KvNameError> {
        const KIND: &str = "collection name";
        check_length(KIND, raw, Self::MAX_LEN)?;
        if !raw.bytes().all(is_collection_byte) {
            return Err(KvNameError::BadCharacters {
                kind: KIND,
                rule: "may contain only ASCII letters, digits, '_', '-', '.' and ':'",
            });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_collection_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')
}

/// A key within a collection: 1 to 512 bytes of UTF-8 without control or bidirectional
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
#[serde(try_from = "String", into = "String")]
pub struct KvKey(String);

impl KvKey {
    /// The longest key accepted, in bytes.
    pub const MAX_LEN: usize = 512;

    /// Validates a key.
    pub fn parse(raw: &str) -> Result<Self, KvNameError> {
        const KIND: &str = "key";
        check_length(KIND, raw, Self::MAX_LEN)?;
        check_no_control(KIND, raw)?;
        Ok(Self(raw.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(crate) fn check_length(kind: &'static str, raw: &str, max: usize) -> Result<(), KvNameError> {
    if raw.is_empty() {
        return Err(KvNameError::Empty { kind });
    }
    if raw.len() > max {
        return Err(KvNameError::TooLong {
            kind,
            len: raw.len(),
            max,
        });
    }
    Ok(())
}

pub(crate) fn check_no_control(kind: &'static str, raw: &str) -> Result<(), KvNameError> {
    if raw.chars().any(char::is_control) {
        return Err(KvNameError::BadCharacters {
            kind,
            rule: "must not contain control characters",
        });
    }
    if raw.chars().any(crate::names::is_bidi_control) {
        return Err(KvNameError::BadCharacters {
            kind,
            rule: "must not contain bidirectional control characters",
        });
    }
    Ok(())
}

string_newtype_impls!(CollectionName, KvNameError);
string_newtype_impls!(KvKey, KvNameError);

/// Checks a value against the limits every implementation enforces: at most
/// [`MAX_KV_VALUE_BYTES`] of compact JSON, at most [`MAX_KV_VALUE_DEPTH`] levels deep, and no
/// NUL character in any string (PostgreSQL's `jsonb` cannot hold one). Returns its size.
pub fn check_kv_value(key: &KvKey, value: &Value) -> Result<usize, ServiceError> {
    let what = || format!("value for key '{key}'");
    check_shape(value, 0).map_err(|problem| {
        ServiceError::InvalidArgument(match problem {
            Shape::TooDeep => format!("{} nests deeper than {MAX_KV_VALUE_DEPTH} levels", what()),
            Shape::Nul => format!(
                "{} contains a NUL character, which cannot be stored",
                what()
            ),
        })
    })?;
    let size = serde_json::to_vec(value)
        .map_err(|err| ServiceError::Internal(format!("serializing a kv value: {err}")))?
        .len();
    if size > MAX_KV_VALUE_BYTES {
        return Err(ServiceError::TooLarge {
            what: what(),
            size,
            limit: MAX_KV_VALUE_BYTES,
        });
    }
    Ok(size)
}

enum Shape {
    TooDeep,
    Nul,
}

fn check_shape(value: &Value, depth: usize) -> Result<(), Shape> {
    match value {
        Value::String(s) => check_no_nul(s),
        Value::Array(items) => {
            if depth >= MAX_KV_VALUE_DEPTH {
                return Err(Shape::TooDeep);
            }
            items
                .iter()
                .try_for_each(|item| check_shape(item, depth + 1))
        }
        Value::Object(map) => {
            if depth >= MAX_KV_VALUE_DEPTH {
                return Err(Shape::TooDeep);
            }
            map.iter().try_for_each(|(name, item)| {
                check_no_nul(name)?;
                check_shape(item, depth + 1)
            })
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

fn check_no_nul(s: &str) -> Result<(), Shape> {
    if s.contains('\0') {
        Err(Shape::Nul)
    } else {
        Ok(())
    }
}

/// Which page of a collection [`KvService::list`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvListOptions {
    /// Only keys starting with this text (an empty prefix is no filter).
    pub prefix: Option<String>,
    /// Page size, 1 to [`MAX_KV_LIST_LIMIT`]; [`DEFAULT_KV_LIST_LIMIT`] by default.
    pub limit: u32,
    /// Continue after this key (the previous page's `next_cursor`).
    pub cursor: Option<String>,
}

impl Default for KvListOptions {
    fn default() -> Self {
        Self {
            prefix: None,
            limit: DEFAULT_KV_LIST_LIMIT,
            cursor: None,
        }
    }
}

/// [`KvListOptions`] after validation, in the form implementations query with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvListBounds {
    /// Keys must be `>=` this (the prefix, or empty).
    pub from: String,
    /// Keys must be `<` this, when set (the first string after every key with the prefix).
    pub until: Option<String>,
    /// Keys must be `>` this, when set (the cursor).
    pub after: Option<String>,
    /// The prefix keys must start with (empty for none).
    pub prefix: String,
    /// Page size.
    pub limit: u32,
}

impl KvListBounds {
    /// Whether `key` belongs on a page with these bounds (before the limit is applied).
    pub fn contains(&self, key: &str) -> bool {
        key.starts_with(&self.prefix) && self.after.as_deref().is_none_or(|after| key > after)
    }
}

impl KvListOptions {
    /// Validates the options: the limit in range, the prefix and cursor key-shaped.
    pub fn bounds(&self) -> Result<KvListBounds, ServiceError> {
        let limit = self.limit;
        if !(1..=MAX_KV_LIST_LIMIT).contains(&limit) {
            return Err(ServiceError::InvalidArgument(format!(
                "limit must be between 1 and {MAX_KV_LIST_LIMIT}, not {limit}"
            )));
        }
        let prefix = self.prefix.clone().unwrap_or_default();
        if prefix.len() > KvKey::MAX_LEN {
            return Err(KvNameError::TooLong {
                kind: "prefix",
                len: prefix.len(),
                max: KvKey::MAX_LEN,
            }
            .into());
        }
        check_no_control("prefix", &prefix)?;
        let after = match &self.cursor {
            Some(cursor) if !cursor.is_empty() => {
                if cursor.len() > KvKey::MAX_LEN {
                    return Err(KvNameError::TooLong {
                        kind: "cursor",
                        len: cursor.len(),
                        max: KvKey::MAX_LEN,
                    }
                    .into());
                }
                check_no_control("cursor", cursor)?;
                Some(cursor.clone())
            }
            _ => None,
        };
        Ok(KvListBounds {
            from: prefix.clone(),
            until: prefix_successor(&prefix),
            after,
            prefix,
            limit,
        })
    }
}

/// The smallest string greater than every string that starts with `prefix`, in byte (and
/// so code point) order; `None` when there is none (an empty prefix, or one made only of
/// the largest code point).
pub fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KvEntry {
    /// The key.
    pub key: KvKey,
    /// The stored JSON value.
    pub value: Value,
    /// Its version: a new, larger number on every write of the key, never reused (not even
    /// after a delete), so a check-and-set against it cannot mistake a new value for an
    /// old one.
    pub version: i64,
    /// When it was last written.
    pub updated_at: DateTime<Utc>,
}

/// One page of a collection, in key order (bytewise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KvPage {
    /// The entries on this page.
    pub entries: Vec<KvEntry>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl KvPage {
    /// The page of `entries` (each with its value's size in bytes) fetched with one more
    /// than `limit` (the extra one says whether another page follows), cut where its
    /// values pass [`MAX_KV_PAGE_BYTES`] (always keeping one entry), with the cursor of
    /// the next page.
    pub fn from_overfetch(sized: Vec<(KvEntry, usize)>, limit: u32) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let fetched = sized.len();
        let mut bytes = 0_usize;
        let mut entries = Vec::with_capacity(fetched.min(limit));
        for (entry, size) in sized {
            bytes = bytes.saturating_add(size);
            if entries.len() == limit || (!entries.is_empty() && bytes > MAX_KV_PAGE_BYTES) {
                break;
            }
            entries.push(entry);
        }
        let more = fetched > entries.len();
        let next_cursor = if more {
            entries.last().map(|e| e.key.as_str().to_owned())
        } else {
            None
        };
        Self {
            entries,
            next_cursor,
        }
    }
}

/// A value and the version it was written as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KvVersioned {
    /// The stored JSON value.
    pub value: Value,
    /// Its version (see [`KvEntry::version`]).
    pub version: i64,
}

/// What must hold for a conditional write to happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCondition {
    /// The key holds exactly this version.
    IfVersion(i64),
    /// The key holds nothing.
    IfAbsent,
}

/// An amount to add to a number: whole, or not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KvIncrement {
    /// A whole amount; a whole number stays whole, and a result past the range of a
    /// 64-bit integer is refused.
    Int(i64),
    /// A fractional amount; the result is a float.
    Float(f64),
}

/// What an atomic batch checks before it changes anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvCheck {
    /// The collection.
    pub collection: CollectionName,
    /// The key.
    pub key: KvKey,
    /// The version the key must hold; `None` when it must hold nothing.
    pub version: Option<i64>,
}

/// One change of an atomic batch.
#[derive(Debug, Clone, PartialEq)]
pub enum KvMutation {
    /// Store a value.
    Set {
        /// The collection.
        collection: CollectionName,
        /// The key.
        key: KvKey,
        /// The value.
        value: Value,
    },
    /// Remove a key (nothing, and no event, when it is absent).
    Delete {
        /// The collection.
        collection: CollectionName,
        /// The key.
        key: KvKey,
    },
    /// Add to a number (an absent key counts as 0).
    Incr {
        /// The collection.
        collection: CollectionName,
        /// The key.
        key: KvKey,
        /// How much.
        by: KvIncrement,
    },
}

impl KvMutation {
    /// The collection and key it changes.
    pub fn target(&self) -> (&CollectionName, &KvKey) {
        match self {
            Self::Set {
                collection, key, ..
            }
            | Self::Delete { collection, key }
            | Self::Incr {
                collection, key, ..
            } => (collection, key),
        }
    }
}

/// Most checks and changes one atomic batch may hold, together.
pub const MAX_KV_ATOMIC_OPERATIONS: usize = 100;

/// Checks and changes that commit together or not at all: every check is made against
/// what is stored when the batch commits, every change and every event it emits are in
/// one transaction, and nothing else writes any key it touches in between.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KvAtomic {
    /// What must hold.
    pub checks: Vec<KvCheck>,
    /// What changes if it does, in order.
    pub mutations: Vec<KvMutation>,
}

impl KvAtomic {
    /// Refuses a batch over [`MAX_KV_ATOMIC_OPERATIONS`] and values over the KV limits (an
    /// empty batch is fine: it commits nothing and holds).
    pub fn validate(&self) -> Result<(), ServiceError> {
        let count = self.checks.len() + self.mutations.len();
        if count > MAX_KV_ATOMIC_OPERATIONS {
            return Err(too_many_operations(count));
        }
        for mutation in &self.mutations {
            if let KvMutation::Set { key, value, .. } = mutation {
                check_kv_value(key, value)?;
            }
        }
        Ok(())
    }
}

/// The refusal of an atomic batch of `count` checks and changes, past the limit.
pub fn too_many_operations(count: usize) -> ServiceError {
    ServiceError::InvalidArgument(format!(
        "an atomic batch holds {count} checks and changes, over the limit of \
         {MAX_KV_ATOMIC_OPERATIONS}"
    ))
}

/// A number after `by` was added to `current`, as every implementation computes it; the
/// message when `current` is not a number or the sum leaves the integers.
pub fn incremented(
    key: &KvKey,
    current: Option<&Value>,
    by: KvIncrement,
) -> Result<Value, ServiceError> {
    let not_a_number = || {
        ServiceError::InvalidArgument(format!(
            "value for key '{key}' is not a number, so it cannot be incremented"
        ))
    };
    let current = match current {
        None => &Value::from(0),
        Some(value) if value.is_number() => value,
        Some(_) => return Err(not_a_number()),
    };
    match (current.as_i64(), by) {
        (Some(whole), KvIncrement::Int(by)) => {
            whole.checked_add(by).map(Value::from).ok_or_else(|| {
                ServiceError::InvalidArgument(format!(
                    "incrementing key '{key}' by {by} leaves the range of a 64-bit integer"
                ))
            })
        }
        (_, by) => {
            let by = match by {
                KvIncrement::Int(by) => by as f64,
                KvIncrement::Float(by) => by,
            };
            let sum = current.as_f64().ok_or_else(not_a_number)? + by;
            serde_json::Number::from_f64(sum)
                .map(Value::Number)
                .ok_or_else(|| {
                    ServiceError::InvalidArgument(format!(
                        "incrementing key '{key}' does not give a finite number"
                    ))
                })
        }
    }
}

/// A collection of an app and how many keys it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CollectionInfo {
    /// The collection.
    pub name: CollectionName,
    /// How many keys it holds.
    pub keys: u64,
}

/// JSON values under `(app, collection, key)`. Every call is keyed on `ctx.app_id` and
/// checks `AppKvRead` or `AppKvWrite` of that app for the identity `ctx` acts as; writes
/// emit their change event in the same transaction as the change.
#[async_trait]
pub trait KvService: Send + Sync {
    /// The value under `key`, `None` when there is none.
    async fn get(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
    ) -> Result<Option<Value>, ServiceError>;

    /// The value under `key` with its version, `None` when there is none.
    async fn get_entry(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
    ) -> Result<Option<KvVersioned>, ServiceError>;

    /// Stores `value` under `key`, replacing any value there; its new version. Refused
    /// with [`ServiceError::TooLarge`] over [`MAX_KV_VALUE_BYTES`].
    async fn set(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
        value: Value,
    ) -> Result<i64, ServiceError>;

    /// Stores `value` under `key` only if `condition` holds, in one step nothing can come
    /// between; its new version, or `None` when the condition did not hold (nothing
    /// changed and nothing was emitted).
    async fn set_if(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
        value: Value,
        condition: KvCondition,
    ) -> Result<Option<i64>, ServiceError>;

    /// Adds `by` to the number under `key` (an absent key counts as 0) in one step; the
    /// new value and its version. A value that is not a number is refused.
    async fn incr(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
        by: KvIncrement,
    ) -> Result<KvVersioned, ServiceError>;

    /// Commits `batch` if all its checks hold; whether they did (when not, nothing
    /// changed and nothing was emitted). Each change emits its own event.
    async fn commit(&self, ctx: &ServiceContext, batch: KvAtomic) -> Result<bool, ServiceError>;

    /// Removes `key`; whether it existed. Deleting a missing key changes nothing and
    /// emits no event.
    async fn delete(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
    ) -> Result<bool, ServiceError>;

    /// A page of entries in key order, filtered by prefix, continuing after a cursor.
    async fn list(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        options: KvListOptions,
    ) -> Result<KvPage, ServiceError>;

    /// The app's collections with their key counts, by name (for the admin browser).
    async fn collections(&self, ctx: &ServiceContext) -> Result<Vec<CollectionInfo>, ServiceError>;
}

/// The event a change made through `ctx` emits: the run's depth + 1 (1 for the admin API
/// and HTTP runs), caused by the run's execution when there is one.
pub fn kv_event(
    ctx: &ServiceContext,
    collection: &CollectionName,
    key: &KvKey,
    op: KvOp,
    value: Option<Value>,
) -> ServiceEvent {
    ServiceEvent {
        app_id: ctx.app_id,
        subject: EventSubject::Kv {
            collection: collection.as_str().to_owned(),
            key: key.as_str().to_owned(),
            op,
            value,
        },
        depth: ctx.depth.saturating_add(1),
        causation_id: ctx.execution_id,
    }
}

/// The check every read makes.
pub fn authorize_kv_read(ctx: &ServiceContext) -> Result<(), ServiceError> {
    ctx.authorize(&Capability::AppKvRead(ctx.app_id))
}

/// The check every write makes.
pub fn authorize_kv_write(ctx: &ServiceContext) -> Result<(), ServiceError> {
    ctx.authorize(&Capability::AppKvWrite(ctx.app_id))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn key(raw: &str) -> KvKey {
        KvKey::parse(raw).unwrap()
    }

    #[test]
    fn collection_names_follow_the_rules() {
        for ok in ["users", "orders:2024", "a.b-c_d", &"x".repeat(128)] {
            assert!(CollectionName::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            CollectionName::parse("").unwrap_err().to_string(),
            "collection name must not be empty"
        );
        assert_eq!(
            CollectionName::parse(&"x".repeat(129))
                .unwrap_err()
                .to_string(),
            "collection name is 129 bytes, over the limit of 128 bytes"
        );
        for bad in ["has space", "slash/inside", "star*", "ünïcode"] {
            assert_eq!(
                CollectionName::parse(bad).unwrap_err().to_string(),
                "collection name may contain only ASCII letters, digits, '_', '-', '.' and ':'",
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_follow_the_rules() {
        for ok in ["ada", "with space/and:punct", "ünïcode ✓", &"k".repeat(512)] {
            assert!(KvKey::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            KvKey::parse("").unwrap_err().to_string(),
            "key must not be empty"
        );
        // 256 two-byte characters are 512 bytes; one more byte is too many.
        assert!(KvKey::parse(&"é".repeat(256)).is_ok());
        assert_eq!(
            KvKey::parse(&format!("{}x", "é".repeat(256)))
                .unwrap_err()
                .to_string(),
            "key is 513 bytes, over the limit of 512 bytes"
        );
        for bad in ["tab\there", "new\nline", "nul\0", "del\u{7f}", "c1\u{85}"] {
            assert_eq!(
                KvKey::parse(bad).unwrap_err().to_string(),
                "key must not contain control characters",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_round_trip_through_serde_and_refuse_bad_input() {
        let name: CollectionName = serde_json::from_value(json!("users")).unwrap();
        assert_eq!(serde_json::to_value(&name).unwrap(), json!("users"));
        assert!(serde_json::from_value::<CollectionName>(json!("a b")).is_err());
        assert!(serde_json::from_value::<KvKey>(json!("")).is_err());
    }

    #[test]
    fn values_up_to_64_kib_are_accepted_and_one_byte_more_is_refused() {
        // A JSON string's compact form is its text plus two quotes.
        let fits = json!("a".repeat(MAX_KV_VALUE_BYTES - 2));
        assert_eq!(check_kv_value(&key("k"), &fits), Ok(MAX_KV_VALUE_BYTES));
        let over = json!("a".repeat(MAX_KV_VALUE_BYTES - 1));
        let err = check_kv_value(&key("k"), &over).unwrap_err();
        assert_eq!(
            err,
            ServiceError::TooLarge {
                what: "value for key 'k'".to_owned(),
                size: MAX_KV_VALUE_BYTES + 1,
                limit: MAX_KV_VALUE_BYTES,
            }
        );
        assert_eq!(
            err.to_string(),
            "value for key 'k' is 65537 bytes, over the limit of 65536 bytes"
        );
    }

    #[test]
    fn values_that_cannot_be_stored_are_refused_naming_the_key() {
        let err = check_kv_value(&key("k"), &json!({ "a": ["x\0y"] })).unwrap_err();
        assert_eq!(
            err.to_string(),
            "value for key 'k' contains a NUL character, which cannot be stored"
        );
        assert!(check_kv_value(&key("k"), &json!({ "a\0": 1 })).is_err());

        let mut deep = json!(1);
        for _ in 0..MAX_KV_VALUE_DEPTH {
            deep = json!([deep]);
        }
        assert!(check_kv_value(&key("k"), &deep).is_ok());
        let deeper = json!({ "x": deep });
        assert_eq!(
            check_kv_value(&key("k"), &deeper).unwrap_err().to_string(),
            "value for key 'k' nests deeper than 64 levels"
        );
    }

    #[test]
    fn list_options_are_checked() {
        let bounds = KvListOptions::default().bounds().unwrap();
        assert_eq!(bounds.limit, DEFAULT_KV_LIST_LIMIT);
        assert_eq!((bounds.from.as_str(), &bounds.until), ("", &None));
        for limit in [0, MAX_KV_LIST_LIMIT + 1] {
            let err = KvListOptions {
                limit,
                ..KvListOptions::default()
            }
            .bounds()
            .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("limit must be between 1 and 1000, not {limit}")
            );
        }
        let bounds = KvListOptions {
            prefix: Some("user:".to_owned()),
            limit: 1000,
            cursor: Some("user:ada".to_owned()),
        }
        .bounds()
        .unwrap();
        assert_eq!(bounds.until.as_deref(), Some("user;"));
        assert!(bounds.contains("user:bob"));
        assert!(
            !bounds.contains("user:ada"),
            "the cursor itself is excluded"
        );
        assert!(!bounds.contains("users"));
        let err = KvListOptions {
            cursor: Some("x".repeat(513)),
            ..KvListOptions::default()
        }
        .bounds()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cursor is 513 bytes, over the limit of 512 bytes"
        );
    }

    #[test]
    fn increments_keep_whole_numbers_whole_and_refuse_what_is_not_a_number() {
        let k = key("n");
        assert_eq!(incremented(&k, None, KvIncrement::Int(1)), Ok(json!(1)));
        assert_eq!(
            incremented(&k, Some(&json!(41)), KvIncrement::Int(1)),
            Ok(json!(42))
        );
        assert_eq!(
            incremented(&k, Some(&json!(1)), KvIncrement::Float(0.5)),
            Ok(json!(1.5))
        );
        assert_eq!(
            incremented(&k, Some(&json!(0.5)), KvIncrement::Int(2)),
            Ok(json!(2.5))
        );
        assert_eq!(
            incremented(&k, Some(&json!("7")), KvIncrement::Int(1))
                .unwrap_err()
                .to_string(),
            "value for key 'n' is not a number, so it cannot be incremented"
        );
        assert_eq!(
            incremented(&k, Some(&json!(i64::MAX)), KvIncrement::Int(1))
                .unwrap_err()
                .to_string(),
            "incrementing key 'n' by 1 leaves the range of a 64-bit integer"
        );
    }

    #[test]
    fn an_atomic_batch_is_bounded_and_its_values_checked() {
        let set = |value: Value| KvMutation::Set {
            collection: CollectionName::parse("c").unwrap(),
            key: key("k"),
            value,
        };
        let ok = KvAtomic {
            checks: vec![],
            mutations: vec![set(json!(1))],
        };
        assert!(ok.validate().is_ok());
        let too_many = KvAtomic {
            checks: vec![],
            mutations: vec![set(json!(1)); MAX_KV_ATOMIC_OPERATIONS + 1],
        };
        assert_eq!(
            too_many.validate().unwrap_err().to_string(),
            "an atomic batch holds 101 checks and changes, over the limit of 100"
        );
        let nul = KvAtomic {
            checks: vec![],
            mutations: vec![set(json!("a\0"))],
        };
        assert!(nul.validate().is_err());
    }

    #[test]
    fn the_prefix_successor_skips_what_cannot_be_incremented() {
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("ab").as_deref(), Some("ac"));
        assert_eq!(
            prefix_successor("a\u{d7ff}").as_deref(),
            Some("a\u{e000}"),
            "surrogates are not characters"
        );
        assert_eq!(
            prefix_successor(&format!("a{}", char::MAX)).as_deref(),
            Some("b")
        );
        assert_eq!(prefix_successor(&char::MAX.to_string()), None);
    }

    /// Collection names around the rules' edges: most parse; the rest are empty, too long,
    /// or hold one character from just outside the alphabet.
    fn near_collection_names() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[A-Za-z0-9_.:-]{0,140}",
            1 => "[A-Za-z0-9_.:-]{0,64}[ /*@é]?[A-Za-z0-9_.:-]{0,64}",
        ]
    }

    proptest! {
        #[test]
        fn accepted_collection_names_are_safe(raw in near_collection_names()) {
            match CollectionName::parse(&raw) {
                Ok(name) => {
                    prop_assert!((1..=CollectionName::MAX_LEN).contains(&name.as_str().len()));
                    prop_assert!(name.as_str().bytes().all(is_collection_byte));
                }
                Err(_) => prop_assert!(
                    raw.is_empty()
                        || raw.len() > CollectionName::MAX_LEN
                        || !raw.bytes().all(is_collection_byte),
                    "{raw:?} was refused"
                ),
            }
        }

        #[test]
        fn valid_collection_names_are_accepted(raw in "[A-Za-z0-9_.:-]{1,128}") {
            let name = CollectionName::parse(&raw).unwrap();
            prop_assert_eq!(name.as_str(), raw.as_str());
        }

        #[test]
        fn accepted_keys_have_no_control_characters(raw in any::<String>()) {
            match KvKey::parse(&raw) {
                Ok(key) => {
                    prop_assert!((1..=KvKey::MAX_LEN).contains(&key.as_str().len()));
                    prop_assert!(!key.as_str().chars().any(char::is_control));
                }
                Err(_) => prop_assert!(
                    raw.is_empty() || raw.len() > KvKey::MAX_LEN || raw.chars().any(char::is_control)
                ),
            }
        }

        #[test]
        fn the_successor_bounds_exactly_the_keys_with_the_prefix(
            prefix in "\\PC{0,6}",
            key in "\\PC{0,8}",
        ) {
            let upper = prefix_successor(&prefix);
            let in_range = key.as_str() >= prefix.as_str()
                && upper.as_deref().is_none_or(|upper| key.as_str() < upper);
            prop_assert_eq!(in_range, key.starts_with(&prefix));
        }
    }
}
