//! The batching execution recorder against PostgreSQL: records reach the table without
//! anyone waiting on the database, and a graceful shutdown loses nothing.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions fail loudly on the first surprise too"
)]

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use picloud_manager_core::executions::PgExecutionLogRepository;
use picloud_manager_core::{BatchingExecutionRecorder, DEFAULT_APP_ID, ExecutionLogRepository};
use picloud_shared::{ExecutionRecorder, ScriptId};
use sqlx::PgPool;

use common::{now, record};

async fn stored(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM execution_logs")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_recorded_run_appears_in_the_table(pool: PgPool) {
    let repo = Arc::new(PgExecutionLogRepository::new(pool.clone()));
    let (recorder, handle) = BatchingExecutionRecorder::spawn(repo.clone());
    let run = record(ScriptId::new(), DEFAULT_APP_ID, now());
    recorder.record(run.clone()).await;

    // Without shutting down: the writer picks the record up on its own.
    let appeared = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(found) = repo.get(run.id).await.unwrap() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the record never reached the table");
    assert_eq!(appeared, run);
    handle.shutdown().await;
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn shutdown_flushes_every_queued_record(pool: PgPool) {
    let repo = Arc::new(PgExecutionLogRepository::new(pool.clone()));
    let (recorder, handle) = BatchingExecutionRecorder::spawn(repo);
    let script = ScriptId::new();
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let recorder = recorder.clone();
            tokio::spawn(async move {
                for _ in 0..250 {
                    recorder.record(record(script, DEFAULT_APP_ID, now())).await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    handle.shutdown().await;
    assert_eq!(stored(&pool).await, 1000);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_run_whose_logs_and_error_hold_nul_is_recorded_with_its_batch(pool: PgPool) {
    // A script can log and throw any string; PostgreSQL cannot store NUL. One such run must
    // not cost its batch: the text is stored with U+FFFD in place of each NUL.
    let repo = PgExecutionLogRepository::new(pool.clone());
    let script = ScriptId::new();
    let mut hostile = record(script, DEFAULT_APP_ID, now());
    hostile.logs[0].message = "log\0line".to_owned();
    hostile.error = Some("thrown\0text".to_owned());
    let neighbour = record(script, DEFAULT_APP_ID, now());
    let written = repo
        .insert_batch(&[hostile.clone(), neighbour.clone()])
        .await
        .unwrap();
    assert_eq!(written, 2);

    let stored = repo.get(hostile.id).await.unwrap().unwrap();
    assert_eq!(stored.logs[0].message, "log\u{FFFD}line");
    assert_eq!(stored.error.as_deref(), Some("thrown\u{FFFD}text"));
    assert_eq!(repo.get(neighbour.id).await.unwrap(), Some(neighbour));
}
