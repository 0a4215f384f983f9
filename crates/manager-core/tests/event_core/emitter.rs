//! The outbox emitter and the dead-letter fan-out, against PostgreSQL: which rows an event
//! writes, that they exist only if the caller's transaction commits, and how events past
//! the depth limit are refused.

use std::time::Duration;

use picloud_manager_core::OutboxSignal;
use picloud_manager_core::dead_letters::{ListDeadLetters, NewDeadLetter, Resolution};
use picloud_manager_core::outbox::ServiceEventEmitter;
use picloud_manager_core::outbox::{OutboxEmitter, dead_letter_payload, fan_out_dead_letter};
use picloud_shared::{
    AppId, DeadLetterId, EventSubject, ExecutionId, KvOp, ServiceEvent, TriggerId, TriggerKind,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::{Repos, dead_letter_trigger, kv_trigger};

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

fn triggers_of(rows: &[Row]) -> Vec<TriggerId> {
    rows.iter()
        .map(|r| TriggerId::from_uuid(r.trigger_id))
        .collect()
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

/// Emits `event` in a transaction of its own that commits.
async fn emit(pool: &PgPool, emitter: &OutboxEmitter, event: &ServiceEvent) -> u64 {
    let mut tx = pool.begin().await.unwrap();
    let written = emitter.emit(&mut tx, event).await.unwrap();
    tx.commit().await.unwrap();
    written
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_set_writes_one_row_per_matching_enabled_trigger_of_the_app_only(pool: PgPool) {
    let repos = Repos::postgres(pool.clone());
    let shop = repos.add_app("shop").await;
    let blog = repos.add_app("blog").await;
    let script = repos.add_script(shop, "on-change").await;
    let other_script = repos.add_script(shop, "other").await;
    let blog_script = repos.add_script(blog, "b").await;
    let user = repos.add_user("ada").await;
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

    let emitter = OutboxEmitter::new(8, OutboxSignal::spawn(pool.clone()));
    let event = kv_event(shop, "orders:2024", KvOp::Set, 3);
    assert_eq!(emit(&pool, &emitter, &event).await, 3);

    let rows = outbox(&pool).await;
    assert_eq!(triggers_of(&rows), vec![all.id, prefix.id, exact.id]);
    for row in &rows {
        assert_eq!(row.app_id, shop.as_uuid());
        assert_eq!(row.event, event.payload());
        assert_eq!(row.depth, 3);
        assert_eq!(row.attempts, 0);
        assert_eq!(row.dead_letter_id, None);
        assert!(row.due, "a new row is due at once");
        assert!(!row.claimed);
    }
    // Each row runs its own trigger's script.
    assert_eq!(rows[1].script_id, other_script.id.as_uuid());
    assert_eq!(rows[0].script_id, script.id.as_uuid());
    assert!(!triggers_of(&rows).contains(&deletes_only.id));
    assert!(!triggers_of(&rows).contains(&blog_all.id));

    // A delete reaches the delete-watching triggers instead.
    sqlx::query("DELETE FROM outbox")
        .execute(&pool)
        .await
        .unwrap();
    let delete = kv_event(shop, "orders:2024", KvOp::Delete, 1);
    assert_eq!(emit(&pool, &emitter, &delete).await, 2);
    let rows = outbox(&pool).await;
    assert_eq!(triggers_of(&rows), vec![all.id, deletes_only.id]);
    assert_eq!(rows[0].event["op"], "delete");
    assert_eq!(rows[0].event["value"], Value::Null);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_event_no_trigger_matches_writes_nothing(pool: PgPool) {
    let repos = Repos::postgres(pool.clone());
    let shop = repos.add_app("shop").await;
    let blog = repos.add_app("blog").await;
    let blog_script = repos.add_script(blog, "b").await;
    let user = repos.add_user("ada").await;
    repos
        .triggers
        .create(kv_trigger(blog, &blog_script, user, "*", &[KvOp::Set]))
        .await
        .unwrap();
    let emitter = OutboxEmitter::new(8, OutboxSignal::spawn(pool.clone()));
    // App A's events never reach app B's triggers.
    assert_eq!(
        emit(&pool, &emitter, &kv_event(shop, "users", KvOp::Set, 1)).await,
        0
    );
    assert!(outbox(&pool).await.is_empty());
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn rows_exist_only_if_the_transaction_commits(pool: PgPool) {
    let repos = Repos::postgres(pool.clone());
    let shop = repos.add_app("shop").await;
    let script = repos.add_script(shop, "s").await;
    let user = repos.add_user("ada").await;
    repos
        .triggers
        .create(kv_trigger(shop, &script, user, "*", &[KvOp::Set]))
        .await
        .unwrap();
    let emitter = OutboxEmitter::new(8, OutboxSignal::spawn(pool.clone()));
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen("picloud_outbox").await.unwrap();

    let event = kv_event(shop, "users", KvOp::Set, 1);
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(emitter.emit(&mut tx, &event).await.unwrap(), 1);
    tx.rollback().await.unwrap();
    assert!(
        outbox(&pool).await.is_empty(),
        "a rolled-back event left rows"
    );
    let woken = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
    assert!(woken.is_err(), "a rolled-back event woke the dispatchers");

    let mut tx = pool.begin().await.unwrap();
    assert_eq!(emitter.emit(&mut tx, &event).await.unwrap(), 1);
    // Not visible, and not announced, before the commit.
    assert!(outbox(&pool).await.is_empty());
    tx.commit().await.unwrap();
    assert_eq!(outbox(&pool).await.len(), 1);
    // The commit itself takes no notification lock: the service announces afterwards.
    let woken = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
    assert!(woken.is_err(), "the transaction notified by itself");
    emitter.rows_committed();
    let woken = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
    let notification = woken.expect("no notification after the commit").unwrap();
    assert_eq!(notification.channel(), "picloud_outbox");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_event_past_the_depth_limit_becomes_one_unresolved_dead_letter(pool: PgPool) {
    let repos = Repos::postgres(pool.clone());
    let shop = repos.add_app("shop").await;
    let script = repos.add_script(shop, "s").await;
    let user = repos.add_user("ada").await;
    for _ in 0..2 {
        repos
            .triggers
            .create(kv_trigger(shop, &script, user, "*", &[KvOp::Set]))
            .await
            .unwrap();
    }
    let emitter = OutboxEmitter::new(3, OutboxSignal::spawn(pool.clone()));

    // At the limit: still delivered.
    assert_eq!(
        emit(&pool, &emitter, &kv_event(shop, "users", KvOp::Set, 3)).await,
        2
    );
    sqlx::query("DELETE FROM outbox")
        .execute(&pool)
        .await
        .unwrap();

    // Past it: no rows, one dead letter however many triggers matched.
    let event = kv_event(shop, "users", KvOp::Set, 4);
    assert_eq!(emit(&pool, &emitter, &event).await, 0);
    assert!(outbox(&pool).await.is_empty());
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
    let mut tx = pool.begin().await.unwrap();
    emitter.emit(&mut tx, &event).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(repos.dead_letters.count_unresolved(shop).await.unwrap(), 1);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_deep_event_nothing_watches_is_not_a_dead_letter(pool: PgPool) {
    let repos = Repos::postgres(pool.clone());
    let shop = repos.add_app("shop").await;
    let script = repos.add_script(shop, "s").await;
    let user = repos.add_user("ada").await;
    repos
        .triggers
        .create(kv_trigger(shop, &script, user, "orders", &[KvOp::Set]))
        .await
        .unwrap();
    let emitter = OutboxEmitter::new(3, OutboxSignal::spawn(pool.clone()));
    assert_eq!(
        emit(&pool, &emitter, &kv_event(shop, "users", KvOp::Set, 9)).await,
        0
    );
    assert_eq!(repos.dead_letters.count_unresolved(shop).await.unwrap(), 0);
    assert!(outbox(&pool).await.is_empty());
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_dead_letter_fans_out_to_the_apps_enabled_dead_letter_triggers(pool: PgPool) {
    let repos = Repos::postgres(pool.clone());
    let shop = repos.add_app("shop").await;
    let blog = repos.add_app("blog").await;
    let failing = repos.add_script(shop, "failing").await;
    let handler = repos.add_script(shop, "handler").await;
    let blog_handler = repos.add_script(blog, "handler").await;
    let user = repos.add_user("ada").await;
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
    let payload = dead_letter_payload(
        letter.id,
        letter.trigger_id,
        letter.script_id,
        &letter.event,
        letter.attempts,
        &letter.last_error,
    );
    assert_eq!(
        payload,
        json!({
            "kind": "dead_letter", "dead_letter_id": letter.id, "trigger_id": kv.id,
            "script_id": failing.id, "event": original, "attempts": 5, "last_error": "boom",
        })
    );

    let mut tx = pool.begin().await.unwrap();
    let written = fan_out_dead_letter(
        &mut tx,
        letter.id.as_uuid(),
        shop,
        TriggerKind::Kv,
        letter.depth,
        &payload,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(written, 1);
    let rows = outbox(&pool).await;
    assert_eq!(triggers_of(&rows), vec![on_failure.id]);
    assert_eq!(rows[0].script_id, handler.id.as_uuid());
    assert_eq!(rows[0].dead_letter_id, Some(letter.id.as_uuid()));
    assert_eq!(rows[0].event, payload);
    assert_eq!(rows[0].depth, 2);
    assert_eq!(rows[0].attempts, 0);

    // A failed handler's own failure is never handed to a handler again.
    let mut tx = pool.begin().await.unwrap();
    let written = fan_out_dead_letter(
        &mut tx,
        DeadLetterId::new().as_uuid(),
        shop,
        TriggerKind::DeadLetter,
        2,
        &payload,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(written, 0);
    assert_eq!(outbox(&pool).await.len(), 1);
    // Fanning out resolves nothing: the handler's outcome will.
    let read = repos.dead_letters.get(letter.id).await.unwrap().unwrap();
    assert_eq!(read.resolution, None::<Resolution>);
}
