//! Pruning abandoned synchronous results: one suite, run against the in-memory repository
//! and against PostgreSQL (a fresh database per test from `DATABASE_URL`).
#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use picloud_manager_core::dead_letters::{
    AbandonedExecutionRepository, InMemoryAbandonedExecutionRepository,
    PgAbandonedExecutionRepository,
};
use sqlx::PgPool;
use uuid::Uuid;

/// The start of the current second: a time both backends store exactly, so the suite can
/// prune at a row's own time.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// When the suite's results were abandoned: a week, a day, an hour and a minute ago.
fn abandoned_at(now: DateTime<Utc>) -> [DateTime<Utc>; 4] {
    [
        now - TimeDelta::days(7),
        now - TimeDelta::days(1),
        now - TimeDelta::hours(1),
        now - TimeDelta::minutes(1),
    ]
}

/// Runs against a repository holding the results of [`abandoned_at`]`(now)`.
async fn prunes_exactly_what_was_abandoned_before_the_cutoff(
    repo: &dyn AbandonedExecutionRepository,
    now: DateTime<Utc>,
) {
    assert_eq!(
        repo.prune_before(now - TimeDelta::days(2)).await.unwrap(),
        1,
        "the week-old result goes"
    );
    assert_eq!(
        repo.prune_before(now - TimeDelta::days(2)).await.unwrap(),
        0,
        "pruning again finds nothing"
    );
    assert_eq!(
        repo.prune_before(now - TimeDelta::minutes(30))
            .await
            .unwrap(),
        2,
        "the day- and hour-old results go"
    );
    assert_eq!(
        repo.prune_before(now - TimeDelta::minutes(1))
            .await
            .unwrap(),
        0,
        "one abandoned exactly at the cutoff stays"
    );
    assert_eq!(
        repo.prune_before(now + TimeDelta::days(1)).await.unwrap(),
        1,
        "the newest was kept until now"
    );
}

#[tokio::test]
async fn in_memory_pruning_deletes_only_results_older_than_the_cutoff() {
    let now = now();
    let repo = InMemoryAbandonedExecutionRepository::new();
    for at in abandoned_at(now) {
        repo.add(at);
    }
    prunes_exactly_what_was_abandoned_before_the_cutoff(&repo, now).await;
    assert!(repo.is_empty());
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn postgres_pruning_deletes_only_results_older_than_the_cutoff(pool: PgPool) {
    let now = now();
    for at in abandoned_at(now) {
        sqlx::query(
            "INSERT INTO abandoned_executions (id, app_id, script_id, reply_to, result, abandoned_at)
             VALUES ($1, $2, $3, $4, '{}'::jsonb, $5)",
        )
        .bind(Uuid::new_v4())
        .bind(Uuid::new_v4())
        .bind(Uuid::new_v4())
        .bind(Uuid::new_v4())
        .bind(at)
        .execute(&pool)
        .await
        .unwrap();
    }
    let repo = PgAbandonedExecutionRepository::new(pool.clone());
    prunes_exactly_what_was_abandoned_before_the_cutoff(&repo, now).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM abandoned_executions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
