//! PostgreSQL only: a write and its events share one transaction, the table's CHECKs
//! mirror the validators, and driver failures reach scripts as the right error.

use std::sync::Arc;

use async_trait::async_trait;
use picloud_manager_core::RepoError;
use picloud_manager_core::kv::PgKvService;
use picloud_manager_core::outbox::{PgTx, RecordingEmitter, ServiceEventEmitter};
use picloud_shared::{AppId, KvService, ServiceError, ServiceEvent};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{Kv, coll, key, script_ctx};

/// What each test emitter does after writing its row.
#[derive(Debug, Clone, Copy)]
enum Then {
    Succeed,
    Fail,
    FailUnavailable,
    /// Succeed on the first event, fail on the second: a failure in the middle of a
    /// change that emits several.
    FailOnSecond,
}

/// Writes the event into `test_events` in the caller's transaction, as the outbox would,
/// and records what it could see from inside and outside that transaction.
#[derive(Debug)]
struct TableEmitter {
    pool: PgPool,
    then: Then,
    seen: std::sync::Mutex<Vec<(Option<Value>, Option<Value>)>>,
    announced: std::sync::atomic::AtomicUsize,
    emitted: std::sync::atomic::AtomicUsize,
}

impl TableEmitter {
    async fn new(pool: &PgPool, then: Then) -> Arc<Self> {
        sqlx::query("CREATE TABLE IF NOT EXISTS test_events (event jsonb NOT NULL)")
            .execute(pool)
            .await
            .unwrap();
        Arc::new(Self {
            pool: pool.clone(),
            then,
            seen: std::sync::Mutex::new(Vec::new()),
            announced: std::sync::atomic::AtomicUsize::new(0),
            emitted: std::sync::atomic::AtomicUsize::new(0),
        })
    }
}

const VALUE_OF: &str =
    "SELECT value FROM kv_entries WHERE app_id = $1 AND collection = $2 AND key = $3";

async fn value_of(conn: impl sqlx::PgExecutor<'_>, event: &ServiceEvent) -> Option<Value> {
    let picloud_shared::EventSubject::Kv {
        collection, key, ..
    } = &event.subject
    else {
        panic!("the kv service emitted a {} event", event.subject.kind());
    };
    sqlx::query_scalar::<_, sqlx::types::Json<Value>>(VALUE_OF)
        .bind(event.app_id.as_uuid())
        .bind(collection)
        .bind(key)
        .fetch_optional(conn)
        .await
        .unwrap()
        .map(|v| v.0)
}

#[async_trait]
impl ServiceEventEmitter<PgTx> for TableEmitter {
    async fn emit(&self, tx: &mut PgTx, event: &ServiceEvent) -> Result<u64, ServiceError> {
        let inside = value_of(&mut **tx, event).await;
        let outside = value_of(&self.pool, event).await;
        self.seen.lock().unwrap().push((inside, outside));
        sqlx::query("INSERT INTO test_events (event) VALUES ($1)")
            .bind(sqlx::types::Json(event.payload()))
            .execute(&mut **tx)
            .await
            .unwrap();
        // Failures come as the repository layer reports them, through its one translation.
        let nth = self
            .emitted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let failure = match self.then {
            Then::Succeed => return Ok(1),
            Then::FailOnSecond if nth < 2 => return Ok(1),
            Then::FailOnSecond => RepoError::Internal("the outbox refused the event".into()),
            Then::Fail => RepoError::Internal("the outbox refused the event".into()),
            Then::FailUnavailable => RepoError::Unavailable(Box::new(sqlx::Error::PoolTimedOut)),
        };
        Err(failure.into_service_error("emitting a kv event"))
    }

    fn rows_committed(&self) {
        self.announced
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl TableEmitter {
    fn announcements(&self) -> usize {
        self.announced.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn add_app(pool: &PgPool) -> AppId {
    let kv = Kv::postgres(pool.clone());
    kv.add_app("shop").await
}

async fn stored(pool: &PgPool, app: AppId, k: &str) -> Option<Value> {
    sqlx::query_scalar::<_, sqlx::types::Json<Value>>(VALUE_OF)
        .bind(app.as_uuid())
        .bind("users")
        .bind(k)
        .fetch_optional(pool)
        .await
        .unwrap()
        .map(|v| v.0)
}

async fn event_rows(pool: &PgPool) -> Vec<Value> {
    sqlx::query_scalar::<_, sqlx::types::Json<Value>>("SELECT event FROM test_events")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.0)
        .collect()
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn the_events_are_written_in_the_writes_own_transaction(pool: PgPool) {
    let app = add_app(&pool).await;
    let emitter = TableEmitter::new(&pool, Then::Succeed).await;
    let kv = PgKvService::new(pool.clone(), emitter.clone());
    let ctx = script_ctx(app);
    kv.set(&ctx, &coll("users"), &key("ada"), json!({ "n": 1 }))
        .await
        .unwrap();
    kv.delete(&ctx, &coll("users"), &key("ada")).await.unwrap();
    // Inside the transaction the emitter saw the change; outside, nobody could yet.
    assert_eq!(
        *emitter.seen.lock().unwrap(),
        [
            (Some(json!({ "n": 1 })), None),
            (None, Some(json!({ "n": 1 })))
        ]
    );
    let rows = event_rows(&pool).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["op"], "set");
    assert_eq!(rows[0]["value"], json!({ "n": 1 }));
    assert_eq!(rows[0]["depth"], 1);
    assert_eq!(rows[0]["causation_id"], json!(ctx.execution_id));
    assert_eq!(rows[1]["op"], "delete");
    assert_eq!(rows[1]["value"], Value::Null);
    assert_eq!(emitter.announcements(), 2, "each commit is announced");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_failure_after_the_write_leaves_neither_the_value_nor_event_rows(pool: PgPool) {
    let app = add_app(&pool).await;
    let ctx = script_ctx(app);
    let failing = TableEmitter::new(&pool, Then::Fail).await;
    let kv = PgKvService::new(pool.clone(), failing.clone());
    let err = kv
        .set(&ctx, &coll("users"), &key("ada"), json!("new"))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Internal(_)), "{err:?}");
    assert_eq!(err.to_string(), "internal error");
    // The emitter did see the write inside its transaction: it was rolled back, not skipped.
    assert_eq!(failing.seen.lock().unwrap()[0].0, Some(json!("new")));
    assert_eq!(stored(&pool, app, "ada").await, None);
    assert!(event_rows(&pool).await.is_empty());
    assert_eq!(failing.announcements(), 0, "a rollback is never announced");

    // A failed delete keeps the value, and a failed overwrite the old one.
    let working = PgKvService::new(pool.clone(), Arc::new(RecordingEmitter::default()));
    working
        .set(&ctx, &coll("users"), &key("ada"), json!("old"))
        .await
        .unwrap();
    kv.delete(&ctx, &coll("users"), &key("ada"))
        .await
        .unwrap_err();
    kv.set(&ctx, &coll("users"), &key("ada"), json!("newer"))
        .await
        .unwrap_err();
    assert_eq!(stored(&pool, app, "ada").await, Some(json!("old")));
    assert!(event_rows(&pool).await.is_empty());

    let unavailable = TableEmitter::new(&pool, Then::FailUnavailable).await;
    let kv = PgKvService::new(pool.clone(), unavailable);
    let err = kv
        .set(&ctx, &coll("users"), &key("bob"), json!(1))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ServiceError::Unavailable("the database is unavailable, try again later".to_owned())
    );
    assert_eq!(stored(&pool, app, "bob").await, None);
    assert!(event_rows(&pool).await.is_empty());
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_write_for_a_missing_app_is_refused_naming_it(pool: PgPool) {
    let kv = Kv::postgres(pool);
    let missing = AppId::new();
    let err = kv
        .service
        .set(&script_ctx(missing), &coll("users"), &key("k"), json!(1))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ServiceError::InvalidArgument(format!("app {missing} not found"))
    );
    assert!(kv.events().is_empty());
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn the_table_refuses_what_the_validators_refuse(pool: PgPool) {
    let app = add_app(&pool).await;
    let insert = |collection: String, key: String| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO kv_entries (app_id, collection, key, value) VALUES ($1, $2, $3, '1')",
            )
            .bind(app.as_uuid())
            .bind(collection)
            .bind(key)
            .execute(&pool)
            .await
        }
    };
    insert("orders:2024.a-b_C".into(), "any key ✓".into())
        .await
        .unwrap();
    insert("x".repeat(128), "k".repeat(512)).await.unwrap();
    for (collection, key) in [
        (String::new(), "k".to_owned()),
        ("x".repeat(129), "k".to_owned()),
        ("has space".to_owned(), "k".to_owned()),
        ("star*".to_owned(), "k".to_owned()),
        ("c".to_owned(), String::new()),
        ("c".to_owned(), "é".repeat(256) + "x"),
        ("c".to_owned(), "tab\tkey".to_owned()),
        ("c".to_owned(), "c1\u{85}".to_owned()),
    ] {
        let err = insert(collection.clone(), key.clone()).await.unwrap_err();
        let code = err.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some("23514"), "{collection:?} {key:?}");
    }
    // Byte order whatever the database's locale, so pages agree with the in-memory service.
    let collations: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT column_name::text, collation_name::text FROM information_schema.columns \
         WHERE table_name = 'kv_entries' AND column_name IN ('collection', 'key') \
         ORDER BY column_name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        collations,
        [
            ("collection".to_owned(), Some("C".to_owned())),
            ("key".to_owned(), Some("C".to_owned()))
        ]
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_closed_pool_is_unavailable(pool: PgPool) {
    let app = add_app(&pool).await;
    let kv = Kv::postgres(pool.clone());
    pool.close().await;
    let err = kv
        .service
        .get(&script_ctx(app), &coll("users"), &key("k"))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Unavailable(_)), "{err:?}");
    let err = kv
        .service
        .set(&script_ctx(app), &coll("users"), &key("k"), json!(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Unavailable(_)), "{err:?}");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_failure_in_the_middle_of_a_batch_leaves_no_change_and_no_event_rows(pool: PgPool) {
    let app = add_app(&pool).await;
    let ctx = script_ctx(app);
    let failing = TableEmitter::new(&pool, Then::FailOnSecond).await;
    let kv = PgKvService::new(pool.clone(), failing.clone());
    let set = |k: &str| picloud_shared::KvMutation::Set {
        collection: coll("users"),
        key: key(k),
        value: json!(k),
    };
    let batch = picloud_shared::KvAtomic {
        checks: vec![picloud_shared::KvCheck {
            collection: coll("users"),
            key: key("ada"),
            version: None,
        }],
        mutations: vec![set("ada"), set("bob"), set("cy")],
    };
    let err = kv.commit(&ctx, batch).await.unwrap_err();
    assert_eq!(err.to_string(), "internal error");
    assert_eq!(failing.emitted.load(std::sync::atomic::Ordering::SeqCst), 2);
    for k in ["ada", "bob", "cy"] {
        assert_eq!(stored(&pool, app, k).await, None, "{k}");
    }
    assert!(event_rows(&pool).await.is_empty());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM kv_entries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "not even the placeholder of the checked key");
}

/// 64 concurrent writers × 200 increments each, with `incr` and with a check-and-set
/// loop: not one update is lost.
#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn concurrent_increments_and_check_and_set_loops_lose_no_update(pool: PgPool) {
    use picloud_shared::{KvCondition, KvIncrement};
    const WRITERS: i64 = 64;
    const EACH: i64 = 200;
    let app = add_app(&pool).await;
    let kv = Arc::new(PgKvService::new(
        pool.clone(),
        Arc::new(RecordingEmitter::default()),
    ));
    let writers = (0..WRITERS).map(|_| {
        let kv = kv.clone();
        tokio::spawn(async move {
            let ctx = script_ctx(app);
            for _ in 0..EACH {
                kv.incr(&ctx, &coll("c"), &key("incr"), KvIncrement::Int(1))
                    .await
                    .unwrap();
            }
        })
    });
    for writer in futures_util::future::join_all(writers).await {
        writer.unwrap();
    }
    let ctx = script_ctx(app);
    let counted = kv.get(&ctx, &coll("c"), &key("incr")).await.unwrap();
    assert_eq!(counted, Some(json!(WRITERS * EACH)));

    let writers = (0..WRITERS).map(|_| {
        let kv = kv.clone();
        tokio::spawn(async move {
            let ctx = script_ctx(app);
            let (c, k) = (coll("c"), key("cas"));
            for _ in 0..EACH {
                loop {
                    let entry = kv.get_entry(&ctx, &c, &k).await.unwrap();
                    let (next, condition) = match &entry {
                        None => (1, KvCondition::IfAbsent),
                        Some(e) => (
                            e.value.as_i64().unwrap() + 1,
                            KvCondition::IfVersion(e.version),
                        ),
                    };
                    if kv
                        .set_if(&ctx, &c, &k, json!(next), condition)
                        .await
                        .unwrap()
                        .is_some()
                    {
                        break;
                    }
                }
            }
        })
    });
    for writer in futures_util::future::join_all(writers).await {
        writer.unwrap();
    }
    let counted = kv.get(&ctx, &coll("c"), &key("cas")).await.unwrap();
    assert_eq!(counted, Some(json!(WRITERS * EACH)));
}

/// Concurrent batches that each move one unit between two keys, checked against the
/// versions they read and retried until they commit: the total never changes, every move
/// lands, and of many batches claiming the same absent key exactly one does.
#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn concurrent_batches_keep_their_checks(pool: PgPool) {
    use picloud_shared::{KvAtomic, KvCheck, KvMutation};
    const MOVES: i64 = 48;
    let app = add_app(&pool).await;
    let kv = Arc::new(PgKvService::new(
        pool.clone(),
        Arc::new(RecordingEmitter::default()),
    ));
    let ctx = script_ctx(app);
    kv.set(&ctx, &coll("c"), &key("a"), json!(MOVES))
        .await
        .unwrap();
    kv.set(&ctx, &coll("c"), &key("b"), json!(0)).await.unwrap();
    let movers = (0..MOVES).map(|_| {
        let kv = kv.clone();
        tokio::spawn(async move {
            let ctx = script_ctx(app);
            loop {
                let a = kv
                    .get_entry(&ctx, &coll("c"), &key("a"))
                    .await
                    .unwrap()
                    .unwrap();
                let b = kv
                    .get_entry(&ctx, &coll("c"), &key("b"))
                    .await
                    .unwrap()
                    .unwrap();
                let check = |k: &str, version| KvCheck {
                    collection: coll("c"),
                    key: key(k),
                    version: Some(version),
                };
                let set = |k: &str, value: i64| KvMutation::Set {
                    collection: coll("c"),
                    key: key(k),
                    value: json!(value),
                };
                let batch = KvAtomic {
                    // Checked in the other order than written, to exercise the locking order.
                    checks: vec![check("b", b.version), check("a", a.version)],
                    mutations: vec![
                        set("a", a.value.as_i64().unwrap() - 1),
                        set("b", b.value.as_i64().unwrap() + 1),
                    ],
                };
                if kv.commit(&ctx, batch).await.unwrap() {
                    break;
                }
            }
        })
    });
    for mover in futures_util::future::join_all(movers).await {
        mover.unwrap();
    }
    assert_eq!(
        kv.get(&ctx, &coll("c"), &key("a")).await.unwrap(),
        Some(json!(0))
    );
    assert_eq!(
        kv.get(&ctx, &coll("c"), &key("b")).await.unwrap(),
        Some(json!(MOVES))
    );

    let claims = (0..32).map(|i| {
        let kv = kv.clone();
        tokio::spawn(async move {
            let ctx = script_ctx(app);
            let batch = KvAtomic {
                checks: vec![KvCheck {
                    collection: coll("c"),
                    key: key("owner"),
                    version: None,
                }],
                mutations: vec![KvMutation::Set {
                    collection: coll("c"),
                    key: key("owner"),
                    value: json!(i),
                }],
            };
            kv.commit(&ctx, batch).await.unwrap()
        })
    });
    let won: Vec<bool> = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
}
