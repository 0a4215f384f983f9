//! KV that cannot lose updates, end to end against the real server and PostgreSQL: many
//! concurrent runs counting with `incr` and with a check-and-set retry loop lose nothing,
//! and a triggered run that records its event's id in an atomic batch counts once however
//! often the event is delivered (retries, then a replay of the dead letter).
#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]
#![expect(
    clippy::expect_used,
    reason = "a test fails loudly on the first surprise"
)]

#[allow(
    dead_code,
    reason = "each test target uses its own part of the support module"
)]
mod support;

use std::time::Duration;

use picloud_manager_core::DEFAULT_APP_ID;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestServer, eventually, spawn_app_with};
use tokio::task::JoinSet;
use uuid::Uuid;

/// Concurrent runs of a counting script.
const RUNS: u64 = 64;
/// Increments each run makes.
const INCREMENTS: u64 = 200;

/// A server that queues every one of [`RUNS`] concurrent requests rather than refusing
/// any as overloaded: `at_once` run at once (so they race each other on one key), the
/// rest wait for a slot. The contended check-and-set runs may take long in a debug build,
/// so runs and queue waits get generous limits (and the outbox lease the longer one that
/// asks).
async fn counting_server(at_once: &str) -> TestServer {
    spawn_app_with(&[
        ("PICLOUD_MAX_CONCURRENT_EXECUTIONS", at_once),
        ("PICLOUD_EXECUTION_QUEUE_TIMEOUT_MS", "240000"),
        ("PICLOUD_SANDBOX_TIMEOUT_MS", "240000"),
        ("PICLOUD_OUTBOX_LEASE_SECS", "600"),
    ])
    .await
}

/// Calls the script `id` [`RUNS`] times at once, half by `POST`, half by `GET`, and
/// asserts every call answered 200.
async fn run_concurrently(app: &TestServer, id: &str) {
    let url = app.url(&format!("/api/execute/{id}"));
    let mut calls = JoinSet::new();
    for n in 0..RUNS {
        let client = app.client.clone();
        let url = url.clone();
        calls.spawn(async move {
            let request = if n % 2 == 0 {
                client.post(&url).body("")
            } else {
                client.get(&url)
            };
            let response = request.send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        });
    }
    let mut answered = 0;
    while let Some(call) = calls.join_next().await {
        let (status, body) = call.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        answered += 1;
    }
    assert_eq!(answered, RUNS);
}

/// A key's value and version (its `ETag`) through the admin KV API; `None` when absent.
async fn read_kv(app: &TestServer, collection: &str, key: &str) -> Option<(Value, i64)> {
    let response = app
        .client
        .get(app.url(&format!(
            "/api/admin/apps/{DEFAULT_APP_ID}/kv/{collection}/{key}"
        )))
        .send()
        .await
        .unwrap();
    match response.status() {
        StatusCode::NOT_FOUND => None,
        StatusCode::OK => {
            let tag = response.headers()["etag"].to_str().unwrap().to_owned();
            let version = tag.trim_matches('"').parse().unwrap();
            Some((response.json().await.unwrap(), version))
        }
        other => panic!("GET {collection}/{key}: {other}"),
    }
}

/// The keys of a collection through the admin KV API (one page is enough here).
async fn keys(app: &TestServer, collection: &str) -> Vec<String> {
    let page: Value = app
        .client
        .get(app.url(&format!("/api/admin/apps/{DEFAULT_APP_ID}/kv/{collection}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(page.get("next_cursor").is_none(), "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["key"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_runs_counting_with_incr_lose_no_update() {
    let app = counting_server("16").await;
    let script = app
        .create_script(
            "count-visits",
            r#"let c = kv::collection("visits"); for i in 0..200 { c.incr("total"); } ()"#,
        )
        .await;
    run_concurrently(&app, script["id"].as_str().unwrap()).await;

    let (total, version) = read_kv(&app, "visits", "total").await.unwrap();
    assert_eq!(total, json!(RUNS * INCREMENTS));
    assert!(
        version >= i64::try_from(RUNS * INCREMENTS).unwrap(),
        "every increment is a write with a new version: {version}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_runs_counting_with_check_and_set_lose_no_update() {
    // Fewer at once than for `incr`: every lost race costs two more round trips, and 16
    // runs on one key lose about ten races per win (8 lose about five), which takes
    // minutes in a debug build.
    let app = counting_server("8").await;
    // A read-modify-write that retries until its write wins; `losses` counts the races
    // lost, to show that the runs did race.
    let script = app
        .create_script(
            "count-visits-cas",
            r#"
            let c = kv::collection("visits");
            let losses = 0;
            for i in 0..200 {
                loop {
                    let e = c.get_entry("total");
                    let won = if e == () {
                        c.set("total", 1, #{ if_absent: true })
                    } else {
                        c.set("total", e.value + 1, #{ if_version: e.version })
                    };
                    if won { break; }
                    losses += 1;
                }
            }
            kv::collection("losses").incr("total", losses);
            ()
            "#,
        )
        .await;
    run_concurrently(&app, script["id"].as_str().unwrap()).await;

    let (total, _) = read_kv(&app, "visits", "total").await.unwrap();
    assert_eq!(total, json!(RUNS * INCREMENTS));
    let (losses, _) = read_kv(&app, "losses", "total").await.unwrap();
    assert!(
        losses.as_u64().unwrap() > 0,
        "8 runs at once on one key never lost a race: the test raced nothing"
    );
    app.stop().await;
}

#[derive(Debug, sqlx::FromRow)]
struct DeadLetter {
    id: Uuid,
    event: Value,
    attempts: i32,
    resolution: Option<String>,
}

async fn dead_letters(app: &TestServer) -> Vec<DeadLetter> {
    sqlx::query_as("SELECT id, event, attempts, resolution FROM dead_letters ORDER BY failed_at")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// What each recorded triggered run of `script` logged, oldest run first.
async fn triggered_logs(app: &TestServer, script: &str) -> Vec<Vec<String>> {
    let logs: Vec<Value> = sqlx::query_scalar(
        "SELECT logs FROM execution_logs
         WHERE script_id = $1::uuid AND invocation_type = 'trigger'
         ORDER BY started_at",
    )
    .bind(script)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    logs.iter()
        .map(|run| {
            run.as_array()
                .unwrap()
                .iter()
                .map(|entry| entry["message"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

/// Waits until `script` has `count` recorded triggered runs, and returns their logs.
async fn wait_for_runs(app: &TestServer, script: &str, count: usize) -> Vec<Vec<String>> {
    eventually(Duration::from_secs(30), "the triggered runs", || async {
        let runs = triggered_logs(app, script).await;
        assert!(runs.len() <= count, "more runs than expected: {runs:?}");
        (runs.len() == count).then_some(runs)
    })
    .await
}

#[tokio::test]
async fn a_triggered_run_counts_once_per_event_however_often_it_is_delivered() {
    let app = spawn_app_with(&[]).await;
    // Counts the order and records the event's id in one atomic batch, then fails, so
    // the same delivery comes again: every later attempt finds the id recorded.
    let script = app
        .create_script(
            "count-orders",
            r#"
            let seen = kv::collection("seen");
            let done = kv::atomic()
                .check(seen, ctx.event.id, ())
                .set(seen, ctx.event.id, true)
                .incr(kv::collection("counts"), "orders", 1)
                .commit();
            log::info(`${ctx.event.id} ${done}`);
            throw "fail after counting";
            "#,
        )
        .await;
    let script = script["id"].as_str().unwrap().to_owned();
    let trigger = app
        .client
        .post(app.url("/api/admin/triggers"))
        .json(&json!({
            "app_id": DEFAULT_APP_ID,
            "script_name": "count-orders",
            "details": { "kind": "kv", "collection": "orders" },
            "retry": { "max_attempts": 3, "base_delay_ms": 100, "max_delay_ms": 400 },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(trigger.status(), StatusCode::CREATED);
    let put = app
        .client
        .put(app.url(&format!("/api/admin/apps/{DEFAULT_APP_ID}/kv/orders/o-1")))
        .json(&json!({ "total": 12 }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::NO_CONTENT);

    // Three attempts, then a dead letter.
    let dead = eventually(Duration::from_secs(30), "a dead letter", || async {
        dead_letters(&app).await.into_iter().next()
    })
    .await;
    assert_eq!(dead.attempts, 3);
    let event_id = dead.event["id"].as_str().unwrap().to_owned();
    let runs = wait_for_runs(&app, &script, 3).await;
    assert_eq!(
        runs,
        [
            vec![format!("{event_id} true")],
            vec![format!("{event_id} false")],
            vec![format!("{event_id} false")],
        ],
        "every attempt saw the same event id; only the first committed"
    );
    assert_eq!(read_kv(&app, "counts", "orders").await.unwrap().0, json!(1));
    assert_eq!(keys(&app, "seen").await, std::slice::from_ref(&event_id));

    // A replay delivers the same event again (three more attempts, a new dead letter).
    let replay = app
        .client
        .post(app.url(&format!("/api/admin/dead-letters/{}/replay", dead.id)))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::OK);
    let again = eventually(
        Duration::from_secs(30),
        "the replay's dead letter",
        || async {
            dead_letters(&app)
                .await
                .into_iter()
                .find(|d| d.id != dead.id && d.resolution.is_none())
        },
    )
    .await;
    assert_eq!(again.attempts, 3);
    assert_eq!(again.event["id"], dead.event["id"]);
    let runs = wait_for_runs(&app, &script, 6).await;
    assert!(
        runs[3..]
            .iter()
            .all(|logs| logs == &[format!("{event_id} false")]),
        "{runs:?}"
    );
    assert_eq!(read_kv(&app, "counts", "orders").await.unwrap().0, json!(1));
    assert_eq!(keys(&app, "seen").await, [event_id]);
    let replayed: Option<String> =
        sqlx::query_scalar("SELECT resolution FROM dead_letters WHERE id = $1")
            .bind(dead.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(replayed.as_deref(), Some("replayed"));
    app.stop().await;
}
