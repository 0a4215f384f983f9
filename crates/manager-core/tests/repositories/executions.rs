//! The `ExecutionLogRepository` suite.

use chrono::TimeDelta;
use picloud_manager_core::{DEFAULT_APP_ID, ExecutionCursor};
use picloud_shared::{ExecutionId, ExecutionRecord, ScriptId};

use crate::Repos;
use crate::common::{failed_record, now, record};

fn ids(records: &[ExecutionRecord]) -> Vec<ExecutionId> {
    records.iter().map(|r| r.id).collect()
}

pub async fn inserted_records_read_back_unchanged(repos: Repos) {
    let script = ScriptId::new();
    let ok = record(script, DEFAULT_APP_ID, now());
    let failed = failed_record(script, DEFAULT_APP_ID, now());
    let written = repos
        .executions
        .insert_batch(&[ok.clone(), failed.clone()])
        .await
        .unwrap();
    assert_eq!(written, 2);
    assert_eq!(repos.executions.get(ok.id).await.unwrap(), Some(ok));
    assert_eq!(repos.executions.get(failed.id).await.unwrap(), Some(failed));
    assert_eq!(
        repos.executions.get(ExecutionId::new()).await.unwrap(),
        None
    );
}

pub async fn insert_batch_is_idempotent_on_the_record_id(repos: Repos) {
    let script = ScriptId::new();
    let batch: Vec<_> = (0..3)
        .map(|_| record(script, DEFAULT_APP_ID, now()))
        .collect();
    assert_eq!(repos.executions.insert_batch(&batch).await.unwrap(), 3);
    // A retried batch that partly landed: only the new record is written.
    let mut retried = batch.clone();
    retried.push(record(script, DEFAULT_APP_ID, now()));
    assert_eq!(repos.executions.insert_batch(&retried).await.unwrap(), 1);

    let listed = repos
        .executions
        .list_for_script(script, 100, None)
        .await
        .unwrap();
    assert_eq!(listed.len(), 4);
}

pub async fn an_empty_batch_writes_nothing(repos: Repos) {
    assert_eq!(repos.executions.insert_batch(&[]).await.unwrap(), 0);
}

pub async fn runs_are_listed_newest_first_and_paged_by_cursor(repos: Repos) {
    let script = ScriptId::new();
    let base = now();
    let oldest = record(script, DEFAULT_APP_ID, base - TimeDelta::seconds(30));
    let middle = record(script, DEFAULT_APP_ID, base - TimeDelta::seconds(20));
    // Two runs that started at the same instant: the larger id counts as newer.
    let mut tied: Vec<_> = (0..2)
        .map(|_| record(script, DEFAULT_APP_ID, base))
        .collect();
    tied.sort_by_key(|r| r.id);
    let newest = record(script, DEFAULT_APP_ID, base + TimeDelta::seconds(10));
    let elsewhere = record(ScriptId::new(), DEFAULT_APP_ID, base);
    repos
        .executions
        .insert_batch(&[
            middle.clone(),
            tied[0].clone(),
            newest.clone(),
            elsewhere,
            oldest.clone(),
            tied[1].clone(),
        ])
        .await
        .unwrap();

    let all = repos
        .executions
        .list_for_script(script, 50, None)
        .await
        .unwrap();
    assert_eq!(
        ids(&all),
        [newest.id, tied[1].id, tied[0].id, middle.id, oldest.id]
    );

    let first = repos
        .executions
        .list_for_script(script, 2, None)
        .await
        .unwrap();
    assert_eq!(ids(&first), [newest.id, tied[1].id]);
    let cursor = ExecutionCursor::from(first.last().unwrap());
    let second = repos
        .executions
        .list_for_script(script, 2, Some(cursor))
        .await
        .unwrap();
    assert_eq!(ids(&second), [tied[0].id, middle.id]);
    let cursor = ExecutionCursor::from(second.last().unwrap());
    let third = repos
        .executions
        .list_for_script(script, 2, Some(cursor))
        .await
        .unwrap();
    assert_eq!(ids(&third), [oldest.id]);
}

pub async fn prune_deletes_only_runs_before_the_cutoff(repos: Repos) {
    let script = ScriptId::new();
    let cutoff = now() - TimeDelta::days(7);
    let old = record(script, DEFAULT_APP_ID, cutoff - TimeDelta::seconds(1));
    let older = record(script, DEFAULT_APP_ID, cutoff - TimeDelta::days(30));
    let at_cutoff = record(script, DEFAULT_APP_ID, cutoff);
    let recent = record(script, DEFAULT_APP_ID, now());
    repos
        .executions
        .insert_batch(&[
            old.clone(),
            older.clone(),
            at_cutoff.clone(),
            recent.clone(),
        ])
        .await
        .unwrap();

    assert_eq!(repos.executions.prune_older_than(cutoff).await.unwrap(), 2);
    assert_eq!(repos.executions.get(old.id).await.unwrap(), None);
    assert_eq!(repos.executions.get(older.id).await.unwrap(), None);
    let left = repos
        .executions
        .list_for_script(script, 50, None)
        .await
        .unwrap();
    assert_eq!(ids(&left), [recent.id, at_cutoff.id]);
    assert_eq!(repos.executions.prune_older_than(cutoff).await.unwrap(), 0);
}
