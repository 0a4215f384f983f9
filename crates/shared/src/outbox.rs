//! The outbox's claim side: what a dispatcher takes from the outbox, the store it takes it
//! from, and the waker that tells it when to look again.
//!
//! Delivery is at least once. A claim is a lease: a dispatcher that dies leaves its claimed
//! rows to come back when the lease runs out, so no event is lost, and `FOR UPDATE SKIP
//! LOCKED` lets any number of dispatchers share the work without running a row twice while
//! its lease holds.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use crate::triggers::TriggerKind;
use crate::{AppId, Principal, ScriptId, TriggerId};

/// One claimed outbox row: the event to deliver, where to, how often to try, and as whom.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    /// The outbox row.
    pub id: Uuid,
    /// The app whose trigger this is; the script runs within it.
    pub app_id: AppId,
    /// The trigger that matched.
    pub trigger_id: TriggerId,
    /// The trigger's kind; a dead letter records it, and a `dead_letter` trigger's failed
    /// delivery is never fanned out again.
    pub trigger_kind: TriggerKind,
    /// The script to run.
    pub script_id: ScriptId,
    /// The payload the script sees as `ctx.event`.
    pub event: Value,
    /// The event's trigger depth; the run's own events carry `depth + 1`.
    pub depth: u32,
    /// This attempt's number, from 1: the attempts counted so far, this claim's included,
    /// as the outbox's `attempts` column holds them (a claim counts its attempt).
    pub attempts: u32,
    /// The trigger's attempt limit: after that many failed attempts the event becomes a
    /// dead letter.
    pub max_attempts: u32,
    /// Delay after the first failed attempt; doubled after each next one.
    pub base_delay: Duration,
    /// The longest delay between attempts.
    pub max_delay: Duration,
    /// Who the run acts as: the trigger's registering user with their current roles,
    /// limited to the trigger's app. `None` only for rows that name no user.
    pub run_as: Option<Principal>,
    /// For a `dead_letter` trigger's delivery: the dead letter it handles.
    pub dead_letter_id: Option<Uuid>,
    /// The worker holding the claim. Together with `attempts` it identifies this claim,
    /// so a dispatcher whose lease ran out cannot settle another dispatcher's claim.
    pub claimed_by: String,
}

impl OutboxItem {
    /// Whether a failure of this attempt leaves attempts to retry with.
    pub fn can_retry(&self) -> bool {
        self.attempts < self.max_attempts
    }

    /// Whether this claim is past the row's attempts. Attempts are counted when a row is
    /// claimed, so a run that kills its process has spent one; a row claimed with more
    /// than `max_attempts` has been tried that often without any run settling it.
    pub fn exhausted(&self) -> bool {
        self.attempts > self.max_attempts
    }

    /// The wait before the next attempt after this one failed: `base · 2^(n-1)` for attempt
    /// `n`, capped at `max_delay`, then moved by up to ±20% by `unit` (a uniform sample
    /// from `[0, 1)`: 0 is −20%, 0.5 is no change) so that events that failed together do
    /// not all come back together.
    pub fn retry_delay(&self, unit: f64) -> Duration {
        jittered(
            backoff(self.attempts, self.base_delay, self.max_delay),
            unit,
        )
    }
}

/// The exponential backoff after failed attempt `attempt` (from 1): `base · 2^(attempt-1)`,
/// capped at `max`.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let doublings = attempt.saturating_sub(1).min(63);
    let factor = 1_u64 << doublings;
    let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(base_ms.saturating_mul(factor)).min(max)
}

/// `delay` moved by up to ±20%: `unit` in `[0, 1)` maps linearly onto `[0.8, 1.2)`;
/// values outside are clamped.
pub fn jittered(delay: Duration, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.5
    };
    delay.mul_f64(0.8 + 0.4 * unit)
}

/// The outbox store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    /// The store could not be reached; a later try may succeed.
    #[error("outbox unavailable: {0}")]
    Unavailable(String),
    /// A fault inside the store or its data.
    #[error("outbox error: {0}")]
    Internal(String),
}

/// Result of an outbox store call.
pub type OutboxResult<T> = Result<T, OutboxError>;

/// The outbox as a dispatcher sees it: claim due rows under a lease, then settle each
/// claim exactly one way (complete, retry, defer or give up).
///
/// Settling a claim the caller no longer holds (its lease ran out and another worker
/// claimed the row) changes nothing: the newer claim decides.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Claims up to `limit` due rows nobody holds (or whose lease has run out), oldest due
    /// first, for `lease`, counting an attempt on each. Rows other claimers are locking
    /// right now are skipped, never waited for.
    async fn claim_due(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
    ) -> OutboxResult<Vec<OutboxItem>>;

    /// The runs succeeded: their rows go away, all together. Where a run delivered a dead
    /// letter, that dead letter is resolved as `handled_by_script`. Dispatchers hand over
    /// every run that finished since their last call, so a busy one deletes many rows per
    /// statement and an idle one each row at once.
    async fn complete(&self, items: &[OutboxItem]) -> OutboxResult<()>;

    /// The run failed with attempts left: the claim is released and the row is due again
    /// after `delay`, remembering `error`.
    async fn retry(&self, item: &OutboxItem, delay: Duration, error: &str) -> OutboxResult<()>;

    /// The run could not be attempted through no fault of the event (no free execution
    /// slot, the script store unreachable): like [`Self::retry`], but the attempt is not
    /// counted.
    async fn defer(&self, item: &OutboxItem, delay: Duration, reason: &str) -> OutboxResult<()>;

    /// The last attempt failed: in one transaction the row goes away and becomes an
    /// unresolved dead letter, fanned out to the app's `dead_letter` triggers. When the
    /// failed delivery was itself a dead letter's, no new dead letter is made: the original
    /// is resolved as `handler_failed`.
    async fn give_up(&self, item: &OutboxItem, error: &str) -> OutboxResult<()>;

    /// Releases every claim `worker` holds (at shutdown), uncounting their attempts, so
    /// other dispatchers can take the rows at once rather than after the lease.
    async fn release(&self, worker: &str) -> OutboxResult<u64>;

    /// How long until the next row becomes claimable (by the store's clock): zero when one
    /// is due now, `None` when the outbox is empty. A claimed row counts from its lease's
    /// end, which is how a crashed claimer's rows are picked up again.
    async fn next_due_in(&self) -> OutboxResult<Option<Duration>>;
}

/// Wakes a sleeping dispatcher when new rows may be due, so it never polls.
#[async_trait]
pub trait OutboxWaker: Send + Sync {
    /// Returns when rows may have been added or rescheduled since the previous call
    /// returned (a wake-up that arrived in between is kept, not lost), or at `deadline`
    /// (never, when `None`), whichever comes first. Spurious returns are allowed.
    async fn wait_until(&self, deadline: Option<Instant>);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(attempts: u32, max_attempts: u32) -> OutboxItem {
        OutboxItem {
            id: Uuid::nil(),
            app_id: AppId::new(),
            trigger_id: TriggerId::new(),
            trigger_kind: TriggerKind::Kv,
            script_id: ScriptId::new(),
            event: Value::Null,
            depth: 1,
            attempts,
            max_attempts,
            base_delay: Duration::from_millis(1000),
            max_delay: Duration::from_millis(300_000),
            run_as: None,
            dead_letter_id: None,
            claimed_by: "w".to_owned(),
        }
    }

    #[test]
    fn backoff_doubles_from_the_base_and_stops_at_the_cap() {
        let base = Duration::from_millis(1000);
        let max = Duration::from_millis(300_000);
        let delays: Vec<u128> = (1..=11)
            .map(|n| backoff(n, base, max).as_millis())
            .collect();
        assert_eq!(
            delays,
            [
                1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000, 300_000
            ]
        );
        assert_eq!(backoff(u32::MAX, base, max), max, "no overflow");
        assert_eq!(backoff(0, base, max), base);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let delay = Duration::from_millis(1000);
        assert_eq!(jittered(delay, 0.0), Duration::from_millis(800));
        assert_eq!(jittered(delay, 0.5), Duration::from_millis(1000));
        assert_eq!(jittered(delay, 1.0), Duration::from_millis(1200));
        assert_eq!(jittered(delay, -3.0), Duration::from_millis(800));
        assert_eq!(jittered(delay, f64::NAN), Duration::from_millis(1000));
    }

    #[test]
    fn the_retry_delay_follows_the_attempt_number() {
        assert_eq!(item(1, 5).retry_delay(0.5), Duration::from_millis(1000));
        assert_eq!(item(3, 5).retry_delay(0.5), Duration::from_millis(4000));
        assert_eq!(item(3, 5).retry_delay(0.0), Duration::from_millis(3200));
    }

    #[test]
    fn the_last_attempt_is_not_retried() {
        assert!(item(1, 5).can_retry());
        assert!(item(4, 5).can_retry());
        assert!(!item(5, 5).can_retry(), "attempt 5 of 5 is the last");
        assert!(!item(1, 1).can_retry());
    }
}
