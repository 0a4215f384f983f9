//! Triggers: what kinds exist, which KV collections a trigger watches (collection globs),
//! how a failed delivery is retried, and the event core's settings.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, EnvLookup, parse_var};
use crate::kv::{CollectionName, KvNameError};
use crate::outbox::{backoff, jittered};

/// What a trigger reacts to. Stored in `triggers.kind` (a CHECK lists them); each kind has
/// its own `<kind>_trigger_details` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// A KV entry was set or deleted in a matching collection.
    Kv,
    /// A file was created, updated or deleted in a matching collection.
    Files,
    /// A delivery of another trigger failed for good (a dead letter).
    DeadLetter,
}

impl TriggerKind {
    /// Every kind, in a stable order.
    pub const ALL: [Self; 3] = [Self::Kv, Self::Files, Self::DeadLetter];

    /// The kind's stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Kv => "kv",
            Self::Files => "files",
            Self::DeadLetter => "dead_letter",
        }
    }

    /// Parses a stored name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }

    /// Whether `dead_letter` triggers may handle the dead letters of this kind. A
    /// dead-letter handler's own failures are never fanned out again, so a failing handler
    /// cannot start a loop.
    pub fn dead_letters_fan_out(&self) -> bool {
        matches!(self, Self::Kv | Self::Files)
    }
}

impl fmt::Display for TriggerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A trigger kind name that is not one of the known kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown trigger kind '{0}' (expected kv, files or dead_letter)")]
pub struct UnknownTriggerKind(pub String);

impl FromStr for TriggerKind {
    type Err = UnknownTriggerKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| UnknownTriggerKind(s.to_owned()))
    }
}

/// Why a collection glob was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// The glob is empty.
    #[error("collection glob must not be empty")]
    Empty,
    /// The glob is longer than [`CollectionGlob::MAX_LEN`] characters.
    #[error("collection glob must be at most {max} characters")]
    TooLong {
        /// The longest allowed.
        max: usize,
    },
    /// A `*` somewhere other than the last character.
    #[error(
        "collection glob '{0}' has a '*' before its end: use '*' alone, a prefix followed by '*' (like 'orders:*'), or an exact collection name"
    )]
    MisplacedWildcard(String),
    /// The name or prefix before the `*` is not one a collection could have.
    #[error("collection glob '{glob}': {reason}")]
    BadName {
        /// The glob as given.
        glob: String,
        /// What is wrong with its name part.
        reason: KvNameError,
    },
}

/// Which KV collections a trigger watches: `*` (every collection), a prefix ending in `*`
/// (`orders:*` watches every collection whose name starts with `orders:`; `tmp*` also
/// watches `tmp` itself), or an exact collection name. A `*` anywhere but at the end is
/// refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
#[serde(try_from = "String", into = "String")]
pub struct CollectionGlob(String);

impl CollectionGlob {
    /// The longest glob accepted, in characters: a longest collection name and a `*`
    /// (the schema's CHECK agrees).
    pub const MAX_LEN: usize = CollectionName::MAX_LEN + 1;

    /// Validates a glob.
    pub fn parse(raw: &str) -> Result<Self, GlobError> {
        if raw.is_empty() {
            return Err(GlobError::Empty);
        }
        if raw.chars().count() > Self::MAX_LEN {
            return Err(GlobError::TooLong { max: Self::MAX_LEN });
        }
        let body = raw.strip_suffix('*').unwrap_or(raw);
        if body.contains('*') {
            return Err(GlobError::MisplacedWildcard(raw.to_owned()));
        }
        // What is left is a collection name, or the start of one: a glob that could never
        // match a collection is refused rather than stored silently useless.
        if !body.is_empty() {
            CollectionName::parse(body).map_err(|reason| GlobError::BadName {
                glob: raw.to_owned(),
                reason,
            })?;
        }
        Ok(Self(raw.to_owned()))
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the glob watches `collection`.
    pub fn matches(&self, collection: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => collection.starts_with(prefix),
            None => self.0 == collection,
        }
    }
}

impl fmt::Display for CollectionGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for CollectionGlob {
    type Err = GlobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for CollectionGlob {
    type Error = GlobError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<CollectionGlob> for String {
    fn from(value: CollectionGlob) -> Self {
        value.0
    }
}

/// A retry policy asked for that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryPolicyError {
    /// `max_attempts` outside 1..=100.
    #[error(
        "retry.max_attempts is {0}, expected 1 to {max}",
        max = RetryPolicy::MAX_ATTEMPTS
    )]
    Attempts(u32),
    /// A delay above the longest allowed.
    #[error(
        "retry.{field} is {value} ms, above the longest allowed delay of {max} ms",
        max = RetryPolicy::MAX_DELAY_MS
    )]
    DelayTooLong {
        /// `base_delay_ms` or `max_delay_ms`.
        field: &'static str,
        /// The value asked for.
        value: u64,
    },
    /// A retried policy whose first retry would come sooner than the shortest allowed.
    #[error(
        "retry.base_delay_ms is {0} ms, below the shortest retry delay of {min} ms",
        min = RetryPolicy::MIN_RETRY_DELAY_MS
    )]
    DelayTooShort(u64),
    /// `max_delay_ms` below `base_delay_ms`.
    #[error("retry.max_delay_ms ({max}) must not be below retry.base_delay_ms ({base})")]
    MaxBelowBase {
        /// The base delay asked for.
        base: u64,
        /// The maximum delay asked for.
        max: u64,
    },
}

/// How a trigger's failed deliveries are retried: attempt `n` (1-based) that fails is
/// tried again after `min(max_delay, base_delay · 2^(n-1))`, varied by ±20% so that
/// failures that happened together do not retry together; after `max_attempts` attempts
/// the event becomes a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retried).
    pub max_attempts: u32,
    /// Delay after the first failed attempt, in milliseconds.
    pub base_delay_ms: u64,
    /// The longest delay between two attempts, in milliseconds.
    pub max_delay_ms: u64,
}

impl RetryPolicy {
    /// The most attempts a policy may ask for (the schema's CHECK agrees).
    pub const MAX_ATTEMPTS: u32 = 100;
    /// The longest delay a policy may ask for: one day.
    pub const MAX_DELAY_MS: u64 = 24 * 60 * 60 * 1000;
    /// The shortest first retry a retried policy may ask for: a hundred attempts at 0 ms
    /// would let one failing event keep a dispatcher busy (review M6). A policy of one
    /// attempt never waits, so its delays may be anything.
    pub const MIN_RETRY_DELAY_MS: u64 = 100;

    /// Checks the policy's bounds.
    pub fn validate(&self) -> Result<(), RetryPolicyError> {
        if !(1..=Self::MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(RetryPolicyError::Attempts(self.max_attempts));
        }
        for (field, value) in [
            ("base_delay_ms", self.base_delay_ms),
            ("max_delay_ms", self.max_delay_ms),
        ] {
            if value > Self::MAX_DELAY_MS {
                return Err(RetryPolicyError::DelayTooLong { field, value });
            }
        }
        if self.max_delay_ms < self.base_delay_ms {
            return Err(RetryPolicyError::MaxBelowBase {
                base: self.base_delay_ms,
                max: self.max_delay_ms,
            });
        }
        if self.max_attempts > 1 && self.base_delay_ms < Self::MIN_RETRY_DELAY_MS {
            return Err(RetryPolicyError::DelayTooShort(self.base_delay_ms));
        }
        Ok(())
    }

    /// This policy with the fields given replaced, checked: how a trigger's own retry
    /// settings combine with the instance defaults, wherever a trigger is made or changed.
    pub fn overridden(
        &self,
        max_attempts: Option<u32>,
        base_delay_ms: Option<u64>,
        max_delay_ms: Option<u64>,
    ) -> Result<Self, RetryPolicyError> {
        let policy = Self {
            max_attempts: max_attempts.unwrap_or(self.max_attempts),
            base_delay_ms: base_delay_ms.unwrap_or(self.base_delay_ms),
            max_delay_ms: max_delay_ms.unwrap_or(self.max_delay_ms),
        };
        policy.validate()?;
        Ok(policy)
    }

    /// The delay after failed attempt `attempt` (1-based), before jitter:
    /// `min(max_delay, base_delay · 2^(attempt-1))`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        backoff(
            attempt,
            Duration::from_millis(self.base_delay_ms),
            Duration::from_millis(self.max_delay_ms),
        )
    }

    /// The delay after failed attempt `attempt`, with jitter: `unit` is a uniformly random
    /// number in `[0, 1)` (the caller owns the randomness) mapped onto ±20% of the backoff.
    /// Out-of-range values are clamped, so the result always stays within ±20%.
    pub fn jittered(&self, attempt: u32, unit: f64) -> Duration {
        jittered(self.backoff(attempt), unit)
    }

    /// Whether a delivery that failed on attempt `attempt` (1-based) becomes a dead letter
    /// rather than being retried.
    pub fn exhausted(&self, attempt: u32) -> bool {
        attempt >= self.max_attempts
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: TriggerConfig::DEFAULT_MAX_ATTEMPTS,
            base_delay_ms: TriggerConfig::DEFAULT_BASE_DELAY_MS,
            max_delay_ms: TriggerConfig::DEFAULT_MAX_DELAY_MS,
        }
    }
}

/// What a lease covers beyond a run's slot wait and sandbox timeout: the executor's
/// backstop past the timeout (1 s) and the time to settle the row afterwards, so a run
/// that takes all it may is still settled before another dispatcher may claim its row.
pub const LEASE_GRACE: Duration = Duration::from_secs(6);

/// The event core's settings: default retry policy, the outbox lease, the trigger depth
/// limit and the retention of dead letters and abandoned results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerConfig {
    /// The retry policy of triggers created without one (`PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS`,
    /// default 5; `PICLOUD_TRIGGER_RETRY_BASE_DELAY_MS`, default 1000;
    /// `PICLOUD_TRIGGER_RETRY_MAX_DELAY_MS`, default 300000).
    pub retry: RetryPolicy,
    /// How long a dispatcher's claim on an outbox row lasts before another dispatcher may
    /// take the row over (`PICLOUD_OUTBOX_LEASE_SECS`, default 60). It must exceed the
    /// sandbox timeout, or a run still in progress could be started a second time.
    pub outbox_lease: Duration,
    /// Deepest chain of triggered runs (`PICLOUD_MAX_TRIGGER_DEPTH`, default 8): an event
    /// deeper than this is refused and recorded as a dead letter.
    pub max_trigger_depth: u32,
    /// How long resolved dead letters are kept (`PICLOUD_DEAD_LETTER_RETENTION_DAYS`,
    /// default 30). Unresolved ones are kept until someone resolves them.
    pub dead_letter_retention: Duration,
    /// How long results of abandoned synchronous invocations are kept
    /// (`PICLOUD_ABANDONED_EXECUTIONS_RETENTION_DAYS`, default 7).
    pub abandoned_executions_retention: Duration,
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

impl TriggerConfig {
    /// Default attempts per delivery.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
    /// Default delay after the first failure, in milliseconds.
    pub const DEFAULT_BASE_DELAY_MS: u64 = 1000;
    /// Default longest delay between attempts, in milliseconds (five minutes).
    pub const DEFAULT_MAX_DELAY_MS: u64 = 300_000;
    /// Default outbox lease, in seconds.
    pub const DEFAULT_OUTBOX_LEASE_SECS: u64 = 60;
    /// Default trigger depth limit.
    pub const DEFAULT_MAX_TRIGGER_DEPTH: u32 = 8;
    /// Default retention of resolved dead letters, in days.
    pub const DEFAULT_DEAD_LETTER_RETENTION_DAYS: u32 = 30;
    /// Default retention of abandoned results, in days.
    pub const DEFAULT_ABANDONED_RETENTION_DAYS: u32 = 7;

    /// Reads the event core's variables, each falling back to its default when unset or
    /// empty; a value out of bounds names its variable.
    pub fn from_env(env: &impl EnvLookup) -> Result<Self, ConfigError> {
        const ATTEMPTS: &str = "PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS";
        const BASE: &str = "PICLOUD_TRIGGER_RETRY_BASE_DELAY_MS";
        const MAX: &str = "PICLOUD_TRIGGER_RETRY_MAX_DELAY_MS";
        const LEASE: &str = "PICLOUD_OUTBOX_LEASE_SECS";
        const DEPTH: &str = "PICLOUD_MAX_TRIGGER_DEPTH";
        const DEAD_LETTERS: &str = "PICLOUD_DEAD_LETTER_RETENTION_DAYS";
        const ABANDONED: &str = "PICLOUD_ABANDONED_EXECUTIONS_RETENTION_DAYS";

        let retry = RetryPolicy {
            max_attempts: parse_var(env, ATTEMPTS, Self::DEFAULT_MAX_ATTEMPTS)?,
            base_delay_ms: parse_var(env, BASE, Self::DEFAULT_BASE_DELAY_MS)?,
            max_delay_ms: parse_var(env, MAX, Self::DEFAULT_MAX_DELAY_MS)?,
        };
        retry.validate().map_err(|err| {
            let (variable, value) = match err {
                RetryPolicyError::Attempts(n) => (ATTEMPTS, n.to_string()),
                RetryPolicyError::DelayTooLong {
                    field: "base_delay_ms",
                    value,
                } => (BASE, value.to_string()),
                RetryPolicyError::DelayTooLong { value, .. } => (MAX, value.to_string()),
                RetryPolicyError::MaxBelowBase { max, .. } => (MAX, max.to_string()),
                RetryPolicyError::DelayTooShort(base) => (BASE, base.to_string()),
            };
            ConfigError {
                variable: variable.to_owned(),
                value,
                reason: err.to_string(),
            }
        })?;
        let lease: u64 = parse_var(env, LEASE, Self::DEFAULT_OUTBOX_LEASE_SECS)?;
        if lease == 0 {
            return Err(at_least_one(LEASE, lease));
        }
        let depth: u32 = parse_var(env, DEPTH, Self::DEFAULT_MAX_TRIGGER_DEPTH)?;
        if depth == 0 {
            // Zero would refuse every event, even those of an HTTP run.
            return Err(at_least_one(DEPTH, depth));
        }
        let dead_letter_days: u32 =
            parse_var(env, DEAD_LETTERS, Self::DEFAULT_DEAD_LETTER_RETENTION_DAYS)?;
        if dead_letter_days == 0 {
            return Err(at_least_one(DEAD_LETTERS, dead_letter_days));
        }
        let abandoned_days: u32 =
            parse_var(env, ABANDONED, Self::DEFAULT_ABANDONED_RETENTION_DAYS)?;
        if abandoned_days == 0 {
            return Err(at_least_one(ABANDONED, abandoned_days));
        }
        Ok(Self {
            retry,
            outbox_lease: Duration::from_secs(lease),
            max_trigger_depth: depth,
            dead_letter_retention: DAY * dead_letter_days,
            abandoned_executions_retention: DAY * abandoned_days,
        })
    }

    /// How long one claimed run can take at most, from its claim to its settlement: the
    /// wait for an execution slot, the sandbox timeout, and [`LEASE_GRACE`].
    pub fn longest_run(sandbox_timeout: Duration, queue_wait: Duration) -> Duration {
        sandbox_timeout
            .saturating_add(queue_wait)
            .saturating_add(LEASE_GRACE)
    }

    /// Checks that the outbox lease outlasts the longest run ([`Self::longest_run`]): a
    /// lease that ends while its run may still be going, or before its row is settled,
    /// lets another dispatcher start the same delivery again.
    pub fn check_lease(
        &self,
        sandbox_timeout: Duration,
        queue_wait: Duration,
    ) -> Result<(), ConfigError> {
        let longest = Self::longest_run(sandbox_timeout, queue_wait);
        if self.outbox_lease > longest {
            Ok(())
        } else {
            Err(ConfigError {
                variable: "PICLOUD_OUTBOX_LEASE_SECS".to_owned(),
                value: self.outbox_lease.as_secs().to_string(),
                reason: format!(
                    "must be longer than the longest run, {} ms: the sandbox timeout ({} ms), \
                     the execution queue wait ({} ms) and {} s to settle it",
                    longest.as_millis(),
                    sandbox_timeout.as_millis(),
                    queue_wait.as_millis(),
                    LEASE_GRACE.as_secs()
                ),
            })
        }
    }
}

impl Default for TriggerConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            outbox_lease: Duration::from_secs(Self::DEFAULT_OUTBOX_LEASE_SECS),
            max_trigger_depth: Self::DEFAULT_MAX_TRIGGER_DEPTH,
            dead_letter_retention: DAY * Self::DEFAULT_DEAD_LETTER_RETENTION_DAYS,
            abandoned_executions_retention: DAY * Self::DEFAULT_ABANDONED_RETENTION_DAYS,
        }
    }
}

fn at_least_one(variable: &str, value: impl ToString) -> ConfigError {
    ConfigError {
        variable: variable.to_owned(),
        value: value.to_string(),
        reason: "must be at least 1".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// What the `kv` trigger kind's matcher asks of a stored glob (`CollectionGlob::matches`),
    /// with a glob that does not parse matching nothing.
    fn collection_matches(glob: &str, collection: &str) -> bool {
        CollectionGlob::parse(glob).is_ok_and(|glob| glob.matches(collection))
    }

    #[test]
    fn a_triggers_own_retry_settings_override_the_defaults_and_are_checked() {
        let defaults = RetryPolicy::default();
        assert_eq!(defaults.overridden(None, None, None), Ok(defaults));
        let own = defaults.overridden(Some(2), Some(100), None).unwrap();
        assert_eq!(
            own,
            RetryPolicy {
                max_attempts: 2,
                base_delay_ms: 100,
                max_delay_ms: defaults.max_delay_ms,
            }
        );
        assert_eq!(
            defaults.overridden(Some(0), None, None),
            Err(RetryPolicyError::Attempts(0))
        );
        assert!(matches!(
            defaults.overridden(None, Some(5000), Some(10)),
            Err(RetryPolicyError::MaxBelowBase { .. })
        ));
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn kinds_round_trip_through_their_stored_names() {
        for kind in TriggerKind::ALL {
            assert_eq!(TriggerKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.as_str().parse::<TriggerKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert!("cron".parse::<TriggerKind>().is_err());
    }

    #[test]
    fn globs_match_everything_a_prefix_or_one_name() {
        assert!(collection_matches("*", "users"));
        assert!(collection_matches("*", ""));
        assert!(collection_matches("orders:*", "orders:2024"));
        assert!(collection_matches("orders:*", "orders:"));
        assert!(!collection_matches("orders:*", "orders"));
        assert!(!collection_matches("orders:*", "my-orders:1"));
        assert!(collection_matches("tmp*", "tmp"));
        assert!(collection_matches("tmp*", "tmp-cache"));
        assert!(collection_matches("users", "users"));
        assert!(!collection_matches("users", "users2"));
        assert!(!collection_matches("users", "Users"));
    }

    #[test]
    fn a_wildcard_before_the_end_is_refused_with_a_clear_message() {
        for bad in ["*users", "a*b", "**", "or*ders:*"] {
            let err = CollectionGlob::parse(bad).unwrap_err();
            assert_eq!(err, GlobError::MisplacedWildcard(bad.to_owned()));
            assert!(err.to_string().contains("'*' before its end"), "{err}");
            assert!(!collection_matches(bad, "anything"));
        }
        assert_eq!(CollectionGlob::parse(""), Err(GlobError::Empty));
        let err = CollectionGlob::parse("a b*").unwrap_err();
        assert!(matches!(err, GlobError::BadName { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "collection glob 'a b*': collection name may contain only ASCII letters, digits, '_', '-', '.' and ':'"
        );
        let long = "x".repeat(CollectionGlob::MAX_LEN);
        assert_eq!(
            CollectionGlob::parse(&format!("{long}*")),
            Err(GlobError::TooLong { max: 129 })
        );
        assert!(CollectionGlob::parse(&format!("{}*", &long[1..])).is_ok());
        assert!(matches!(
            CollectionGlob::parse(&long),
            Err(GlobError::BadName { .. })
        ));
        assert!(CollectionGlob::parse(&long[1..]).is_ok());
    }

    #[test]
    fn globs_deserialize_only_when_valid() {
        let glob: CollectionGlob = serde_json::from_str("\"orders:*\"").unwrap();
        assert_eq!(glob.as_str(), "orders:*");
        assert!(serde_json::from_str::<CollectionGlob>("\"a*b\"").is_err());
    }

    proptest! {
        #[test]
        fn star_matches_every_collection(collection in ".{0,64}") {
            prop_assert!(collection_matches("*", &collection));
        }

        #[test]
        fn an_exact_glob_matches_only_itself(
            glob in "[a-z0-9:_-]{1,20}",
            other in "[a-z0-9:_-]{0,20}",
        ) {
            prop_assert!(collection_matches(&glob, &glob));
            prop_assert_eq!(collection_matches(&glob, &other), glob == other);
        }

        #[test]
        fn a_prefix_glob_matches_exactly_the_names_starting_with_the_prefix(
            prefix in "[a-z0-9:_-]{0,20}",
            rest in "[a-z0-9:_-]{0,20}",
            other in "[a-z0-9:_-]{0,40}",
        ) {
            let glob = format!("{prefix}*");
            let inside = format!("{prefix}{rest}");
            prop_assert!(collection_matches(&glob, &inside));
            prop_assert_eq!(collection_matches(&glob, &other), other.starts_with(&prefix));
        }

        #[test]
        fn a_star_before_the_last_character_never_parses(
            before in "[a-z:]{0,10}",
            after in "[a-z:*]{1,10}",
        ) {
            let glob = format!("{before}*{after}");
            prop_assert!(CollectionGlob::parse(&glob).is_err());
            prop_assert!(!collection_matches(&glob, &glob));
        }

        #[test]
        fn backoff_doubles_up_to_the_cap(
            base in 0_u64..10_000,
            extra in 0_u64..1_000_000,
            attempt in 1_u32..200,
        ) {
            let policy = RetryPolicy { max_attempts: 5, base_delay_ms: base, max_delay_ms: base + extra };
            let delay = policy.backoff(attempt);
            prop_assert!(delay <= Duration::from_millis(base + extra));
            if attempt > 1 {
                let before = policy.backoff(attempt - 1);
                prop_assert!(delay >= before);
                prop_assert!(delay == before * 2 || delay == Duration::from_millis(base + extra));
            }
        }

        #[test]
        fn jitter_stays_within_twenty_percent(attempt in 1_u32..20, unit in 0.0_f64..1.0) {
            let policy = RetryPolicy::default();
            let plain = policy.backoff(attempt).as_secs_f64();
            let jittered = policy.jittered(attempt, unit).as_secs_f64();
            prop_assert!(jittered >= plain * 0.8 - 1e-9, "{jittered} vs {plain}");
            prop_assert!(jittered <= plain * 1.2 + 1e-9, "{jittered} vs {plain}");
        }
    }

    #[test]
    fn the_default_policy_grows_one_two_four_seconds_and_caps_at_five_minutes() {
        let policy = RetryPolicy::default();
        let secs: Vec<u64> = (1..=10).map(|n| policy.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert!(!policy.exhausted(4));
        assert!(policy.exhausted(5));
        assert_eq!(policy.jittered(1, 0.0), Duration::from_millis(800));
        assert_eq!(policy.jittered(1, 1.0), Duration::from_millis(1200));
        assert_eq!(policy.jittered(1, f64::NAN), Duration::from_millis(1000));
    }

    #[test]
    fn policies_out_of_bounds_are_refused() {
        let ok = RetryPolicy::default();
        assert_eq!(ok.validate(), Ok(()));
        let zero = RetryPolicy {
            max_attempts: 0,
            ..ok
        };
        assert_eq!(zero.validate(), Err(RetryPolicyError::Attempts(0)));
        let inverted = RetryPolicy {
            base_delay_ms: 10,
            max_delay_ms: 5,
            ..ok
        };
        assert_eq!(
            inverted.validate().unwrap_err().to_string(),
            "retry.max_delay_ms (5) must not be below retry.base_delay_ms (10)"
        );
        let huge = RetryPolicy {
            max_delay_ms: RetryPolicy::MAX_DELAY_MS + 1,
            ..ok
        };
        assert!(matches!(
            huge.validate(),
            Err(RetryPolicyError::DelayTooLong {
                field: "max_delay_ms",
                ..
            })
        ));
        let hammering = RetryPolicy {
            max_attempts: 100,
            base_delay_ms: 0,
            max_delay_ms: 0,
        };
        assert_eq!(
            hammering.validate(),
            Err(RetryPolicyError::DelayTooShort(0))
        );
        let never_retried = RetryPolicy {
            max_attempts: 1,
            ..hammering
        };
        assert_eq!(
            never_retried.validate(),
            Ok(()),
            "no retry, no delay to bound"
        );
    }

    #[test]
    fn config_defaults_apply_when_unset_or_empty() {
        let config = TriggerConfig::from_env(&env(&[("PICLOUD_MAX_TRIGGER_DEPTH", " ")])).unwrap();
        assert_eq!(config, TriggerConfig::default());
        assert_eq!(config.retry.max_attempts, 5);
        assert_eq!(config.retry.base_delay_ms, 1000);
        assert_eq!(config.retry.max_delay_ms, 300_000);
        assert_eq!(config.outbox_lease, Duration::from_secs(60));
        assert_eq!(config.max_trigger_depth, 8);
        assert_eq!(
            config.dead_letter_retention,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            config.abandoned_executions_retention,
            Duration::from_secs(7 * 86_400)
        );
    }

    #[test]
    fn config_values_are_read_from_the_environment() {
        let config = TriggerConfig::from_env(&env(&[
            ("PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS", "3"),
            ("PICLOUD_TRIGGER_RETRY_BASE_DELAY_MS", "150"),
            ("PICLOUD_TRIGGER_RETRY_MAX_DELAY_MS", "400"),
            ("PICLOUD_OUTBOX_LEASE_SECS", "120"),
            ("PICLOUD_MAX_TRIGGER_DEPTH", "2"),
            ("PICLOUD_DEAD_LETTER_RETENTION_DAYS", "1"),
            ("PICLOUD_ABANDONED_EXECUTIONS_RETENTION_DAYS", "2"),
        ]))
        .unwrap();
        assert_eq!(
            config.retry,
            RetryPolicy {
                max_attempts: 3,
                base_delay_ms: 150,
                max_delay_ms: 400
            }
        );
        assert_eq!(config.outbox_lease, Duration::from_secs(120));
        assert_eq!(config.max_trigger_depth, 2);
        assert_eq!(config.dead_letter_retention, Duration::from_secs(86_400));
        assert_eq!(
            config.abandoned_executions_retention,
            Duration::from_secs(2 * 86_400)
        );
    }

    #[test]
    fn unusable_config_values_name_the_variable() {
        for variable in [
            "PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS",
            "PICLOUD_OUTBOX_LEASE_SECS",
            "PICLOUD_MAX_TRIGGER_DEPTH",
            "PICLOUD_DEAD_LETTER_RETENTION_DAYS",
            "PICLOUD_ABANDONED_EXECUTIONS_RETENTION_DAYS",
        ] {
            let err = TriggerConfig::from_env(&env(&[(variable, "0")])).unwrap_err();
            assert_eq!(err.variable, variable);
            let err = TriggerConfig::from_env(&env(&[(variable, "soon")])).unwrap_err();
            assert_eq!(err.variable, variable);
            assert_eq!(err.value, "soon");
        }
        let err = TriggerConfig::from_env(&env(&[("PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS", "101")]))
            .unwrap_err();
        assert_eq!(err.variable, "PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS");
        let err = TriggerConfig::from_env(&env(&[
            ("PICLOUD_TRIGGER_RETRY_BASE_DELAY_MS", "5000"),
            ("PICLOUD_TRIGGER_RETRY_MAX_DELAY_MS", "1000"),
        ]))
        .unwrap_err();
        assert_eq!(err.variable, "PICLOUD_TRIGGER_RETRY_MAX_DELAY_MS");
        assert!(err.reason.contains("must not be below"), "{}", err.reason);
        let err = TriggerConfig::from_env(&env(&[(
            "PICLOUD_TRIGGER_RETRY_BASE_DELAY_MS",
            "999999999999",
        )]))
        .unwrap_err();
        assert_eq!(err.variable, "PICLOUD_TRIGGER_RETRY_BASE_DELAY_MS");
    }

    #[test]
    fn the_lease_must_outlast_the_longest_run() {
        let config = TriggerConfig::default();
        let queue = Duration::from_secs(5);
        assert_eq!(config.check_lease(Duration::from_secs(30), queue), Ok(()));
        // 49 + 5 + 6 = 60: a run could still be settling when the 60 s lease ends.
        let err = config
            .check_lease(Duration::from_secs(49), queue)
            .unwrap_err();
        assert_eq!(err.variable, "PICLOUD_OUTBOX_LEASE_SECS");
        assert_eq!(
            err.reason,
            "must be longer than the longest run, 60000 ms: the sandbox timeout (49000 ms), \
             the execution queue wait (5000 ms) and 6 s to settle it"
        );
    }
}
