//! Dead letters through the API: the list, the badge, replay and ignore.

use axum::http::{Method, StatusCode};
use picloud_manager_core::dead_letters::PgDeadLetterRepository;
use picloud_manager_core::dead_letters::{DeadLetter, DeadLetterRepository, NewDeadLetter};
use picloud_manager_core::outbox::OutboxSignal;
use picloud_shared::{AppId, AppRole, Scope, ScriptId, TriggerId, TriggerKind};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{TestApp, script_id};

/// App `shop` with a script, a KV trigger on it, and a way to record dead letters.
struct Shop {
    app: TestApp,
    id: AppId,
    script: ScriptId,
    trigger: TriggerId,
    repo: PgDeadLetterRepository,
    pool: PgPool,
}

async fn shop(pool: PgPool) -> Shop {
    let app = TestApp::new(pool.clone()).await;
    let id = app.add_app("shop").await;
    let script = script_id(&app.create_in("shop", "on-order", "1").await);
    let trigger = app
        .json(
            Method::POST,
            "/api/admin/triggers",
            &json!({
                "app_id": app.app_id("shop").await, "script_name": "on-order",
                "details": { "kind": "kv", "collection": "orders" },
            }),
        )
        .await;
    assert_eq!(trigger.status, StatusCode::CREATED, "{}", trigger.body);
    let trigger = trigger.body["id"].as_str().unwrap().parse().unwrap();
    Shop {
        app,
        id,
        script,
        trigger,
        repo: PgDeadLetterRepository::new(pool.clone(), OutboxSignal::spawn(pool.clone())),
        pool,
    }
}

impl Shop {
    async fn failed(&self, key: &str) -> DeadLetter {
        self.repo
            .record(NewDeadLetter {
                app_id: self.id,
                trigger_id: Some(self.trigger),
                trigger_kind: TriggerKind::Kv,
                script_id: Some(self.script),
                event: json!({ "kind": "kv", "collection": "orders", "key": key, "op": "set" }),
                depth: 1,
                attempts: 5,
                last_error: format!("could not ship {key}"),
            })
            .await
            .unwrap()
    }

    async fn badge(&self) -> Value {
        let reply = self
            .app
            .get(&format!("/api/admin/apps/{}/dead-letters/count", self.id))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["unresolved"].clone()
    }

    async fn act(&self, id: impl std::fmt::Display, action: &str) -> crate::Reply {
        self.app
            .json(
                Method::POST,
                &format!("/api/admin/dead-letters/{id}/{action}"),
                &json!({}),
            )
            .await
    }

    async fn outbox(&self) -> Vec<(uuid::Uuid, Value, i32)> {
        sqlx::query_as("SELECT trigger_id, event, attempts FROM outbox ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn dead_letters_are_listed_newest_first_with_the_unresolved_badge(pool: PgPool) {
    let s = shop(pool).await;
    let first = s.failed("a").await;
    let second = s.failed("b").await;
    let third = s.failed("c").await;
    assert_eq!(s.badge().await, 3);
    assert_eq!(s.act(second.id, "ignore").await.status, StatusCode::OK);
    assert_eq!(s.badge().await, 2);

    let uri = format!("/api/admin/apps/{}/dead-letters", s.id);
    let all = s.app.get(&uri).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(
        ids(&all.body),
        [third.id, second.id, first.id].map(|id| id.to_string())
    );
    let shown = &all.body["items"][0];
    assert_eq!(shown["trigger_id"], s.trigger.to_string());
    assert_eq!(shown["trigger_kind"], "kv");
    assert_eq!(shown["script_id"], s.script.to_string());
    assert_eq!(shown["event"]["key"], "c");
    assert_eq!(shown["attempts"], 5);
    assert_eq!(shown["last_error"], "could not ship c");
    assert_eq!(shown["resolution"], Value::Null);
    assert_eq!(all.body["items"][1]["resolution"], "ignored");
    assert!(all.body.get("next_cursor").is_none(), "{}", all.body);

    let open = s.app.get(&format!("{uri}?unresolved=true")).await;
    assert_eq!(
        ids(&open.body),
        [third.id, first.id].map(|id| id.to_string())
    );

    let page = s.app.get(&format!("{uri}?limit=2")).await;
    assert_eq!(
        ids(&page.body),
        [third.id, second.id].map(|id| id.to_string())
    );
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let next = s.app.get(&format!("{uri}?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&next.body), [first.id.to_string()]);
    assert!(next.body.get("next_cursor").is_none(), "{}", next.body);

    let bad = s.app.get(&format!("{uri}?cursor={}", s.trigger)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.code(), "invalid_query");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn replay_enqueues_the_event_again_once(pool: PgPool) {
    let s = shop(pool).await;
    let letter = s.failed("a").await;
    let reply = s.act(letter.id, "replay").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["resolution"], "replayed");
    assert!(reply.body["resolved_at"].is_string(), "{}", reply.body);
    assert_eq!(s.badge().await, 0);
    assert_eq!(
        s.outbox().await,
        vec![(s.trigger.as_uuid(), letter.event.clone(), 0)]
    );

    for action in ["replay", "ignore"] {
        let again = s.act(letter.id, action).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
        assert_eq!(again.code(), "already_resolved");
        assert_eq!(
            again.message(),
            format!("dead letter {} is already resolved (replayed)", letter.id)
        );
    }
    assert_eq!(s.outbox().await.len(), 1);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_dead_letter_without_its_trigger_can_be_ignored_but_not_replayed(pool: PgPool) {
    let s = shop(pool).await;
    let letter = s.failed("a").await;
    let deleted = s
        .app
        .delete(&format!("/api/admin/triggers/{}", s.trigger))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);

    let reply = s.act(letter.id, "replay").await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(reply.code(), "trigger_gone");
    assert_eq!(s.badge().await, 1);

    let reply = s.act(letter.id, "ignore").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["resolution"], "ignored");
    assert_eq!(reply.body["trigger_id"], Value::Null);
    assert_eq!(s.badge().await, 0);
    assert!(s.outbox().await.is_empty());
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn another_apps_dead_letters_are_hidden(pool: PgPool) {
    let s = shop(pool).await;
    let letter = s.failed("a").await;
    let other = s.app.add_app("other").await;
    let outsider = s
        .app
        .user_with_role("outsider", other, AppRole::Owner)
        .await;
    let session = s.app.session(outsider.id).await;
    let caller = s.app.caller(&session);
    for reply in [
        caller
            .json(
                Method::POST,
                &format!("/api/admin/dead-letters/{}/replay", letter.id),
                &json!({}),
            )
            .await,
        caller
            .json(
                Method::POST,
                &format!("/api/admin/dead-letters/{}/ignore", letter.id),
                &json!({}),
            )
            .await,
    ] {
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
        assert_eq!(
            reply.message(),
            format!("dead letter {} not found", letter.id)
        );
    }
    let list = caller
        .get(&format!("/api/admin/apps/{}/dead-letters", s.id))
        .await;
    assert_eq!(list.status, StatusCode::NOT_FOUND);
    assert_eq!(s.badge().await, 1);

    // A viewer of the shop sees the dead letters but may not act on them.
    let viewer = s.app.user_with_role("viewer", s.id, AppRole::Viewer).await;
    let session = s.app.session(viewer.id).await;
    let viewer = s.app.caller(&session);
    let list = viewer
        .get(&format!("/api/admin/apps/{}/dead-letters", s.id))
        .await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(ids(&list.body), [letter.id.to_string()]);
    let refused = viewer
        .json(
            Method::POST,
            &format!("/api/admin/dead-letters/{}/ignore", letter.id),
            &json!({}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(s.badge().await, 1);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn showing_a_dead_letters_event_needs_data_read(pool: PgPool) {
    // A dead letter carries the failed event and the value it changed, so a token that may
    // not read the app's data may count dead letters but not see or act on them.
    let s = shop(pool).await;
    let letter = s.failed("a").await;
    let owner = s.app.user_with_role("owner", s.id, AppRole::Owner).await;
    let list = format!("/api/admin/apps/{}/dead-letters", s.id);
    let ignore = format!("/api/admin/dead-letters/{}/ignore", letter.id);

    let no_data = s
        .app
        .token(
            owner.id,
            &[Scope::ScriptRead, Scope::TriggersManage],
            Some(s.id),
        )
        .await;
    let caller = s.app.caller(&no_data);
    let reply = caller.get(&list).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert!(reply.message().contains("data:read"), "{}", reply.message());
    let reply = caller.json(Method::POST, &ignore, &json!({})).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert!(reply.message().contains("data:read"), "{}", reply.message());
    let count = caller
        .get(&format!("/api/admin/apps/{}/dead-letters/count", s.id))
        .await;
    assert_eq!(count.status, StatusCode::OK, "{}", count.body);
    assert_eq!(count.body["unresolved"], 1);

    let with_data = s
        .app
        .token(
            owner.id,
            &[Scope::ScriptRead, Scope::TriggersManage, Scope::DataRead],
            Some(s.id),
        )
        .await;
    let caller = s.app.caller(&with_data);
    let reply = caller.get(&list).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(ids(&reply.body), [letter.id.to_string()]);
    let reply = caller.json(Method::POST, &ignore, &json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(s.badge().await, 0);
}
