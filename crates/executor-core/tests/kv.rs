//! The `kv` SDK module over the manager's in-memory `KvService` (a dev-dependency only:
//! the manager never depends on the executor): the script's view of get, set, delete and
//! list, of versions, check-and-set, counters and atomic batches, its thrown errors, and
//! the context every call carries.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

mod common;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::*;
use picloud_executor_core::{ExecutorConfig, LocalExecutorClient};
use picloud_manager_core::kv::InMemoryKvService;
use picloud_manager_core::outbox::RecordingEmitter;
use picloud_shared::{
    AppId, AppRole, CollectionInfo, CollectionName, EventSubject, ExecutionError, ExecutionReport,
    ExecutorClient, InvocationType, KvAtomic, KvCondition, KvIncrement, KvKey, KvListOptions,
    KvPage, KvService, KvVersioned, Scope, Script, ScriptLimits, ServiceContext, ServiceError,
    ServiceSet, TriggerId, TriggeredBy,
};
use picloud_testkit::services::principal;
use serde_json::{Value, json};
use support::{as_app, assert_uncaught, client_with_services, run_as_viewer, run_script, thrown};

/// The manager's in-memory KV service, and the events its changes emit.
fn kv() -> (Arc<InMemoryKvService>, Arc<RecordingEmitter>) {
    let events = Arc::new(RecordingEmitter::default());
    (Arc::new(InMemoryKvService::new(events.clone())), events)
}

/// A KV service that remembers the context of every call and takes `delay` over each,
/// around the in-memory one: what the context and deadline tests look at. Its first
/// `rivals` conditional sets lose a race: another writer increments the key just before.
struct Observed {
    inner: Arc<InMemoryKvService>,
    contexts: Mutex<Vec<ServiceContext>>,
    delay: Duration,
    rivals: AtomicUsize,
}

impl Observed {
    fn new(inner: Arc<InMemoryKvService>, delay: Duration) -> Self {
        Self {
            inner,
            contexts: Mutex::new(Vec::new()),
            delay,
            rivals: AtomicUsize::new(0),
        }
    }

    async fn enter(&self, ctx: &ServiceContext) {
        self.contexts.lock().unwrap().push(ctx.clone());
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }
}

#[async_trait]
impl KvService for Observed {
    async fn get(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
    ) -> Result<Option<Value>, ServiceError> {
        self.enter(ctx).await;
        self.inner.get(ctx, collection, key).await
    }

    async fn get_entry(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
    ) -> Result<Option<KvVersioned>, ServiceError> {
        self.enter(ctx).await;
        self.inner.get_entry(ctx, collection, key).await
    }

    async fn set(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
        value: Value,
    ) -> Result<i64, ServiceError> {
        self.enter(ctx).await;
        self.inner.set(ctx, collection, key, value).await
    }

    async fn set_if(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
        value: Value,
        condition: KvCondition,
    ) -> Result<Option<i64>, ServiceError> {
        self.enter(ctx).await;
        let rival = self
            .rivals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if rival {
            let by = KvIncrement::Int(1);
            self.inner.incr(ctx, collection, key, by).await?;
        }
        self.inner
            .set_if(ctx, collection, key, value, condition)
            .await
    }

    async fn incr(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
        by: KvIncrement,
    ) -> Result<KvVersioned, ServiceError> {
        self.enter(ctx).await;
        self.inner.incr(ctx, collection, key, by).await
    }

    async fn commit(&self, ctx: &ServiceContext, batch: KvAtomic) -> Result<bool, ServiceError> {
        self.enter(ctx).await;
        self.inner.commit(ctx, batch).await
    }

    async fn delete(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
    ) -> Result<bool, ServiceError> {
        self.enter(ctx).await;
        self.inner.delete(ctx, collection, key).await
    }

    async fn list(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        options: KvListOptions,
    ) -> Result<KvPage, ServiceError> {
        self.enter(ctx).await;
        self.inner.list(ctx, collection, options).await
    }

    async fn collections(&self, ctx: &ServiceContext) -> Result<Vec<CollectionInfo>, ServiceError> {
        self.enter(ctx).await;
        self.inner.collections(ctx).await
    }
}

fn client_with(kv: Arc<dyn KvService>) -> LocalExecutorClient {
    let services = ServiceSet {
        kv,
        ..ServiceSet::unavailable()
    };
    client_with_services(ExecutorConfig::default(), services)
}

/// `app`'s collections with their key counts.
async fn stored(kv: &InMemoryKvService, app: AppId) -> Vec<(String, u64)> {
    kv.collections(&as_app(app))
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.name.to_string(), c.keys))
        .collect()
}

/// The value `app` holds under `collection`/`key`.
async fn value(kv: &InMemoryKvService, app: AppId, collection: &str, key: &str) -> Option<Value> {
    let collection = CollectionName::parse(collection).unwrap();
    let key = KvKey::parse(key).unwrap();
    kv.get(&as_app(app), &collection, &key).await.unwrap()
}

/// Stores `value` under `collection`/`key` of `app` from outside any run.
async fn put(kv: &InMemoryKvService, app: AppId, collection: &str, key: &str, value: Value) {
    let collection = CollectionName::parse(collection).unwrap();
    let key = KvKey::parse(key).unwrap();
    kv.set(&as_app(app), &collection, &key, value)
        .await
        .unwrap();
}

/// The version `app` holds under `collection`/`key`.
async fn version(kv: &InMemoryKvService, app: AppId, collection: &str, key: &str) -> Option<i64> {
    let collection = CollectionName::parse(collection).unwrap();
    let key = KvKey::parse(key).unwrap();
    let entry = kv.get_entry(&as_app(app), &collection, &key).await.unwrap();
    entry.map(|e| e.version)
}

/// The KV changes emitted after the first `from` events, each as
/// `[collection, key, op, value]`.
fn changes(events: &RecordingEmitter, from: usize) -> Value {
    let changes: Vec<Value> = events.events()[from..]
        .iter()
        .map(|event| match &event.subject {
            EventSubject::Kv {
                collection,
                key,
                op,
                value,
            } => json!([collection, key, op.as_str(), value]),
            other => panic!("not a kv event: {other:?}"),
        })
        .collect();
    Value::from(changes)
}

/// A run of `script` as a trigger delivering an event whose delivery id is `id`.
async fn deliver(client: &LocalExecutorClient, script: &Script, id: &str) -> ExecutionReport {
    let mut request = request(script.clone(), None);
    request.invocation_type = InvocationType::Trigger;
    request.depth = 1;
    request.trigger = Some(TriggeredBy {
        trigger_id: TriggerId::new(),
        event: json!({ "kind": "kv", "collection": "orders", "key": "o-1", "op": "set",
                       "value": 1, "app_id": script.app_id, "depth": 1,
                       "causation_id": null, "id": id }),
    });
    client.execute(request).await
}

#[tokio::test(flavor = "multi_thread")]
async fn get_set_and_delete_round_trip_json_values() {
    let (kv, _) = kv();
    let client = client_with(kv);
    let source = r#"
        let users = kv::collection("users");
        let before = users.get("ada");
        users.set("ada", #{ name: "Ada", langs: ["en", "fr"], born: 1815, ratio: 0.5, ok: true, none: () });
        let after = users.get("ada");
        let existed = users.delete("ada");
        let again = users.delete("ada");
        users.set("blob", blob(3, 255));
        #{ before: before, after: after, existed: existed, again: again,
           gone: users.get("ada"), blob: users.get("blob"), name: users.name,
           shown: `${users}` }
    "#;
    let body = json(&ok(run(&client, source).await));
    assert_eq!(
        body,
        json!({
            "before": null,
            "after": { "name": "Ada", "langs": ["en", "fr"], "born": 1815, "ratio": 0.5,
                       "ok": true, "none": null },
            "existed": true,
            "again": false,
            "gone": null,
            "blob": "////",
            "name": "users",
            "shown": "kv collection 'users'",
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_pages_through_a_collection_by_prefix() {
    let (kv, _) = kv();
    let client = client_with(kv);
    let source = r#"
        let c = kv::collection("things");
        for k in ["u:carl", "u:ada", "x", "u:bob"] { c.set(k, k.len()); }
        let first = c.list(#{ prefix: "u:", limit: 2 });
        let second = c.list(#{ prefix: "u:", limit: 2, cursor: first.next_cursor });
        #{ first: first, second: second, all: c.list().entries.len() }
    "#;
    let body = json(&ok(run(&client, source).await));
    assert_eq!(
        body,
        json!({
            "first": { "entries": [{ "key": "u:ada", "value": 5 }, { "key": "u:bob", "value": 5 }],
                       "next_cursor": "u:bob" },
            "second": { "entries": [{ "key": "u:carl", "value": 6 }], "next_cursor": null },
            "all": 4,
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_throw_catchable_messages_naming_the_problem() {
    let (kv, _) = kv();
    let client = client_with(kv.clone());
    let setup = r#"
        let c = kv::collection("c");
        let big = "x";
        big.pad(65535, 'x');
    "#;
    let attempts = [
        r#"kv::collection("bad name")"#,
        "kv::collection(42)",
        r#"c.get("")"#,
        "c.get(7)",
        r#"c.set("big", big)"#,
        r#"c.set("f", || 1)"#,
        "c.list(#{ limt: 5 })",
        "c.list(#{ limit: 0 })",
    ];
    let (app, messages) = thrown(&client, setup, &attempts).await;
    assert_eq!(
        messages,
        json!([
            "collection name may contain only ASCII letters, digits, '_', '-', '.' and ':'",
            "collection name must be a string, not i64",
            "key must not be empty",
            "key must be a string, not i64",
            "value for key 'big' is 65537 bytes, over the limit of 65536 bytes",
            "value for key 'f' cannot be stored: a value of type 'Fn' cannot be converted to JSON",
            "unknown list option 'limt' (expected prefix, limit or cursor)",
            "limit must be between 1 and 1000, not 0",
        ])
    );
    assert!(stored(&kv, app).await.is_empty(), "nothing was stored");

    assert_uncaught(
        &client,
        "let c = kv::collection(\"c\");\nlet big = \"x\";\nbig.pad(70000, 'x');\nc.set(\"k\", big)",
        "value for key 'k' is 70002 bytes, over the limit of 65536 bytes",
        4,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_acts_for_the_runs_app_execution_depth_and_identity() {
    let (store, events) = kv();
    let kv = Arc::new(Observed::new(store.clone(), Duration::ZERO));
    let client = client_with(kv.clone());
    let alpha = script(
        r#"kv::collection("users").set("ada", "alpha's"); kv::collection("users").get("ada")"#,
    );
    let mut beta = script(
        r#"let before = kv::collection("users").get("ada"); kv::collection("users").set("ada", "beta's"); before"#,
    );
    beta.app_id = AppId::new();
    let alpha_request = request(alpha.clone(), Some(get()));
    let alpha_run = alpha_request.execution_id;
    assert_eq!(text(&ok(client.execute(alpha_request).await)), "alpha's");
    let mut beta_request = request(beta.clone(), Some(get()));
    beta_request.depth = 3;
    beta_request.run_as = Some(principal(&[(beta.app_id, AppRole::Developer)], &Scope::ALL));
    let beta_run = beta_request.execution_id;
    let reply = ok(client.execute(beta_request).await);
    assert_eq!(
        reply.body.len(),
        0,
        "beta's script saw no entry: alpha's is not its own"
    );
    for app in [alpha.app_id, beta.app_id] {
        assert_eq!(stored(&store, app).await, [("users".to_owned(), 1)]);
    }
    assert_eq!(
        value(&store, alpha.app_id, "users", "ada").await,
        Some(json!("alpha's"))
    );
    assert_eq!(
        value(&store, beta.app_id, "users", "ada").await,
        Some(json!("beta's"))
    );
    let caused: Vec<_> = events
        .events()
        .iter()
        .map(|e| (e.app_id, e.causation_id, e.depth))
        .collect();
    assert_eq!(
        caused,
        [
            (alpha.app_id, Some(alpha_run), 1),
            (beta.app_id, Some(beta_run), 4)
        ],
        "each change's event is caused by its run, one level deeper"
    );

    let contexts = kv.contexts.lock().unwrap().clone();
    assert_eq!(contexts.len(), 4);
    for ctx in &contexts[..2] {
        assert_eq!(ctx.app_id, alpha.app_id);
        assert_eq!(ctx.execution_id, Some(alpha_run));
        assert_eq!((ctx.depth, &ctx.run_as), (0, &None));
    }
    for ctx in &contexts[2..] {
        assert_eq!(ctx.app_id, beta.app_id);
        assert_eq!(ctx.execution_id, Some(beta_run));
        assert_eq!(ctx.depth, 3);
        assert_eq!(ctx.run_as.as_ref().unwrap().username.as_str(), "ada");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_triggered_run_whose_principal_lacks_the_role_is_refused() {
    let (kv, _) = kv();
    let client = client_with(kv.clone());
    let source = r#"let c = kv::collection("c");
           let read = c.get("k");
           let outcome = "written";
           try { c.set("k", 1); } catch (e) { outcome = `${read}|${e}`; }
           outcome"#;
    let (app, answer) = run_as_viewer(&client, source).await;
    assert_eq!(
        answer,
        "|permission denied: ada lacks data:write in this app"
    );
    assert!(stored(&kv, app).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_reads_versions_but_no_conditional_write_counter_or_batch() {
    let (kv, _) = kv();
    let client = client_with(kv.clone());
    let source = r#"let c = kv::collection("c");
           let seen = `${c.get_entry("k") == ()}`;
           for write in [|| c.set("k", 1, #{ if_absent: true }), || c.incr("k"),
                         || kv::atomic().set(c, "k", 1).commit()] {
               try { write.call(); seen += "|written"; } catch (e) { seen += `|${e}`; }
           }
           seen"#;
    let (app, answer) = run_as_viewer(&client, source).await;
    let denied = "permission denied: ada lacks data:write in this app";
    assert_eq!(answer, format!("true|{denied}|{denied}|{denied}"));
    assert!(stored(&kv, app).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_services_kv_calls_throw_that_kv_is_not_available() {
    let source = r#"
        let c = kv::collection("users");
        let outcome = "no error";
        try { c.get("k"); } catch (e) { outcome = e; }
        outcome
    "#;
    assert_eq!(
        text(&ok(run(&client(), source).await)),
        "service unavailable: kv is not available in this process"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_call_counts_against_the_runs_deadline() {
    let kv = Arc::new(Observed::new(kv().0, Duration::from_secs(30)));
    let client = client_with(kv);
    let limits = ScriptLimits {
        timeout_ms: Some(300),
        ..ScriptLimits::default()
    };
    let started = Instant::now();
    let report = run_limited(&client, r#"kv::collection("c").get("k")"#, limits).await;
    assert_eq!(
        failure(report),
        ExecutionError::Timeout {
            limit: Duration::from_millis(300)
        }
    );
    assert!(started.elapsed() < QUICK, "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn get_entry_answers_a_version_that_grows_on_every_write() {
    let (kv, _) = kv();
    let client = client_with(kv.clone());
    let source = r#"
        let c = kv::collection("c");
        let absent = c.get_entry("k");
        let plain = c.set("k", "one");
        let first = c.get_entry("k");
        c.set("k", #{ two: 2 });
        let second = c.get_entry("k");
        c.set("k", 3, #{ if_version: second.version });
        let third = c.get_entry("k");
        c.incr("k");
        let fourth = c.get_entry("k");
        #{ absent: absent, plain: type_of(plain), entries: [first, second, third, fourth],
           version: type_of(first.version) }
    "#;
    let script = script(source);
    let app = script.app_id;
    let body = json(&ok(run_script(&client, script).await));
    assert_eq!(body["absent"], Value::Null);
    assert_eq!(body["plain"], "()", "a plain set still answers nothing");
    assert_eq!(body["version"], "i64");
    let entries = body["entries"].as_array().unwrap();
    let values: Vec<&Value> = entries.iter().map(|e| &e["value"]).collect();
    assert_eq!(
        values,
        [&json!("one"), &json!({ "two": 2 }), &json!(3), &json!(4)]
    );
    let versions: Vec<i64> = entries
        .iter()
        .map(|e| e["version"].as_i64().unwrap())
        .collect();
    assert!(versions.is_sorted_by(|a, b| a < b), "{versions:?}");
    assert_eq!(version(&kv, app, "c", "k").await, versions.last().copied());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conditional_set_writes_only_when_its_condition_holds() {
    let (kv, events) = kv();
    let client = client_with(kv.clone());
    let source = r#"
        let c = kv::collection("c");
        let created = c.set("k", 1, #{ if_absent: true });
        let taken = c.set("k", 2, #{ if_absent: true });
        let read = c.get_entry("k");
        let updated = c.set("k", 3, #{ if_version: read.version });
        let stale = c.set("k", 4, #{ if_version: read.version });
        let never = c.set("other", 5, #{ if_version: read.version });
        [created, taken, updated, stale, never, c.get("k"), c.get("other")]
    "#;
    let body = json(&ok(run(&client, source).await));
    assert_eq!(body, json!([true, false, true, false, false, 3, null]));
    assert_eq!(
        changes(&events, 0),
        json!([["c", "k", "set", 1], ["c", "k", "set", 3]]),
        "a write whose condition did not hold emits nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_retry_loop_retries_until_its_write_wins() {
    let (store, _) = kv();
    let kv = Arc::new(Observed::new(store.clone(), Duration::ZERO));
    let client = client_with(kv.clone());
    let retry = r#"loop { let e = c.get_entry("n"); let n = if e == () { 0 } else { e.value }; if c.set("n", n + 1, if e == () { #{ if_absent: true } } else { #{ if_version: e.version } }) { break; } }"#;
    for documented in [
        include_str!("../src/sdk/kv.rs"),
        include_str!("../../../docs/sdk-shape.md"),
    ] {
        assert!(documented.contains(retry), "the loop is the one documented");
    }
    // Two rivals: the first attempt (on an absent key) and the second lose their race.
    kv.rivals.store(2, Ordering::SeqCst);
    let source = format!(
        r#"let c = kv::collection("c"); let tries = 0;
           {}
           c.get("n")"#,
        retry.replace("loop {", "loop { tries += 1;")
    );
    let script = script(&format!("{source}; tries"));
    let app = script.app_id;
    let tries = json(&ok(run_script(&client, script).await));
    assert_eq!(tries, json!(3), "two lost races, then a win");
    assert_eq!(
        value(&store, app, "c", "n").await,
        Some(json!(3)),
        "the rivals' two increments and the script's one, none lost"
    );
    assert_eq!(kv.rivals.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn incr_adds_in_one_step_and_keeps_whole_numbers_whole() {
    let (kv, events) = kv();
    let client = client_with(kv.clone());
    let source = r#"
        let c = kv::collection("c");
        let first = c.incr("n");
        let second = c.incr("n", 41);
        let down = c.incr("n", -2);
        let half = c.incr("f", 0.5);
        let mixed = c.incr("n", 0.25);
        #{ values: [first, second, down, half, mixed],
           types: [type_of(first), type_of(down), type_of(half), type_of(mixed)],
           stored: [c.get("n"), c.get("f")] }
    "#;
    let body = json(&ok(run(&client, source).await));
    assert_eq!(
        body,
        json!({
            "values": [1, 42, 40, 0.5, 40.25],
            "types": ["i64", "i64", "f64", "f64"],
            "stored": [40.25, 0.5],
        })
    );
    assert_eq!(
        changes(&events, 0)[0],
        json!(["c", "n", "set", 1]),
        "an increment emits a set of the new value"
    );

    let setup = r#"
        let c = kv::collection("c");
        c.set("s", "seven");
        c.set("max", 9223372036854775807);
    "#;
    let attempts = [
        r#"c.incr("s")"#,
        r#"c.incr("max")"#,
        r#"c.incr("max", -1)"#,
        r#"c.incr("n", "1")"#,
        r#"c.incr("n", ())"#,
        r#"c.incr("")"#,
    ];
    let (app, messages) = thrown(&client, setup, &attempts).await;
    assert_eq!(
        messages,
        json!([
            "value for key 's' is not a number, so it cannot be incremented",
            "incrementing key 'max' by 1 leaves the range of a 64-bit integer",
            "no error",
            "incr amount must be an integer or a float, not string",
            "incr amount must be an integer or a float, not ()",
            "key must not be empty",
        ])
    );
    assert_eq!(value(&kv, app, "c", "s").await, Some(json!("seven")));
    assert_eq!(value(&kv, app, "c", "max").await, Some(json!(i64::MAX - 1)));
    assert_eq!(value(&kv, app, "c", "n").await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn set_options_and_batch_steps_that_are_mistakes_throw_naming_them() {
    let (kv, _) = kv();
    let client = client_with(kv.clone());
    let setup = r#"let c = kv::collection("c");"#;
    let attempts = [
        r#"c.set("k", 1, #{ if_version: 1, if_absent: true })"#,
        r#"c.set("k", 1, #{ if_vresion: 1 })"#,
        r#"c.set("k", 1, #{ if_absent: false })"#,
        r#"c.set("k", 1, #{ if_version: "1" })"#,
        r#"c.set("k", 1, #{})"#,
        r#"c.set("k", 1, ())"#,
        r#"kv::atomic().set("c", "k", 1)"#,
        r#"kv::atomic().delete(files::collection("c"), "k")"#,
        r#"kv::atomic().check(c, "k", 1.5)"#,
        r#"{ let b = kv::atomic(); for i in 0..101 { b.delete(c, `k${i}`); } b.commit() }"#,
    ];
    let (app, messages) = thrown(&client, setup, &attempts).await;
    let not_a_kv_collection =
        "an atomic batch's collection must be a kv collection (kv::collection(name)), not";
    assert_eq!(
        messages,
        json!([
            "set options if_version and if_absent cannot be used together",
            "unknown set option 'if_vresion' (expected if_version or if_absent)",
            "set option 'if_absent' can only be true, not false (to write whatever is there, call set(key, value))",
            "set option 'if_version' must be an integer, not string",
            "set options need if_version or if_absent (to write whatever is there, call set(key, value))",
            "set options must be a map, not ()",
            format!("{not_a_kv_collection} string"),
            format!("{not_a_kv_collection} FilesCollection"),
            "the version to check must be an integer, or () for a key that must be absent, not f64",
            "an atomic batch holds 101 checks and changes, over the limit of 100",
        ])
    );
    assert!(stored(&kv, app).await.is_empty(), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_whose_checks_hold_changes_every_key_with_one_event_each() {
    let (kv, events) = kv();
    let client = client_with(kv.clone());
    let source = r#"
        let c = kv::collection("c");
        let d = kv::collection("d");
        let a = c.get_entry("a");
        kv::atomic()
            .check(c, "a", a.version)
            .check(d, "fresh", ())
            .set(d, "fresh", #{ by: "batch" })
            .incr(c, "n", 5)
            .delete(c, "gone")
            .delete(c, "never-there")
            .set(c, "a", a.value + 1)
            .incr(d, "count")
            .commit()
    "#;
    let script = script(source);
    let app = script.app_id;
    put(&kv, app, "c", "a", json!(1)).await;
    put(&kv, app, "c", "gone", json!("x")).await;
    put(&kv, app, "c", "n", json!(10)).await;
    let before = events.events().len();
    let request = request(script, Some(get()));
    let run = request.execution_id;
    assert_eq!(json(&ok(client.execute(request).await)), json!(true));
    assert_eq!(
        value(&kv, app, "d", "fresh").await,
        Some(json!({ "by": "batch" }))
    );
    assert_eq!(value(&kv, app, "c", "n").await, Some(json!(15)));
    assert_eq!(value(&kv, app, "c", "gone").await, None);
    assert_eq!(value(&kv, app, "c", "a").await, Some(json!(2)));
    assert_eq!(value(&kv, app, "d", "count").await, Some(json!(1)));
    assert_eq!(
        changes(&events, before),
        json!([
            ["d", "fresh", "set", { "by": "batch" }],
            ["c", "n", "set", 15],
            ["c", "gone", "delete", null],
            ["c", "a", "set", 2],
            ["d", "count", "set", 1],
        ]),
        "one event per change, none for deleting what was not there"
    );
    for event in &events.events()[before..] {
        assert_eq!((event.causation_id, event.depth), (Some(run), 1));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_with_a_failed_check_changes_nothing_and_emits_nothing() {
    let (kv, events) = kv();
    let client = client_with(kv.clone());
    let source = r#"
        let c = kv::collection("c");
        let a = c.get_entry("a");
        c.set("a", 100);   // a rival's write: the version read is stale
        let stale = kv::atomic().check(c, "a", a.version).set(c, "b", 1).incr(c, "n")
            .delete(c, "a").commit();
        let present = kv::atomic().check(c, "n", ()).set(c, "b", 1).commit();
        let absent = kv::atomic().check(c, "b", a.version).set(c, "b", 1).commit();
        let one_of_two = kv::atomic().check(c, "b", ()).check(c, "n", ()).set(c, "b", 1).commit();
        [stale, present, absent, one_of_two]
    "#;
    let script = script(source);
    let app = script.app_id;
    put(&kv, app, "c", "a", json!(1)).await;
    put(&kv, app, "c", "n", json!(10)).await;
    let before = events.events().len();
    let body = json(&ok(run_script(&client, script).await));
    assert_eq!(body, json!([false, false, false, false]));
    assert_eq!(
        changes(&events, before),
        json!([["c", "a", "set", 100]]),
        "only the rival's write"
    );
    assert_eq!(value(&kv, app, "c", "a").await, Some(json!(100)));
    assert_eq!(value(&kv, app, "c", "n").await, Some(json!(10)));
    assert_eq!(value(&kv, app, "c", "b").await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_kept_in_a_variable_is_built_step_by_step() {
    let (kv, events) = kv();
    let client = client_with(kv.clone());
    let source = r#"
        let c = kv::collection("c");
        let empty = kv::atomic().commit();
        let b = kv::atomic();
        b.set(c, "x", 1);
        b.incr(c, "y");
        b.incr(c, "y", 2);
        b.check(c, "x", ());   // checked against the store before the batch
        let committed = b.commit();
        let again = b.commit();  // x exists now
        [empty, committed, again, `${b}`, c.get("x"), c.get("y")]
    "#;
    let body = json(&ok(run(&client, source).await));
    assert_eq!(
        body,
        json!([
            true,
            true,
            false,
            "kv atomic batch of 1 check and 3 changes",
            1,
            3
        ])
    );
    assert_eq!(
        changes(&events, 0),
        json!([
            ["c", "x", "set", 1],
            ["c", "y", "set", 1],
            ["c", "y", "set", 3]
        ]),
        "each change of the batch is its own event, an empty batch none"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn work_recorded_with_the_events_id_happens_once_per_event() {
    let (kv, _) = kv();
    let client = client_with(kv.clone());
    let script = script(
        r#"let seen = kv::collection("seen");
           let counts = kv::collection("counts");
           kv::atomic().check(seen, ctx.event.id, ()).set(seen, ctx.event.id, true).incr(counts, "n", 1).commit()"#,
    );
    let app = script.app_id;
    let (first, second) = (
        "0190a3c4-0000-7000-8000-000000000001",
        "0190a3c4-0000-7000-8000-000000000002",
    );
    assert_eq!(
        json(&ok(deliver(&client, &script, first).await)),
        json!(true)
    );
    assert_eq!(
        json(&ok(deliver(&client, &script, first).await)),
        json!(false),
        "a re-delivery of the same event finds it seen"
    );
    assert_eq!(value(&kv, app, "counts", "n").await, Some(json!(1)));
    assert_eq!(
        json(&ok(deliver(&client, &script, second).await)),
        json!(true)
    );
    assert_eq!(value(&kv, app, "counts", "n").await, Some(json!(2)));
    assert_eq!(value(&kv, app, "seen", first).await, Some(json!(true)));
}

/// The first ```rhai block after `heading` in `text`.
fn rhai_block<'a>(text: &'a str, heading: &str) -> &'a str {
    let section = &text[text.find(heading).unwrap()..];
    let start = section.find("```rhai\n").unwrap() + "```rhai\n".len();
    let end = section[start..].find("```").unwrap();
    &section[start..start + end]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_examples_run() {
    const EVENT: &str = "0190a3c4-0000-7000-8000-00000000000a";
    let (kv, _) = kv();
    let client = client_with(kv.clone());
    let module_doc: String = include_str!("../src/sdk/kv.rs")
        .lines()
        .take_while(|line| line.starts_with("//!"))
        .map(|line| line.trim_start_matches("//!").trim_start_matches(' '))
        .collect::<Vec<_>>()
        .join("\n");
    let sdk_shape = include_str!("../../../docs/sdk-shape.md");
    for example in [
        rhai_block(&module_doc, "The `kv` module"),
        rhai_block(sdk_shape, "## `kv`"),
    ] {
        let script = script(example);
        let app = script.app_id;
        // Twice: the second run finds every key the first one wrote.
        for _ in 0..2 {
            let report = deliver(&client, &script, EVENT).await;
            assert!(report.outcome.is_ok(), "{report:?}\n{example}");
        }
        assert_eq!(value(&kv, app, "seen", EVENT).await, Some(json!(true)));
    }
}
