//! The outbox emitters: which rows an event writes, on both implementations (the
//! PostgreSQL `OutboxEmitter` and the in-memory `InMemoryOutbox`, through the same
//! `ServiceEventEmitter` seam and the same trigger kinds' matchers), that they exist only
//! if the caller's transaction commits, and how events past the depth limit are refused.

use std::sync::Arc;
use std::time::Duration;

use picloud_manager_core::OutboxSignal;
use picloud_manager_core::dead_letters::{ListDeadLetters, NewDeadLetter, Resolution};
use picloud_manager_core::outbox::{
    InMemoryOutbox, InMemoryTx, OutboxEmitter, PgTx, ServiceEventEmitter,
};
use picloud_shared::{
    AppId, EventSubject, ExecutionId, FileOp, KvOp, ServiceEvent, TriggerId, TriggerKind,
    UnitOfWork,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::{
    Backend, Repos, dead_letter_trigger, dead_letter_trigger_for, files_trigger, kv_trigger,
};

/// One outbox row as a dispatcher would claim it.
#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Row {
    app_id: Uuid,
    trigger_id: Uuid,
    script_id: Uuid,
    event: Value,
    depth: i32,
    attempts: i32,
    dead_letter_id: Option<Uuid>,
    due: bool,
    claimed: bool,
}

async fn outbox(pool: &PgPool) -> Vec<Row> {
    sqlx::query_as(
        "SELECT app_id, trigger_id, script_id, event, depth, attempts, dead_letter_id, \
                due_at <= now() AS due, claimed_until IS NOT NULL AS claimed \
         FROM outbox ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn kv_event(app: AppId, collection: &str, op: KvOp, depth: u32) -> ServiceEvent {
    ServiceEvent {
        app_id: app,
        subject: EventSubject::Kv {
            collection: collection.to_owned(),
            key: "k1".to_owned(),
            op,
            value: (op == KvOp::Set).then(|| json!({ "n": 1 })),
        },
        depth,
        causation_id: Some(ExecutionId::new()),
    }
}

fn file_event(app: AppId, collection: &str, op: FileOp, depth: u32) -> ServiceEvent {
    ServiceEvent {
        app_id: app,
        subject: EventSubject::Files {
            collection: collection.to_owned(),
            name: "ada.png".to_owned(),
            op,
            file: (op != FileOp::Delete).then(
                || json!({ "collection": collection, "name": "ada.png", "size": 3, "version": 1 }),
            ),
        },
        depth,
        causation_id: Some(ExecutionId::new()),
    }
}

/// An emitter under test, over the repositories of the same backend.
enum Emitter {
    Postgres(PgPool, OutboxEmitter),
    Memory(InMemoryOutbox),
}

impl Emitter {
    fn over(repos: &Repos, max_depth: u32) -> Self {
        match &repos.backend {
            Backend::Postgres(pool) => Self::Postgres(
                pool.clone(),
                OutboxEmitter::new(max_depth, OutboxSignal::spawn(pool.clone())),
            ),
            Backend::Memory(memory) => Self::Memory(InMemoryOutbox::new(
                Arc::clone(&memory.triggers),
                Arc::clone(&memory.dead_letters),
                max_depth,
            )),
        }
    }

    /// The same emitter, letting one run queue at most `deliveries` in all.
    fn with_deliveries_per_run(self, deliveries: u64) -> Self {
        match self {
            Self::Postgres(pool, emitter) => {
                Self::Postgres(pool, emitter.with_deliveries_per_run(deliveries))
            }
            Self::Memory(outbox) => Self::Memory(outbox.with_deliveries_per_run(deliveries)),
        }
    }

    /// Emits `event` in a unit of work that commits when the emitter takes it.
    async fn try_emit(&self, event: &ServiceEvent) -> Result<(), picloud_shared::ServiceError> {
        match self {
            Self::Postgres(pool, emitter) => {
                let mut unit = UnitOfWork::new(PgTx::begin(pool).await.unwrap(), emitter);
                unit.emit(event).await?;
                unit.commit().await.unwrap();
            }
            Self::Memory(outbox) => {
                let mut unit = UnitOfWork::new(InMemoryTx::new(), outbox);
                unit.emit(event).await?;
                unit.commit().await.unwrap();
            }
        }
        Ok(())
    }

    /// Emits `event` in a unit of work that commits; returns the rows written.
    async fn emit(&self, event: &ServiceEvent) -> u64 {
        let before = self.rows().await.len();
        self.try_emit(event).await.unwrap();
        u64::try_from(self.rows().await.len() - before).unwrap()
    }

    /// Emits `event` in a unit of work that is dropped uncommitted.
    async fn emit_rolled_back(&self, event: &ServiceEvent) {
        match self {
            Self::Postgres(pool, emitter) => {
                let mut unit = UnitOfWork::new(PgTx::begin(pool).await.unwrap(), emitter);
                unit.emit(event).await.unwrap();
            }
            Self::Memory(outbox) => {
                let mut unit = UnitOfWork::new(InMemoryTx::new(), outbox);
                unit.emit(event).await.unwrap();
            }
        }
    }

    /// `(trigger, script, event, depth, dead letter)` of every committed row, oldest first.
    async fn rows(&self) -> Vec<(TriggerId, Uuid, Value, u32, Option<Uuid>)> {
        match self {
            Self::Postgres(pool, _) => outbox(pool)
                .await
                .into_iter()
                .map(|r| {
                    (
                        TriggerId::from_uuid(r.trigger_id),
                        r.script_id,
                        r.event,
                        u32::try_from(r.depth).unwrap(),
                        r.dead_letter_id,
                    )
                })
                .collect(),
            Self::Memory(outbox) => outbox
                .rows()
                .into_iter()
                .map(|r| {
                    (
                        r.trigger_id,
                        r.script_id.as_uuid(),
                        r.event,
                        r.depth,
                        r.dead_letter_id.map(|id| id.as_uuid()),
                    )
                })
                .collect(),
        }
    }

    async fn clear(&self) {
        match self {
            Self::Postgres(pool, _) => {
                sqlx::query("DELETE FROM outbox")
                    .execute(pool)
                    .await
                    .unwrap();
            }
            Self::Memory(outbox) => outbox.clear(),
        }
    }
}

pub async fn a_set_writes_one_row_per_matching_enabled_trigger_of_the_app_only(repos: Repos) {
    let shop = repos.add_app("shop").await;
    let blog = repos.add_app("blog").await;
    let script = repos.add_script(shop, "on-change").await;
    let other_script = repos.add_script(shop, "other").await;
    let blog_script = repos.add_script(blog, "b").await;
    let user = repos.add_user("ada").await.id;
    let create = |new| {
        let triggers = repos.triggers.clone();
        async move { triggers.create(new).await.unwrap() }
    };
    let all = create(kv_trigger(
        shop,
        &script,
        user,
        "*",
        &[KvOp::Set, KvOp::Delete],
    ))
    .await;
    let prefix = create(kv_trigger(
        shop,
        &other_script,
        user,
        "orders:*",
        &[KvOp::Set],
    ))
    .await;
    let exact = create(kv_trigger(shop, &script, user, "orders:2024", &[KvOp::Set])).await;
    let deletes_only = create(kv_trigger(shop, &script, user, "orders:*", &[KvOp::Delete])).await;
    create(kv_trigger(shop, &script, user, "orders:2025", &[KvOp::Set])).await;
    create(kv_trigger(shop, &script, user, "orders", &[KvOp::Set])).await;
    let disabled = create(kv_trigger(shop, &script, user, "*", &[KvOp::Set])).await;
    repos
        .triggers
        .set_enabled(disabled.id, false)
        .await
        .unwrap();
    let blog_all = create(kv_trigger(blog, &blog_script, user, "*", &[KvOp::Set])).await;
    create(dead_letter_trigger(shop, &script, user)).await;

    let emitter = Emitter::over(&repos, 8);
    let event = kv_event(shop, "orders:2024", KvOp::Set, 3);
    assert_eq!(emitter.emit(&event).await, 3);

    let rows = emitter.rows().await;
    let triggers: Vec<TriggerId> = rows.iter().map(|r| r.0).collect();
    assert_eq!(triggers, vec![all.id, prefix.id, exact.id]);
    for (_, _, payload, depth, dead_letter) in &rows {
        assert_eq!(&without_id(payload), &event.payload());
        assert_eq!(*depth, 3);
        assert_eq!(*dead_letter, None);
    }
    let ids: std::collections::BTreeSet<String> =
        rows.iter().map(|row| row.2["id"].to_string()).collect();
    assert_eq!(ids.len(), rows.len(), "each delivery has an id of its own");
    // Each row runs its own trigger's script.
    assert_eq!(rows[1].1, other_script.id.as_uuid());
    assert_eq!(rows[0].1, script.id.as_uuid());
    assert!(!triggers.contains(&deletes_only.id));
    assert!(!triggers.contains(&blog_all.id));
    if let Backend::Postgres(pool) = &repos.backend {
        for row in outbox(pool).await {
            assert_eq!(row.app_id, shop.as_uuid());
            assert_eq!(row.attempts, 0);
            assert!(row.due, "a new row is due at once");
            assert!(!row.claimed);
        }
    }

    // A delete reaches the delete-watching triggers instead.
    emitter.clear().await;
    let delete = kv_event(shop, "orders:2024", KvOp::Delete, 1);
    assert_eq!(emitter.emit(&delete).await, 2);
    let rows = emitter.rows().await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![all.id, deletes_only.id]
    );
    assert_eq!(rows[0].2["op"], "delete");
    assert_eq!(rows[0].2["value"], Value::Null);
}

pub async fn a_file_change_writes_one_row_per_matching_enabled_files_trigger(repos: Repos) {
    let shop = repos.add_app("shop").await;
    let blog = repos.add_app("blog").await;
    let script = repos.add_script(shop, "on-upload").await;
    let other_script = repos.add_script(shop, "other").await;
    let blog_script = repos.add_script(blog, "b").await;
    let user = repos.add_user("ada").await.id;
    let create = |new| {
        let triggers = repos.triggers.clone();
        async move { triggers.create(new).await.unwrap() }
    };
    let all = create(files_trigger(shop, &script, user, "*", &FileOp::ALL)).await;
    let prefix = create(files_trigger(
        shop,
        &other_script,
        user,
        "avatars*",
        &[FileOp::Create, FileOp::Delete],
    ))
    .await;
    let updates = create(files_trigger(
        shop,
        &script,
        user,
        "avatars",
        &[FileOp::Update],
    ))
    .await;
    create(files_trigger(shop, &script, user, "docs", &FileOp::ALL)).await;
    let disabled = create(files_trigger(shop, &script, user, "*", &FileOp::ALL)).await;
    repos
        .triggers
        .set_enabled(disabled.id, false)
        .await
        .unwrap();
    create(files_trigger(blog, &blog_script, user, "*", &FileOp::ALL)).await;
    // Another kind on every collection: a file change is not a KV change.
    create(kv_trigger(
        shop,
        &script,
        user,
        "*",
        &[KvOp::Set, KvOp::Delete],
    ))
    .await;
    create(dead_letter_trigger_for(
        shop,
        &script,
        user,
        &[TriggerKind::Kv, TriggerKind::Files],
    ))
    .await;

    let emitter = Emitter::over(&repos, 8);
    let event = file_event(shop, "avatars", FileOp::Create, 2);
    assert_eq!(emitter.emit(&event).await, 2);
    let rows = emitter.rows().await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![all.id, prefix.id]
    );
    // Each row runs its own trigger's script.
    assert_eq!(rows[0].1, script.id.as_uuid());
    assert_eq!(rows[1].1, other_script.id.as_uuid());
    for (_, _, payload, depth, dead_letter) in &rows {
        assert_eq!(&without_id(payload), &event.payload());
        assert_eq!(*depth, 2);
        assert_eq!(*dead_letter, None);
    }
    assert_eq!(rows[0].2["kind"], "files");
    assert_eq!(rows[0].2["name"], "ada.png");
    assert_eq!(rows[0].2["op"], "create");
    assert_eq!(rows[0].2["file"]["size"], 3);

    emitter.clear().await;
    let update = file_event(shop, "avatars", FileOp::Update, 1);
    assert_eq!(emitter.emit(&update).await, 2);
    assert_eq!(
        emitter.rows().await.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![all.id, updates.id]
    );

    emitter.clear().await;
    let delete = file_event(shop, "avatars:old", FileOp::Delete, 1);
    assert_eq!(emitter.emit(&delete).await, 2);
    let rows = emitter.rows().await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![all.id, prefix.id]
    );
    assert_eq!(rows[0].2["op"], "delete");
    assert_eq!(rows[0].2["file"], Value::Null);

    // A collection only the catch-all watches; a rolled-back change writes nothing.
    emitter.clear().await;
    assert_eq!(
        emitter
            .emit(&file_event(shop, "backups", FileOp::Update, 1))
            .await,
        1
    );
    emitter.clear().await;
    emitter
        .emit_rolled_back(&file_event(shop, "avatars", FileOp::Create, 1))
        .await;
    assert!(
        emitter.rows().await.is_empty(),
        "a rolled-back event left rows"
    );
}

pub async fn an_event_no_trigger_matches_writes_nothing(repos: Repos) {
    let shop = repos.add_app("shop").await;
    let blog = repos.add_app("blog").await;
    let blog_script = repos.add_script(blog, "b").await;
    let user = repos.add_user("ada").await.id;
    repos
        .triggers
        .create(kv_trigger(blog, &blog_script, user, "*", &[KvOp::Set]))
        .await
        .unwrap();
    let emitter = Emitter::over(&repos, 8);
    // App A's events never reach app B's triggers.
    assert_eq!(
        emitter.emit(&kv_event(shop, "users", KvOp::Set, 1)).await,
        0
    );
    assert!(emitter.rows().await.is_empty());
    emitter
        .emit_rolled_back(&kv_event(blog, "users", KvOp::Set, 1))
        .await;
    assert!(
        emitter.rows().await.is_empty(),
        "a rolled-back event left rows"
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn rows_exist_only_if_the_transaction_commits(pool: PgPool) {
    let repos = Repos::postgres(pool.clone());
    let shop = repos.add_app("shop").await;
    let script = repos.add_script(shop, "s").await;
    let user = repos.add_user("ada").await.id;
    repos
        .triggers
        .create(kv_trigger(shop, &script, user, "*", &[KvOp::Set]))
        .await
        .unwrap();
    let emitter = OutboxEmitter::new(8, OutboxSignal::spawn(pool.clone()));
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen("picloud_outbox").await.unwrap();

    let event = kv_event(shop, "users", KvOp::Set, 1);
    let mut tx = PgTx::begin(&pool).await.unwrap();
    assert_eq!(emitter.emit(&mut tx, &event).await.unwrap(), 1);
    drop(tx);
    assert!(
        outbox(&pool).await.is_empty(),
        "a rolled-back event left rows"
    );
    let woken = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
    assert!(woken.is_err(), "a rolled-back event woke the dispatchers");

    let mut tx = PgTx::begin(&pool).await.unwrap();
    assert_eq!(emitter.emit(&mut tx, &event).await.unwrap(), 1);
    // Not visible, and not announced, before the commit.
    assert!(outbox(&pool).await.is_empty());
    picloud_shared::Transaction::commit(tx).await.unwrap();
    assert_eq!(outbox(&pool).await.len(), 1);
    // The commit itself takes no notification lock: the service announces afterwards.
    let woken = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
    assert!(woken.is_err(), "the transaction notified by itself");
    emitter.rows_committed();
    let woken = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
    let notification = woken.expect("no notification after the commit").unwrap();
    assert_eq!(notification.channel(), "picloud_outbox");
}

/// M6: one run can queue only so many trigger deliveries in all; past it the change that
/// would pass the budget is refused (and rolled back), other runs and admin changes go on.
pub async fn a_run_past_its_delivery_budget_is_refused(repos: Repos) {
    let shop = repos.add_app("shop").await;
    let script = repos.add_script(shop, "s").await;
    let user = repos.add_user("ada").await.id;
    for _ in 0..2 {
        repos
            .triggers
            .create(kv_trigger(shop, &script, user, "*", &[KvOp::Set]))
            .await
            .unwrap();
    }
    let emitter = Emitter::over(&repos, 8).with_deliveries_per_run(3);
    let run = kv_event(shop, "users", KvOp::Set, 1);
    emitter.try_emit(&run).await.unwrap();
    let err = emitter.try_emit(&run).await.unwrap_err();
    assert!(
        err.to_string().contains("one run may queue at most 3"),
        "{err}"
    );
    assert_eq!(
        emitter.rows().await.len(),
        2,
        "the refused change wrote nothing"
    );
    // Another run has its own budget; an admin's change (no run) is not charged.
    emitter
        .try_emit(&kv_event(shop, "users", KvOp::Set, 1))
        .await
        .unwrap();
    let admin = ServiceEvent {
        causation_id: None,
        ..run.clone()
    };
    emitter.try_emit(&admin).await.unwrap();
    emitter.try_emit(&admin).await.unwrap();
    assert_eq!(emitter.rows().await.len(), 8);
}

pub async fn an_event_past_the_depth_limit_becomes_one_unresolved_dead_letter(repos: Repos) {
    let shop = repos.add_app("shop").await;
    let script = repos.add_script(shop, "s").await;
    let user = repos.add_user("ada").await.id;
    for _ in 0..2 {
        repos
            .triggers
            .create(kv_trigger(shop, &script, user, "*", &[KvOp::Set]))
            .await
            .unwrap();
    }
    let emitter = Emitter::over(&repos, 3);

    // At the limit: still delivered.
    assert_eq!(
        emitter.emit(&kv_event(shop, "users", KvOp::Set, 3)).await,
        2
    );
    emitter.clear().await;

    // Past it: no rows, one dead letter however many triggers matched.
    let event = kv_event(shop, "users", KvOp::Set, 4);
    assert_eq!(emitter.emit(&event).await, 0);
    assert!(emitter.rows().await.is_empty());
    let letters = repos
        .dead_letters
        .list(ListDeadLetters {
            app: shop,
            unresolved_only: true,
            limit: 10,
            before: None,
        })
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.trigger_id, None);
    assert_eq!(letter.trigger_kind, TriggerKind::Kv);
    assert_eq!(letter.script_id, None);
    assert_eq!(letter.last_error, "trigger depth limit of 3 reached");
    assert_eq!(letter.event, event.payload());
    assert_eq!(letter.depth, 4);
    assert_eq!(letter.attempts, 0);
    assert_eq!(letter.resolution, None);
    assert_eq!(repos.dead_letters.count_unresolved(shop).await.unwrap(), 1);

    // The refusal is part of the caller's transaction too.
    emitter.emit_rolled_back(&event).await;
    assert_eq!(repos.dead_letters.count_unresolved(shop).await.unwrap(), 1);
}

pub async fn a_deep_event_nothing_watches_is_not_a_dead_letter(repos: Repos) {
    let shop = repos.add_app("shop").await;
    let script = repos.add_script(shop, "s").await;
    let user = repos.add_user("ada").await.id;
    repos
        .triggers
        .create(kv_trigger(shop, &script, user, "orders", &[KvOp::Set]))
        .await
        .unwrap();
    let emitter = Emitter::over(&repos, 3);
    assert_eq!(
        emitter.emit(&kv_event(shop, "users", KvOp::Set, 9)).await,
        0
    );
    assert_eq!(repos.dead_letters.count_unresolved(shop).await.unwrap(), 0);
    assert!(emitter.rows().await.is_empty());
}

pub async fn a_dead_letter_fans_out_to_the_apps_enabled_dead_letter_triggers(repos: Repos) {
    let shop = repos.add_app("shop").await;
    let blog = repos.add_app("blog").await;
    let failing = repos.add_script(shop, "failing").await;
    let handler = repos.add_script(shop, "handler").await;
    let blog_handler = repos.add_script(blog, "handler").await;
    let user = repos.add_user("ada").await.id;
    let kv = repos
        .triggers
        .create(kv_trigger(shop, &failing, user, "*", &[KvOp::Set]))
        .await
        .unwrap();
    let on_failure = repos
        .triggers
        .create(dead_letter_trigger(shop, &handler, user))
        .await
        .unwrap();
    let off = repos
        .triggers
        .create(dead_letter_trigger(shop, &handler, user))
        .await
        .unwrap();
    repos.triggers.set_enabled(off.id, false).await.unwrap();
    repos
        .triggers
        .create(dead_letter_trigger(blog, &blog_handler, user))
        .await
        .unwrap();

    let original = kv_event(shop, "users", KvOp::Set, 2).payload();
    let letter = repos
        .dead_letters
        .record(NewDeadLetter {
            app_id: shop,
            trigger_id: Some(kv.id),
            trigger_kind: TriggerKind::Kv,
            script_id: Some(failing.id),
            event: original.clone(),
            depth: 2,
            attempts: 5,
            last_error: "boom".to_owned(),
        })
        .await
        .unwrap();
    let dead_letter_event = |source_kind| ServiceEvent {
        app_id: shop,
        subject: EventSubject::DeadLetter {
            dead_letter_id: letter.id,
            source_kind,
            trigger_id: letter.trigger_id,
            script_id: letter.script_id,
            event: letter.event.clone(),
            attempts: letter.attempts,
            last_error: letter.last_error.clone(),
        },
        depth: letter.depth,
        causation_id: None,
    };
    let event = dead_letter_event(TriggerKind::Kv);
    let payload = event.payload();
    assert_eq!(
        payload,
        json!({
            "kind": "dead_letter", "dead_letter_id": letter.id, "source_kind": "kv",
            "trigger_id": kv.id, "script_id": failing.id, "event": original, "attempts": 5,
            "last_error": "boom", "app_id": shop, "depth": 2, "causation_id": null,
        })
    );

    let emitter = Emitter::over(&repos, 8);
    assert_eq!(emitter.emit(&event).await, 1);
    let rows = emitter.rows().await;
    assert_eq!(rows.len(), 1);
    let (trigger, script, event_seen, depth, dead_letter) = &rows[0];
    assert_eq!(*trigger, on_failure.id);
    assert_eq!(*script, handler.id.as_uuid());
    assert_eq!(*dead_letter, Some(letter.id.as_uuid()));
    assert_eq!(&without_id(event_seen), &payload);
    assert_eq!(*depth, 2);

    // A failed handler's own failure is never handed to a handler again.
    assert_eq!(
        emitter
            .emit(&dead_letter_event(TriggerKind::DeadLetter))
            .await,
        0
    );
    assert_eq!(emitter.rows().await.len(), 1);
    // Fanning out resolves nothing: the handler's outcome will.
    let read = repos.dead_letters.get(letter.id).await.unwrap().unwrap();
    assert_eq!(read.resolution, None::<Resolution>);
}

pub async fn a_files_dead_letter_reaches_only_handlers_of_files_dead_letters(repos: Repos) {
    let shop = repos.add_app("shop").await;
    let failing = repos.add_script(shop, "failing").await;
    let handler = repos.add_script(shop, "handler").await;
    let user = repos.add_user("ada").await.id;
    let files = repos
        .triggers
        .create(files_trigger(shop, &failing, user, "*", &FileOp::ALL))
        .await
        .unwrap();
    repos
        .triggers
        .create(dead_letter_trigger(shop, &handler, user))
        .await
        .unwrap();
    let on_files = repos
        .triggers
        .create(dead_letter_trigger_for(
            shop,
            &handler,
            user,
            &[TriggerKind::Files],
        ))
        .await
        .unwrap();
    let on_both = repos
        .triggers
        .create(dead_letter_trigger_for(
            shop,
            &handler,
            user,
            &[TriggerKind::Kv, TriggerKind::Files],
        ))
        .await
        .unwrap();

    let original = file_event(shop, "avatars", FileOp::Create, 1).payload();
    let letter = repos
        .dead_letters
        .record(NewDeadLetter {
            app_id: shop,
            trigger_id: Some(files.id),
            trigger_kind: TriggerKind::Files,
            script_id: Some(failing.id),
            event: original.clone(),
            depth: 1,
            attempts: 5,
            last_error: "boom".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(letter.trigger_kind, TriggerKind::Files);
    let event = ServiceEvent {
        app_id: shop,
        subject: EventSubject::DeadLetter {
            dead_letter_id: letter.id,
            source_kind: TriggerKind::Files,
            trigger_id: letter.trigger_id,
            script_id: letter.script_id,
            event: letter.event.clone(),
            attempts: letter.attempts,
            last_error: letter.last_error.clone(),
        },
        depth: letter.depth,
        causation_id: None,
    };
    assert_eq!(event.payload()["source_kind"], "files");

    let emitter = Emitter::over(&repos, 8);
    assert_eq!(emitter.emit(&event).await, 2);
    let rows = emitter.rows().await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![on_files.id, on_both.id]
    );
    for (_, script, payload, _, dead_letter) in &rows {
        assert_eq!(*script, handler.id.as_uuid());
        assert_eq!(*dead_letter, Some(letter.id.as_uuid()));
        assert_eq!(payload["event"], original);
    }
}

/// A row's payload without the `id` every row adds (its own id, which the tests cannot
/// know ahead), after checking it is there and is a UUID.
fn without_id(payload: &serde_json::Value) -> serde_json::Value {
    let id = payload["id"]
        .as_str()
        .unwrap_or_else(|| panic!("every row's event carries its id: {payload}"));
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let mut payload = payload.clone();
    payload.as_object_mut().unwrap().remove("id");
    payload
}
