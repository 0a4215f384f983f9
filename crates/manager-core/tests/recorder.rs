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
