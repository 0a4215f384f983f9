//! The event core end to end against a fresh PostgreSQL database: outbox dispatchers
//! sharing one database, a crashed claimer, retries with backoff into dead letters and
//! their handlers, and KV changes made over HTTP running the triggers that match them.
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

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use picloud::database;
use picloud_manager_core::outbox::{OutboxEmitter, PgOutboxStore};
use picloud_manager_core::scripts::PgScriptRepository;
use picloud_manager_core::{CachedScriptResolver, DEFAULT_APP_ID, OutboxSignal, PgOutboxWaker};
use picloud_orchestrator_core::{Dispatcher, DispatcherConfig, DispatcherDeps, DispatcherHandle};
use picloud_shared::{
    ExecutionRecord, ExecutionRecorder, ExecutionReport, ExecutionRequest, ExecutorClient,
    OutboxStore, ScriptResponse,
};
use picloud_testkit::PHC;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{TestServer, eventually, fresh_database_url, spawn_app, spawn_app_with};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Dispatchers over the real outbox with a stand-in executor.
// ---------------------------------------------------------------------------------------

/// Runs nothing; remembers which outbox row each run was for (its request id).
#[derive(Default)]
struct CountingExecutor {
    runs: Mutex<Vec<String>>,
}

impl CountingExecutor {
    fn runs(&self) -> Vec<String> {
        self.runs.lock().unwrap().clone()
    }
}

#[async_trait]
impl ExecutorClient for CountingExecutor {
    async fn execute(&self, request: ExecutionRequest) -> ExecutionReport {
        // A little work, so that runs of both dispatchers overlap.
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.runs
            .lock()
            .unwrap()
            .push(request.request_id.as_str().to_owned());
        ExecutionReport {
            execution_id: request.execution_id,
            outcome: Ok(ScriptResponse {
                status: 200,
                headers: Vec::new(),
                body: Default::default(),
            }),
            logs: Vec::new(),
            duration: Duration::from_millis(1),
            started_at: chrono::Utc::now(),
        }
    }
}

struct NoRecords;

#[async_trait]
impl ExecutionRecorder for NoRecords {
    async fn record(&self, _: ExecutionRecord) {}
}

/// A fresh database with one user, one script and one `kv` trigger on it.
struct Outbox {
    pool: PgPool,
    trigger: Uuid,
    script: Uuid,
}

async fn outbox() -> Outbox {
    let pool = database::connect_and_migrate(&fresh_database_url(), 20)
        .await
        .expect("fresh test database");
    let user = Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, username, password_hash) VALUES ($1, 'ada', $2)")
        .bind(user)
        .bind(PHC)
        .execute(&pool)
        .await
        .unwrap();
    let script = Uuid::now_v7();
    sqlx::query("INSERT INTO scripts (id, app_id, name, source) VALUES ($1, $2, 'handler', '()')")
        .bind(script)
        .bind(DEFAULT_APP_ID.as_uuid())
        .execute(&pool)
        .await
        .unwrap();
    let trigger = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO triggers (id, app_id, kind, script_id, registered_by_principal,
                               max_attempts, backoff_base_ms, backoff_max_ms)
         VALUES ($1, $2, 'kv', $3, $4, 5, 1000, 300000)",
    )
    .bind(trigger)
    .bind(DEFAULT_APP_ID.as_uuid())
    .bind(script)
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    Outbox {
        pool,
        trigger,
        script,
    }
}

impl Outbox {
    /// Inserts `count` due rows directly, as the emitter would have.
    async fn insert(&self, count: i32) {
        sqlx::query(
            "INSERT INTO outbox (id, app_id, trigger_id, script_id, event, depth)
             SELECT gen_random_uuid(), $1, $2, $3, jsonb_build_object('n', n), 1
             FROM generate_series(1, $4) AS n",
        )
        .bind(DEFAULT_APP_ID.as_uuid())
        .bind(self.trigger)
        .bind(self.script)
        .bind(count)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    async fn remaining(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    fn dispatcher(&self, worker: &str, executor: Arc<CountingExecutor>) -> DispatcherHandle {
        Dispatcher::spawn(DispatcherDeps {
            store: Arc::new(store(&self.pool)),
            waker: Arc::new(PgOutboxWaker::spawn(
                self.pool.clone(),
                &OutboxSignal::spawn(self.pool.clone()),
            )),
            resolver: Arc::new(CachedScriptResolver::new(Arc::new(
                PgScriptRepository::new(self.pool.clone()),
            ))),
            executor,
            recorder: Arc::new(NoRecords),
            config: DispatcherConfig {
                worker_id: worker.to_owned(),
                max_in_flight: 8,
                lease: Duration::from_secs(60),
                max_run: Duration::from_secs(35),
            },
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_run_each_of_a_thousand_events_exactly_once() {
    let outbox = outbox().await;
    outbox.insert(1000).await;
    let (left, right) = (
        Arc::new(CountingExecutor::default()),
        Arc::new(CountingExecutor::default()),
    );
    let a = outbox.dispatcher("node-a", left.clone());
    let b = outbox.dispatcher("node-b", right.clone());

    eventually(Duration::from_secs(120), "the outbox to drain", || async {
        (outbox.remaining().await == 0).then_some(())
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;

    let (left, right) = (left.runs(), right.runs());
    let distinct: HashSet<&String> = left.iter().chain(&right).collect();
    assert_eq!(left.len() + right.len(), 1000, "no run was repeated");
    assert_eq!(distinct.len(), 1000, "no event was lost");
    assert!(
        !left.is_empty() && !right.is_empty(),
        "both dispatchers took part: {} and {}",
        left.len(),
        right.len()
    );
}

/// The outbox store as the binary builds it.
fn store(pool: &PgPool) -> PgOutboxStore {
    PgOutboxStore::new(
        pool.clone(),
        OutboxEmitter::new(8, OutboxSignal::spawn(pool.clone())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_claimed_by_a_crashed_dispatcher_runs_after_its_lease() {
    let outbox = outbox().await;
    outbox.insert(1).await;
    // A dispatcher that claims and dies before running anything.
    let lease = Duration::from_millis(1500);
    let claimed = store(&outbox.pool)
        .claim_due("crashed", 10, lease)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let claimed_at = Instant::now();

    let executor = Arc::new(CountingExecutor::default());
    let survivor = outbox.dispatcher("survivor", executor.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        executor.runs().is_empty(),
        "nobody runs a row while its lease holds"
    );

    eventually(
        Duration::from_secs(20),
        "the survivor to run it",
        || async { (outbox.remaining().await == 0).then_some(()) },
    )
    .await;
    assert!(claimed_at.elapsed() >= lease);
    survivor.shutdown().await;
    assert_eq!(executor.runs(), vec![claimed[0].id.to_string()]);
}

/// M13: two `picloud` processes on one database (writes go to both), leases as short as
/// the settings allow and runs that take a while: every event runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_picloud_processes_never_run_one_event_twice() {
    const EVENTS: usize = 60;
    let database_url = fresh_database_url();
    let settings = [
        ("PICLOUD_DATABASE_URL", database_url.as_str()),
        ("PICLOUD_ADMIN_PASSWORD", support::ADMIN_PASSWORD),
        ("PICLOUD_SANDBOX_TIMEOUT_MS", "1000"),
        ("PICLOUD_EXECUTION_QUEUE_TIMEOUT_MS", "500"),
        // 1 s + 0.5 s + the 6 s grace: the shortest lease the settings allow.
        ("PICLOUD_OUTBOX_LEASE_SECS", "8"),
        ("PICLOUD_MAX_CONCURRENT_EXECUTIONS", "4"),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = support::start_binary(dir_a.path(), &settings);
    let b = support::start_binary(dir_b.path(), &settings);
    let client = reqwest::Client::new();
    let session = a.login(&client, support::ADMIN_PASSWORD).await;
    let admin = |path: &str, body: Value| {
        client
            .post(format!("{}{path}", a.base))
            .bearer_auth(&session)
            .json(&body)
            .send()
    };
    let created = admin(
        "/api/admin/scripts",
        json!({ "app_id": DEFAULT_APP_ID, "name": "slow",
                "source": "sleep(0.05 + 0.2 * (ctx.event.value % 3)); ()" }),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let trigger = admin(
        "/api/admin/triggers",
        json!({ "app_id": DEFAULT_APP_ID, "script_name": "slow",
                "details": { "kind": "kv", "collection": "go" } }),
    )
    .await
    .unwrap();
    assert_eq!(trigger.status(), StatusCode::CREATED);
    for n in 0..EVENTS {
        let put = client
            .put(format!(
                "{}/api/admin/apps/{DEFAULT_APP_ID}/kv/go/k{n}",
                if n % 2 == 0 { &a.base } else { &b.base }
            ))
            .bearer_auth(&session)
            .json(&json!(n))
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success(), "{}", put.status());
    }

    let pool = database::connect_and_migrate(&database_url, 2)
        .await
        .unwrap();
    eventually(Duration::from_secs(120), "every event to run", || async {
        let runs: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM execution_logs WHERE invocation_type = 'trigger'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        (queued == 0 && runs >= i64::try_from(EVENTS).unwrap()).then_some(())
    })
    .await;
    // A moment for a late duplicate to show, then both stop and flush their records.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(a.terminate(), 0);
    assert_eq!(b.terminate(), 0);

    let per_event: Vec<(String, i64, bool)> = sqlx::query_as(
        "SELECT request_id, count(*), bool_and(status = 'success')
         FROM execution_logs WHERE invocation_type = 'trigger'
         GROUP BY request_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(per_event.len(), EVENTS, "every event ran");
    let twice: Vec<_> = per_event.iter().filter(|(_, runs, _)| *runs > 1).collect();
    assert!(twice.is_empty(), "events run more than once: {twice:?}");
    assert!(per_event.iter().all(|(_, _, ok)| *ok));
}

// ---------------------------------------------------------------------------------------
// The real server: scripts, triggers and KV over HTTP.
// ---------------------------------------------------------------------------------------

/// Admin calls the event tests make.
trait Admin {
    async fn post_json(&self, path: &str, body: Value) -> Value;
    async fn put_kv(&self, collection: &str, key: &str, value: Value);
    async fn get_kv(&self, collection: &str, key: &str) -> Option<Value>;
    async fn kv_trigger(&self, script: &str, collection: &str, retry: Value) -> Value;
}

impl Admin for TestServer {
    async fn post_json(&self, path: &str, body: Value) -> Value {
        let response = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    async fn put_kv(&self, collection: &str, key: &str, value: Value) {
        let response = self
            .client
            .put(self.url(&format!(
                "/api/admin/apps/{DEFAULT_APP_ID}/kv/{collection}/{key}"
            )))
            .json(&value)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "PUT {collection}/{key}: {}",
            response.status()
        );
    }

    async fn get_kv(&self, collection: &str, key: &str) -> Option<Value> {
        let response = self
            .client
            .get(self.url(&format!(
                "/api/admin/apps/{DEFAULT_APP_ID}/kv/{collection}/{key}"
            )))
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => Some(response.json().await.unwrap()),
            other => panic!("GET {collection}/{key}: {other}"),
        }
    }

    async fn kv_trigger(&self, script: &str, collection: &str, retry: Value) -> Value {
        let mut body = json!({
            "app_id": DEFAULT_APP_ID,
            "script_name": script,
            "details": { "kind": "kv", "collection": collection },
        });
        if !retry.is_null() {
            body["retry"] = retry;
        }
        self.post_json("/api/admin/triggers", body).await
    }
}

/// The trigger-caused runs of a script, oldest first: (status, error, started_at).
async fn triggered_runs(pool: &PgPool, script: &str) -> Vec<(String, Option<String>, f64)> {
    sqlx::query_as(
        "SELECT status, error, EXTRACT(EPOCH FROM started_at)::float8
         FROM execution_logs
         WHERE script_id = $1::uuid AND invocation_type = 'trigger'
         ORDER BY started_at",
    )
    .bind(script)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[derive(Debug, sqlx::FromRow)]
struct DeadLetter {
    trigger_id: Option<Uuid>,
    attempts: i32,
    last_error: String,
    resolution: Option<String>,
}

async fn dead_letters(pool: &PgPool) -> Vec<DeadLetter> {
    sqlx::query_as(
        "SELECT trigger_id, attempts, last_error, resolution FROM dead_letters ORDER BY failed_at",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn resolved_dead_letter(app: &TestServer) -> DeadLetter {
    eventually(
        Duration::from_secs(30),
        "the dead letter's resolution",
        || async {
            dead_letters(&app.pool)
                .await
                .into_iter()
                .find(|d| d.resolution.is_some())
        },
    )
    .await
}

/// A `kv` trigger on `orders` whose script always fails (three attempts, 200 ms base
/// delay), and a `dead_letter` trigger whose script is `handler_source`.
async fn failing_trigger_with_handler(app: &TestServer, handler_source: &str) -> String {
    let failing = app
        .create_script("failing", r#"throw "card declined""#)
        .await;
    app.create_script("handler", handler_source).await;
    app.kv_trigger(
        "failing",
        "orders",
        json!({ "max_attempts": 3, "base_delay_ms": 200, "max_delay_ms": 5000 }),
    )
    .await;
    app.post_json(
        "/api/admin/triggers",
        json!({
            "app_id": DEFAULT_APP_ID,
            "script_name": "handler",
            "details": { "kind": "dead_letter" },
        }),
    )
    .await;
    failing["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_failing_trigger_retries_with_growing_delays_then_a_handler_takes_the_dead_letter() {
    let app = spawn_app().await;
    let failing = failing_trigger_with_handler(
        &app,
        r#"log::info(`handled ${ctx.event.dead_letter_id}: ${ctx.event.last_error}`); ()"#,
    )
    .await;

    app.put_kv("orders", "o-1", json!({ "total": 12 })).await;
    let dead_letter = resolved_dead_letter(&app).await;
    assert_eq!(dead_letter.resolution.as_deref(), Some("handled_by_script"));
    assert_eq!(dead_letter.attempts, 3);
    assert!(dead_letter.trigger_id.is_some());
    assert!(
        dead_letter.last_error.contains("card declined"),
        "{}",
        dead_letter.last_error
    );

    let runs = eventually(
        Duration::from_secs(10),
        "three recorded attempts",
        || async {
            let runs = triggered_runs(&app.pool, &failing).await;
            (runs.len() == 3).then_some(runs)
        },
    )
    .await;
    assert!(runs.iter().all(|(status, error, _)| {
        status == "script_error"
            && error
                .as_deref()
                .is_some_and(|e| e.contains("card declined"))
    }));
    let first_gap = runs[1].2 - runs[0].2;
    let second_gap = runs[2].2 - runs[1].2;
    assert!(
        first_gap >= 0.16,
        "the first retry waited 200 ms ± 20%: {first_gap}"
    );
    assert!(
        second_gap >= 0.32,
        "the second retry waited 400 ms ± 20%: {second_gap}"
    );
    assert!(
        second_gap > first_gap,
        "the delays grow: {first_gap} then {second_gap}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failing_dead_letter_handler_leaves_the_dead_letter_handler_failed() {
    let app = spawn_app().await;
    failing_trigger_with_handler(&app, r#"throw "the handler broke too""#).await;

    app.put_kv("orders", "o-1", json!({ "total": 12 })).await;
    let dead_letter = resolved_dead_letter(&app).await;
    assert_eq!(dead_letter.resolution.as_deref(), Some("handler_failed"));
    assert!(dead_letter.last_error.contains("card declined"));
    assert_eq!(
        dead_letters(&app.pool).await.len(),
        1,
        "a failed handler makes no dead letter of its own"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_replayed_dead_letter_runs_its_trigger_again() {
    let app = spawn_app().await;
    app.create_script(
        "flaky",
        r#"
        let c = kv::collection("flags");
        if c.get("fixed") == () { throw "not yet" }
        kv::collection("done").set(ctx.event.key, true);
        "#,
    )
    .await;
    app.kv_trigger(
        "flaky",
        "orders",
        json!({ "max_attempts": 1, "base_delay_ms": 0, "max_delay_ms": 0 }),
    )
    .await;
    app.put_kv("orders", "o-7", json!(1)).await;
    let id: Uuid = eventually(Duration::from_secs(20), "a dead letter", || async {
        sqlx::query_scalar("SELECT id FROM dead_letters WHERE resolution IS NULL")
            .fetch_optional(&app.pool)
            .await
            .unwrap()
    })
    .await;

    app.put_kv("flags", "fixed", json!(true)).await;
    app.post_json(&format!("/api/admin/dead-letters/{id}/replay"), json!({}))
        .await;
    let done = eventually(Duration::from_secs(20), "the replayed run", || async {
        app.get_kv("done", "o-7").await
    })
    .await;
    assert_eq!(done, json!(true));
    let resolution: Option<String> =
        sqlx::query_scalar("SELECT resolution FROM dead_letters WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(resolution.as_deref(), Some("replayed"));
    app.stop().await;
}

#[tokio::test]
async fn a_kv_set_over_http_runs_the_matching_trigger_and_only_that_one() {
    let app = spawn_app().await;
    app.create_script(
        "writer",
        r#"kv::collection("users").set("ada", #{ age: 36 }); "written""#,
    )
    .await;
    app.create_script(
        "mark-users",
        r#"kv::collection("markers").set(ctx.event.key, #{
            collection: ctx.event.collection, op: ctx.event.op, value: ctx.event.value,
            depth: ctx.event.depth, invocation: ctx.invocation_type,
        });"#,
    )
    .await;
    let orders = app
        .create_script(
            "mark-orders",
            r#"kv::collection("markers").set("orders", true);"#,
        )
        .await;
    app.kv_trigger("mark-users", "users", Value::Null).await;
    app.kv_trigger("mark-orders", "orders:*", Value::Null).await;

    let response = app
        .client
        .get(app.url("/api/run/default/writer"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "written");

    let marker = eventually(Duration::from_secs(20), "the marker", || async {
        app.get_kv("markers", "ada").await
    })
    .await;
    assert_eq!(
        marker,
        json!({
            "collection": "users", "op": "set", "value": { "age": 36 },
            "depth": 1, "invocation": "trigger",
        })
    );
    // The matching trigger has run and settled; the other one never had a row.
    eventually(Duration::from_secs(10), "an empty outbox", || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        (rows == 0).then_some(())
    })
    .await;
    assert_eq!(app.get_kv("markers", "orders").await, None);
    assert!(
        triggered_runs(&app.pool, orders["id"].as_str().unwrap())
            .await
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn another_apps_triggers_never_see_this_apps_events() {
    let app = spawn_app().await;
    let other = app
        .post_json(
            "/api/admin/apps",
            json!({ "slug": "other", "name": "Other" }),
        )
        .await;
    let spy = app
        .post_json(
            "/api/admin/scripts",
            json!({
                "app_id": other["id"],
                "name": "spy",
                "source": r#"kv::collection("seen").set(ctx.event.key, true);"#,
            }),
        )
        .await;
    assert_eq!(spy["app_id"], other["id"]);
    app.post_json(
        "/api/admin/triggers",
        json!({
            "app_id": other["id"],
            "script_name": "spy",
            "details": { "kind": "kv", "collection": "*" },
        }),
    )
    .await;
    app.create_script(
        "mine",
        r#"kv::collection("seen").set(ctx.event.key, true);"#,
    )
    .await;
    app.kv_trigger("mine", "users", Value::Null).await;

    app.put_kv("users", "ada", json!(1)).await;
    eventually(Duration::from_secs(20), "this app's trigger", || async {
        app.get_kv("seen", "ada").await
    })
    .await;
    eventually(Duration::from_secs(10), "an empty outbox", || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        (rows == 0).then_some(())
    })
    .await;
    assert!(
        triggered_runs(&app.pool, spy["id"].as_str().unwrap())
            .await
            .is_empty(),
        "the other app's trigger never ran"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_self_triggering_script_stops_at_the_depth_limit_with_a_dead_letter() {
    let app = spawn_app_with(&[("PICLOUD_MAX_TRIGGER_DEPTH", "3")]).await;
    let looping = app
        .create_script(
            "loop",
            r#"kv::collection("counter").set("n", ctx.event.value + 1);"#,
        )
        .await;
    app.kv_trigger("loop", "counter", Value::Null).await;

    app.put_kv("counter", "n", json!(1)).await;
    let dead_letter = eventually(Duration::from_secs(30), "the depth refusal", || async {
        dead_letters(&app.pool).await.into_iter().next()
    })
    .await;
    assert_eq!(dead_letter.trigger_id, None);
    assert_eq!(dead_letter.last_error, "trigger depth limit of 3 reached");
    assert_eq!(
        dead_letter.resolution, None,
        "unresolved: the badge shows it"
    );

    // Depths 1, 2 and 3 ran; the change made at depth 3 committed but triggered nothing.
    // Once the outbox is empty no run is pending and none can start.
    eventually(Duration::from_secs(10), "an empty outbox", || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        (rows == 0).then_some(())
    })
    .await;
    assert_eq!(app.get_kv("counter", "n").await, Some(json!(4)));
    let badge: Value = app
        .client
        .get(app.url(&format!(
            "/api/admin/apps/{DEFAULT_APP_ID}/dead-letters/count"
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(badge["unresolved"], 1, "{badge}");
    // Stopping writes every record still queued, so the count is final.
    let pool = app.stop().await;
    let runs = triggered_runs(&pool, looping["id"].as_str().unwrap()).await;
    assert_eq!(runs.len(), 3, "{runs:?}");
}

#[tokio::test]
async fn a_triggered_run_acts_as_its_registering_user_with_their_current_roles() {
    let app = spawn_app().await;
    let bob = app
        .post_json(
            "/api/admin/users",
            json!({ "username": "bob", "password": "bob-password-1" }),
        )
        .await;
    let bob_id = bob["id"].as_str().unwrap().to_owned();
    let members = app.url(&format!(
        "/api/admin/apps/{DEFAULT_APP_ID}/members/{bob_id}"
    ));
    let set_role = |role: &'static str| {
        let request = app.client.put(&members).json(&json!({ "role": role }));
        async move {
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
        }
    };
    set_role("developer").await;
    let session = support::login(&app.anonymous, &app.base, "bob", "bob-password-1").await;
    app.create_script(
        "copy",
        r#"kv::collection("copies").set(ctx.event.key, ctx.event.value);"#,
    )
    .await;
    let created = app
        .anonymous
        .post(app.url("/api/admin/triggers"))
        .bearer_auth(&session)
        .json(&json!({
            "app_id": DEFAULT_APP_ID,
            "script_name": "copy",
            "details": { "kind": "kv", "collection": "notes" },
            "retry": { "max_attempts": 1, "base_delay_ms": 0, "max_delay_ms": 0 },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    // As a developer, bob's trigger may write.
    app.put_kv("notes", "n-1", json!("first")).await;
    let copied = eventually(Duration::from_secs(20), "the copy", || async {
        app.get_kv("copies", "n-1").await
    })
    .await;
    assert_eq!(copied, json!("first"));

    // Demoted to viewer, his trigger's writes are refused, and the failure is visible.
    set_role("viewer").await;
    app.put_kv("notes", "n-2", json!("second")).await;
    let dead_letter = eventually(Duration::from_secs(20), "the refusal", || async {
        dead_letters(&app.pool).await.into_iter().next()
    })
    .await;
    assert!(
        dead_letter.last_error.contains("permission denied")
            && dead_letter.last_error.contains("bob"),
        "{}",
        dead_letter.last_error
    );
    assert_eq!(app.get_kv("copies", "n-2").await, None);

    // Removed from the app, his trigger can do nothing there at all.
    let removed = app.client.delete(&members).send().await.unwrap();
    assert!(removed.status().is_success(), "{}", removed.status());
    app.put_kv("notes", "n-3", json!("third")).await;
    eventually(Duration::from_secs(20), "the second refusal", || async {
        (dead_letters(&app.pool).await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(app.get_kv("copies", "n-3").await, None);
    app.stop().await;
}
