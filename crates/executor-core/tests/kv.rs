//! The `kv` SDK module over the manager's in-memory `KvService` (a dev-dependency only:
//! the manager never depends on the executor): the script's view of get, set, delete and
//! list, its thrown errors, and the context every call carries.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

mod common;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::*;
use picloud_executor_core::{ExecutorConfig, LocalExecutorClient};
use picloud_manager_core::kv::InMemoryKvService;
use picloud_manager_core::outbox::RecordingEmitter;
use picloud_shared::{
    AppId, AppRole, CollectionInfo, CollectionName, ExecutionError, ExecutorClient, KvKey,
    KvListOptions, KvPage, KvService, Scope, ScriptLimits, ServiceContext, ServiceError,
    ServiceSet,
};
use picloud_testkit::services::principal;
use serde_json::{Value, json};
use support::{as_app, assert_uncaught, client_with_services, run_as_viewer, thrown};

/// The manager's in-memory KV service, and the events its changes emit.
fn kv() -> (Arc<InMemoryKvService>, Arc<RecordingEmitter>) {
    let events = Arc::new(RecordingEmitter::default());
    (Arc::new(InMemoryKvService::new(events.clone())), events)
}

/// A KV service that remembers the context of every call and takes `delay` over each,
/// around the in-memory one: what the context and deadline tests look at.
struct Observed {
    inner: Arc<InMemoryKvService>,
    contexts: Mutex<Vec<ServiceContext>>,
    delay: Duration,
}

impl Observed {
    fn new(inner: Arc<InMemoryKvService>, delay: Duration) -> Self {
        Self {
            inner,
            contexts: Mutex::new(Vec::new()),
            delay,
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

    async fn set(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
        value: Value,
    ) -> Result<(), ServiceError> {
        self.enter(ctx).await;
        self.inner.set(ctx, collection, key, value).await
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
