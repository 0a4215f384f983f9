//! Reading execution records through the API.

use axum::http::StatusCode;
use chrono::TimeDelta;
use picloud_manager_core::executions::PgExecutionLogRepository;
use picloud_manager_core::{DEFAULT_APP_ID, ExecutionLogRepository};
use picloud_shared::{ExecutionId, ScriptId};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::{failed_record, now, record};
use crate::{TestApp, script_id};

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_scripts_runs_are_listed_newest_first_page_by_page(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    let id = script_id(&app.create("busy", "1").await);
    let base = now();
    let runs: Vec<_> = (0..5)
        .map(|i| record(id, DEFAULT_APP_ID, base - TimeDelta::seconds(i)))
        .collect();
    let elsewhere = record(ScriptId::new(), DEFAULT_APP_ID, base);
    let repo = PgExecutionLogRepository::new(pool);
    let mut batch = runs.clone();
    batch.push(elsewhere);
    repo.insert_batch(&batch).await.unwrap();
    let expected: Vec<String> = runs.iter().map(|r| r.id.to_string()).collect();

    let uri = format!("/api/admin/scripts/{id}/executions");
    let first = app.get(&format!("{uri}?limit=2")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(ids(&first.body), expected[..2]);
    assert!(first.body["next_cursor"].is_string(), "{}", first.body);
    let item = &first.body["items"][0];
    assert_eq!(item["script_id"], id.to_string());
    assert_eq!(item["status"], "success");
    assert_eq!(item["http_status"], 200);
    assert_eq!(item["invocation_type"], "http");
    assert_eq!(item["logs"][0]["level"], "info");
    assert_eq!(item["logs"][0]["message"], "hello from the script");

    let next = first.body["next_cursor"].as_str().unwrap();
    let second = app.get(&format!("{uri}?limit=2&cursor={next}")).await;
    assert_eq!(ids(&second.body), expected[2..4]);
    let next = second.body["next_cursor"].as_str().unwrap();
    let last = app.get(&format!("{uri}?limit=2&cursor={next}")).await;
    assert_eq!(ids(&last.body), expected[4..]);
    assert!(last.body.get("next_cursor").is_none(), "{}", last.body);

    let all = app.get(&uri).await;
    assert_eq!(ids(&all.body), expected);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn listing_runs_of_a_missing_script_is_404(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let reply = app
        .get(&format!(
            "/api/admin/scripts/{}/executions",
            ScriptId::new()
        ))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_cursor_this_list_did_not_hand_out_is_400(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    let id = script_id(&app.create("mine", "1").await);
    // An execution id is not a cursor; nor is anything that does not decode to one.
    for cursor in [
        ExecutionId::new().to_string(),
        "e30".to_owned(),
        "%%".to_owned(),
    ] {
        let reply = app
            .get(&format!(
                "/api/admin/scripts/{id}/executions?cursor={cursor}"
            ))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        assert_eq!(reply.code(), "invalid_query");
    }
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn one_run_is_read_by_id(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    let run = failed_record(ScriptId::new(), DEFAULT_APP_ID, now());
    PgExecutionLogRepository::new(pool)
        .insert_batch(std::slice::from_ref(&run))
        .await
        .unwrap();

    let reply = app.get(&format!("/api/admin/executions/{}", run.id)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, serde_json::to_value(&run).unwrap());
    assert_eq!(reply.body["status"], "script_error");
    assert_eq!(reply.body["http_status"], json!(null));
    assert_eq!(
        reply.body["error"],
        "variable not found: x (line 1, position 1)"
    );

    let missing = ExecutionId::new();
    let reply = app.get(&format!("/api/admin/executions/{missing}")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");
    assert_eq!(reply.message(), format!("execution {missing} not found"));
}
