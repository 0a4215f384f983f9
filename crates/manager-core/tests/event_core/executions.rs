//! Execution records of triggered runs.

use picloud_shared::{ExecutionRecord, InvocationType, ScriptId, TriggerId};

use crate::Repos;
use crate::common::{now, record};

pub async fn a_triggered_run_reads_back_with_its_trigger(repos: Repos) {
    let app = repos.add_app("shop").await;
    let trigger = TriggerId::new();
    let triggered = ExecutionRecord {
        invocation_type: InvocationType::Trigger,
        trigger_id: Some(trigger),
        http_status: None,
        ..record(ScriptId::new(), app, now())
    };
    let http = record(ScriptId::new(), app, now());
    repos
        .executions
        .insert_batch(&[triggered.clone(), http.clone()])
        .await
        .unwrap();
    let read = repos.executions.get(triggered.id).await.unwrap().unwrap();
    assert_eq!(read.invocation_type, InvocationType::Trigger);
    assert_eq!(read.trigger_id, Some(trigger));
    assert_eq!(read, triggered);
    assert_eq!(repos.executions.get(http.id).await.unwrap(), Some(http));
}
