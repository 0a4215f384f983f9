//! What every [`OutboxStore`] must do, written once and run against each implementation
//! (the in-memory fake here, PostgreSQL in the manager's tests) with
//! [`outbox_store_contract!`](crate::outbox_store_contract).
//!
//! The heart of it is claim identity: a claim is the worker holding a row together with
//! the attempt its claim counted, and retry, defer and give-up act only on the claim they
//! name. What is one backend's business (PostgreSQL's dead letters and their fan-out, the
//! error a retry remembers) stays in that backend's own tests.

use std::time::Duration;

use async_trait::async_trait;
use picloud_shared::{OutboxItem, OutboxStore};
use serde_json::{Value, json};
use uuid::Uuid;

/// A lease long enough that no test sees it end unless it lets the time pass.
pub const LEASE: Duration = Duration::from_secs(60);

/// What a backend gives the suite besides its store: a way to put rows in (the store has
/// no insert) and to look at one, and time passing on the store's clock.
#[async_trait]
pub trait OutboxFixture: Send + Sync {
    /// The store under test.
    fn store(&self) -> &dyn OutboxStore;

    /// Adds an unclaimed row carrying `event`, due after `due_in`, for an enabled trigger
    /// allowing 3 attempts and no dead-letter triggers to fan out to; returns its id.
    async fn add_row(&self, event: Value, due_in: Duration) -> Uuid;

    /// The row as the store holds it, `None` once it is gone.
    async fn row(&self, id: Uuid) -> Option<RowState>;

    /// Lets `by` pass for every due time and lease, as the store's clock sees them.
    async fn elapse(&self, by: Duration);
}

/// A row's claim as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowState {
    /// Attempts counted so far, the current claim's included.
    pub attempts: u32,
    /// The worker holding the row, `None` when nobody does.
    pub claimed_by: Option<String>,
}

impl RowState {
    /// The state a row claimed as `item` is in.
    pub fn claimed(item: &OutboxItem) -> Self {
        Self {
            attempts: item.attempts,
            claimed_by: Some(item.claimed_by.clone()),
        }
    }

    /// An unheld row with `attempts` counted.
    pub fn free(attempts: u32) -> Self {
        Self {
            attempts,
            claimed_by: None,
        }
    }
}

async fn claim(
    f: &dyn OutboxFixture,
    worker: &str,
    limit: u32,
    lease: Duration,
) -> Vec<OutboxItem> {
    f.store().claim_due(worker, limit, lease).await.unwrap()
}

async fn claim_one(f: &dyn OutboxFixture, worker: &str, lease: Duration) -> OutboxItem {
    let mut items = claim(f, worker, 1, lease).await;
    assert_eq!(items.len(), 1, "{worker} claimed {items:?}");
    items.remove(0)
}

async fn next_due_in(f: &dyn OutboxFixture) -> Option<Duration> {
    f.store().next_due_in().await.unwrap()
}

fn within(wait: Option<Duration>, low: Duration, high: Duration) -> bool {
    wait.is_some_and(|wait| wait > low && wait <= high)
}

/// A claim counts its attempt and names its worker, exactly as the store then holds the
/// row, and a held row is not claimed twice.
pub async fn a_claim_counts_its_attempt_and_names_its_worker(f: &dyn OutboxFixture) {
    let event = json!({ "kind": "kv", "key": "ada" });
    let id = f.add_row(event.clone(), Duration::ZERO).await;
    assert_eq!(f.row(id).await, Some(RowState::free(0)));

    let items = claim(f, "w1", 10, LEASE).await;
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(item.id, id);
    assert_eq!(item.event, event);
    assert_eq!(item.attempts, 1, "the claim counts its attempt, the first");
    assert_eq!(item.claimed_by, "w1");
    assert_eq!(f.row(id).await, Some(RowState::claimed(item)));

    assert!(
        claim(f, "w2", 10, LEASE).await.is_empty(),
        "a held row is not claimed twice"
    );
    assert!(
        claim(f, "w1", 10, LEASE).await.is_empty(),
        "not even by its holder"
    );
}

/// A claim takes at most `limit` rows, only due ones, oldest due first.
pub async fn claims_take_due_rows_oldest_first_up_to_the_limit(f: &dyn OutboxFixture) {
    let later = f.add_row(json!({ "n": 3 }), Duration::from_secs(20)).await;
    let soon = f.add_row(json!({ "n": 2 }), Duration::from_secs(10)).await;
    let now = f.add_row(json!({ "n": 1 }), Duration::ZERO).await;

    assert!(
        claim(f, "w", 0, LEASE).await.is_empty(),
        "a limit of 0 claims nothing"
    );
    let ids = |items: Vec<OutboxItem>| items.into_iter().map(|item| item.id).collect::<Vec<_>>();
    assert_eq!(
        ids(claim(f, "w", 5, LEASE).await),
        [now],
        "only the due row"
    );
    f.elapse(Duration::from_secs(30)).await;
    assert_eq!(
        ids(claim(f, "w", 5, LEASE).await),
        [soon, later],
        "oldest due first"
    );

    let fourth = f.add_row(json!({ "n": 4 }), Duration::ZERO).await;
    // Rows added one after the other may share a due time on a coarse clock.
    f.elapse(Duration::from_secs(1)).await;
    let fifth = f.add_row(json!({ "n": 5 }), Duration::ZERO).await;
    assert_eq!(
        ids(claim(f, "w", 1, LEASE).await),
        [fourth],
        "at most the limit"
    );
    assert_eq!(ids(claim(f, "w", 1, LEASE).await), [fifth]);
}

/// A held row comes back when its lease ends, not before; its new claim counts another
/// attempt and names the new worker.
pub async fn a_held_row_is_claimed_again_only_after_its_lease(f: &dyn OutboxFixture) {
    let id = f.add_row(json!({}), Duration::ZERO).await;
    let lease = Duration::from_secs(10);
    let first = claim_one(f, "crashed", lease).await;
    assert!(
        within(next_due_in(f).await, Duration::from_secs(9), lease),
        "the row comes back when the lease ends: {:?}",
        next_due_in(f).await
    );

    f.elapse(Duration::from_secs(5)).await;
    assert!(claim(f, "w2", 1, LEASE).await.is_empty(), "the lease holds");

    f.elapse(Duration::from_secs(6)).await;
    let second = claim_one(f, "w2", LEASE).await;
    assert_eq!(second.id, id);
    assert_eq!(
        second.attempts, 2,
        "the crashed attempt counts, so a row that kills its claimer ends"
    );
    assert_eq!(second.claimed_by, "w2");
    assert_eq!(f.row(id).await, Some(RowState::claimed(&second)));
    assert_eq!(first.attempts, 1);
}

/// Retry, defer and give-up with another worker's old claim change nothing, and the
/// current holder's claim still settles.
pub async fn a_claim_another_worker_took_over_settles_nothing(f: &dyn OutboxFixture) {
    let id = f.add_row(json!({}), Duration::ZERO).await;
    let lease = Duration::from_secs(10);
    let stale = claim_one(f, "slow", lease).await;
    f.elapse(lease + Duration::from_secs(1)).await;
    let current = claim_one(f, "w2", LEASE).await;

    settle_stale(f, &stale).await;
    assert_eq!(
        f.row(id).await,
        Some(RowState::claimed(&current)),
        "the newer claim decides"
    );

    f.store()
        .retry(&current, Duration::ZERO, "boom")
        .await
        .unwrap();
    assert_eq!(f.row(id).await, Some(RowState::free(2)));
}

/// The same worker's claim from before its lease ran out and it claimed the row again
/// (the attempt differs) settles nothing either.
pub async fn an_earlier_claim_of_the_same_worker_settles_nothing(f: &dyn OutboxFixture) {
    let id = f.add_row(json!({}), Duration::ZERO).await;
    let lease = Duration::from_secs(10);
    let stale = claim_one(f, "w", lease).await;
    f.elapse(lease + Duration::from_secs(1)).await;
    let current = claim_one(f, "w", LEASE).await;
    assert_eq!(
        (stale.claimed_by.as_str(), current.claimed_by.as_str()),
        ("w", "w")
    );
    assert_eq!((stale.attempts, current.attempts), (1, 2));

    settle_stale(f, &stale).await;
    assert_eq!(f.row(id).await, Some(RowState::claimed(&current)));

    f.store()
        .defer(&current, Duration::ZERO, "no free execution slot")
        .await
        .unwrap();
    assert_eq!(f.row(id).await, Some(RowState::free(1)));
}

/// Tries every settlement but completion with `stale`, which must all be refused quietly.
async fn settle_stale(f: &dyn OutboxFixture, stale: &OutboxItem) {
    let store = f.store();
    store
        .retry(stale, Duration::from_secs(3600), "late")
        .await
        .unwrap();
    store
        .defer(stale, Duration::from_secs(3600), "late")
        .await
        .unwrap();
    store.give_up(stale, "late").await.unwrap();
}

/// A retry hands the row back, due after the delay, with its attempt counted.
pub async fn retry_hands_the_row_back_after_the_delay(f: &dyn OutboxFixture) {
    let id = f.add_row(json!({}), Duration::ZERO).await;
    let item = claim_one(f, "w", LEASE).await;
    f.store()
        .retry(&item, Duration::from_secs(10), "boom")
        .await
        .unwrap();
    assert_eq!(f.row(id).await, Some(RowState::free(1)));
    assert!(claim(f, "w", 1, LEASE).await.is_empty(), "not due yet");
    assert!(
        within(
            next_due_in(f).await,
            Duration::from_secs(9),
            Duration::from_secs(10)
        ),
        "{:?}",
        next_due_in(f).await
    );

    f.elapse(Duration::from_secs(11)).await;
    let again = claim_one(f, "w", LEASE).await;
    assert_eq!((again.id, again.attempts), (id, 2));
}

/// A deferral hands the row back, due after the delay, giving its attempt back.
pub async fn defer_hands_the_row_back_without_spending_the_attempt(f: &dyn OutboxFixture) {
    let id = f.add_row(json!({}), Duration::ZERO).await;
    let item = claim_one(f, "w", LEASE).await;
    f.store()
        .defer(&item, Duration::from_secs(10), "no free execution slot")
        .await
        .unwrap();
    assert_eq!(
        f.row(id).await,
        Some(RowState::free(0)),
        "a deferral spends no attempt"
    );
    assert!(claim(f, "w", 1, LEASE).await.is_empty(), "not due yet");

    f.elapse(Duration::from_secs(11)).await;
    let again = claim_one(f, "w", LEASE).await;
    assert_eq!((again.id, again.attempts), (id, 1));
}

/// Giving up removes the row, and only that row.
pub async fn give_up_removes_the_row(f: &dyn OutboxFixture) {
    let id = f.add_row(json!({}), Duration::ZERO).await;
    let other = f.add_row(json!({}), Duration::from_secs(3600)).await;
    let item = claim_one(f, "w", LEASE).await;
    f.store().give_up(&item, "boom").await.unwrap();
    assert_eq!(f.row(id).await, None);
    assert_eq!(f.row(other).await, Some(RowState::free(0)));
}

/// Completion removes every row it is given and no other, whoever holds them now: a
/// delivered event is delivered.
pub async fn complete_removes_its_rows_whoever_holds_them(f: &dyn OutboxFixture) {
    for n in 1..=3 {
        f.add_row(json!({ "n": n }), Duration::ZERO).await;
    }
    let lease = Duration::from_secs(10);
    let mut items = claim(f, "slow", 3, lease).await;
    assert_eq!(items.len(), 3);
    let kept = items.pop().unwrap();
    f.elapse(lease + Duration::from_secs(1)).await;
    let taken_over = claim(f, "w2", 3, LEASE).await;
    assert_eq!(taken_over.len(), 3);

    f.store().complete(&items).await.unwrap();
    for item in &items {
        assert_eq!(
            f.row(item.id).await,
            None,
            "completed by a worker whose lease ran out"
        );
    }
    let left = taken_over.iter().find(|item| item.id == kept.id).unwrap();
    assert_eq!(
        f.row(kept.id).await,
        Some(RowState::claimed(left)),
        "only the rows given"
    );

    f.store()
        .complete(std::slice::from_ref(left))
        .await
        .unwrap();
    assert_eq!(f.row(kept.id).await, None);
    assert_eq!(next_due_in(f).await, None, "the outbox is empty");
}

/// Release hands back only the leaving worker's rows, giving their attempts back, at once
/// rather than after the lease; its old claims then settle nothing.
pub async fn release_hands_back_only_its_workers_rows(f: &dyn OutboxFixture) {
    let first = f.add_row(json!({ "n": 1 }), Duration::ZERO).await;
    f.elapse(Duration::from_secs(1)).await;
    f.add_row(json!({ "n": 2 }), Duration::ZERO).await;
    f.add_row(json!({ "n": 3 }), Duration::ZERO).await;
    let leaving = claim_one(f, "leaving", LEASE).await;
    assert_eq!(leaving.id, first);
    let staying = claim_one(f, "staying", LEASE).await;

    assert_eq!(f.store().release("leaving").await.unwrap(), 1);
    assert_eq!(f.row(leaving.id).await, Some(RowState::free(0)));
    assert_eq!(
        f.row(staying.id).await,
        Some(RowState::claimed(&staying)),
        "another worker's claim stays"
    );

    settle_stale(f, &leaving).await;
    assert_eq!(
        f.row(leaving.id).await,
        Some(RowState::free(0)),
        "a released claim settles nothing"
    );

    let again = claim(f, "w3", 5, LEASE).await;
    assert_eq!(again.len(), 2, "the released row and the unclaimed one");
    let released = again.iter().find(|item| item.id == leaving.id).unwrap();
    assert_eq!(released.attempts, 1, "the released claim was not counted");
    assert!(again.iter().all(|item| item.id != staying.id));
    assert_eq!(f.store().release("nobody").await.unwrap(), 0);
}

/// `next_due_in` is `None` for an empty outbox, zero when a row is due, and otherwise the
/// wait for the earliest due time or lease end.
pub async fn next_due_in_reports_the_earliest_claimable_row(f: &dyn OutboxFixture) {
    assert_eq!(next_due_in(f).await, None, "empty outbox");
    f.add_row(json!({}), Duration::from_secs(20)).await;
    let wait = next_due_in(f).await;
    assert!(
        within(wait, Duration::from_secs(19), Duration::from_secs(20)),
        "{wait:?}"
    );
    f.add_row(json!({}), Duration::ZERO).await;
    assert_eq!(next_due_in(f).await, Some(Duration::ZERO));
    claim_one(f, "w", Duration::from_secs(10)).await;
    let wait = next_due_in(f).await;
    assert!(
        within(wait, Duration::from_secs(9), Duration::from_secs(10)),
        "a held row counts from its lease's end: {wait:?}"
    );
}

/// Generates one test per contract check in a module `outbox_store_contract`, each with a
/// fresh fixture: `attribute` is the test attribute, then the test function's parameters
/// and the block that builds the fixture from them.
///
/// ```ignore
/// picloud_testkit::outbox_store_contract!(
///     #[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
///     async fn(pool: PgPool) { Fixture::new(pool).await }
/// );
/// ```
#[macro_export]
macro_rules! outbox_store_contract {
    (#[$attribute:meta] async fn $params:tt $fixture:block) => {
        $crate::outbox_store_contract!(
            @tests [$attribute] $params $fixture
            a_claim_counts_its_attempt_and_names_its_worker
            claims_take_due_rows_oldest_first_up_to_the_limit
            a_held_row_is_claimed_again_only_after_its_lease
            a_claim_another_worker_took_over_settles_nothing
            an_earlier_claim_of_the_same_worker_settles_nothing
            retry_hands_the_row_back_after_the_delay
            defer_hands_the_row_back_without_spending_the_attempt
            give_up_removes_the_row
            complete_removes_its_rows_whoever_holds_them
            release_hands_back_only_its_workers_rows
            next_due_in_reports_the_earliest_claimable_row
        );
    };
    (@tests [$attribute:meta] $params:tt $fixture:block $($name:ident)*) => {
        mod outbox_store_contract {
            #[allow(unused_imports, reason = "the fixture's types come from the caller's module")]
            use super::*;
            $(
                #[$attribute]
                async fn $name $params {
                    let fixture = $fixture;
                    $crate::outbox::contract::$name(&fixture).await;
                }
            )*
        }
    };
}
