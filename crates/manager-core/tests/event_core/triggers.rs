//! The `TriggerRepository` suite.

use picloud_manager_core::RepoError;
use picloud_manager_core::triggers::kinds::{
    DeadLetterDetails, FilesDetails, FilesOps, KvDetails, KvOps, SourceKinds,
};
use picloud_manager_core::triggers::{ListTriggers, Target, TriggerDetails, TriggerUpdate};
use picloud_shared::{
    AppId, CollectionGlob, DeadLetterId, EventSubject, FileOp, KvOp, RetryPolicy, ScriptId,
    TriggerId, TriggerKind, UserId,
};
use serde_json::json;

use crate::{Repos, dead_letter_trigger, dead_letter_trigger_for, files_trigger, ids, kv_trigger};

pub async fn a_kv_trigger_reads_back_as_created(repos: Repos) {
    let app = repos.add_app("shop").await;
    let script = repos.add_script(app, "on-order").await;
    let user = repos.add_user("ada").await.id;
    let retry = RetryPolicy {
        max_attempts: 3,
        base_delay_ms: 100,
        max_delay_ms: 400,
    };
    let mut new = kv_trigger(app, &script, user, "orders:*", &[KvOp::Delete, KvOp::Set]);
    new.retry = retry;
    new.enabled = false;
    let created = repos.triggers.create(new).await.unwrap();
    assert_eq!(created.app_id, app);
    assert_eq!(created.script_id, script.id);
    assert_eq!(created.registered_by, user);
    assert!(!created.enabled);
    assert_eq!(created.retry, retry);
    assert_eq!(created.kind(), TriggerKind::Kv);
    match &created.details {
        TriggerDetails::Kv(KvDetails { collection, ops }) => {
            assert_eq!(collection.as_str(), "orders:*");
            // Always handed back in the order set, delete.
            assert_eq!(ops.as_slice(), &[KvOp::Set, KvOp::Delete]);
        }
        other => panic!("expected kv details, got {other:?}"),
    }
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(repos.triggers.get(created.id).await.unwrap(), Some(created));
    assert_eq!(repos.triggers.get(TriggerId::new()).await.unwrap(), None);
}

pub async fn a_files_trigger_reads_back_as_created_and_changes_within_its_kind(repos: Repos) {
    let app = repos.add_app("shop").await;
    let script = repos.add_script(app, "on-upload").await;
    let user = repos.add_user("ada").await.id;
    let mut new = files_trigger(
        app,
        &script,
        user,
        "avatars*",
        &[FileOp::Delete, FileOp::Create],
    );
    new.enabled = false;
    let created = repos.triggers.create(new).await.unwrap();
    assert_eq!(created.app_id, app);
    assert_eq!(created.script_id, script.id);
    assert!(!created.enabled);
    assert_eq!(created.kind(), TriggerKind::Files);
    match &created.details {
        TriggerDetails::Files(FilesDetails { collection, ops }) => {
            assert_eq!(collection.as_str(), "avatars*");
            // Always handed back in the order create, update, delete.
            assert_eq!(ops.as_slice(), &[FileOp::Create, FileOp::Delete]);
        }
        other => panic!("expected files details, got {other:?}"),
    }
    assert_eq!(
        repos.triggers.get(created.id).await.unwrap(),
        Some(created.clone())
    );
    let kv = repos
        .triggers
        .create(kv_trigger(app, &script, user, "avatars*", &[KvOp::Set]))
        .await
        .unwrap();
    let files_only = repos
        .triggers
        .list(list(None, Some(TriggerKind::Files)))
        .await
        .unwrap();
    assert_eq!(ids(&files_only), vec![created.id]);
    let all = repos.triggers.list(list(None, None)).await.unwrap();
    assert_eq!(ids(&all), vec![created.id, kv.id]);

    let details = TriggerDetails::Files(FilesDetails {
        collection: CollectionGlob::parse("docs").unwrap(),
        ops: FilesOps::new(&[FileOp::Update]).unwrap(),
    });
    let updated = repos
        .triggers
        .update(
            created.id,
            TriggerUpdate {
                enabled: None,
                retry: None,
                details: Some(details.clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.details, details);
    assert_eq!(
        repos.triggers.get(created.id).await.unwrap(),
        Some(updated.clone())
    );
    // Nor does a files trigger become a kv one, however alike their details look.
    let err = repos
        .triggers
        .update(
            created.id,
            TriggerUpdate {
                enabled: Some(true),
                retry: None,
                details: Some(kv.details.clone()),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::Invalid(_)), "{err:?}");
    assert_eq!(repos.triggers.get(created.id).await.unwrap(), Some(updated));
}

pub async fn a_dead_letter_trigger_reads_back_with_its_source_kinds(repos: Repos) {
    let app = repos.add_app("shop").await;
    let script = repos.add_script(app, "on-failure").await;
    let user = repos.add_user("ada").await.id;
    let created = repos
        .triggers
        .create(dead_letter_trigger(app, &script, user))
        .await
        .unwrap();
    assert_eq!(created.kind(), TriggerKind::DeadLetter);
    assert_eq!(
        created.details,
        TriggerDetails::DeadLetter(DeadLetterDetails {
            source_kinds: SourceKinds::new(&[TriggerKind::Kv]).unwrap()
        })
    );
    assert_eq!(repos.triggers.get(created.id).await.unwrap(), Some(created));
}

pub async fn a_script_of_another_app_or_none_is_not_found_and_nothing_is_stored(repos: Repos) {
    let shop = repos.add_app("shop").await;
    let blog = repos.add_app("blog").await;
    let blog_script = repos.add_script(blog, "post").await;
    let user = repos.add_user("ada").await.id;

    let err = repos
        .triggers
        .create(kv_trigger(shop, &blog_script, user, "*", &[KvOp::Set]))
        .await
        .unwrap_err();
    match err {
        RepoError::NotFound { what } => {
            assert_eq!(what, format!("script {} in app {shop}", blog_script.id));
        }
        other => panic!("expected NotFound, got {other:?}"),
    }

    let mut missing = kv_trigger(shop, &blog_script, user, "*", &[KvOp::Set]);
    missing.script_id = ScriptId::new();
    let err = repos.triggers.create(missing).await.unwrap_err();
    assert!(matches!(err, RepoError::NotFound { .. }), "{err:?}");

    let all = repos.triggers.list(list(None, None)).await.unwrap();
    assert!(all.is_empty(), "{all:?}");
}

pub async fn a_missing_user_is_not_found(repos: Repos) {
    let app = repos.add_app("shop").await;
    let script = repos.add_script(app, "on-order").await;
    let ghost = UserId::new();
    let err = repos
        .triggers
        .create(kv_trigger(app, &script, ghost, "*", &[KvOp::Set]))
        .await
        .unwrap_err();
    match err {
        RepoError::NotFound { what } => assert_eq!(what, format!("user {ghost}")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(
        repos
            .triggers
            .list(list(None, None))
            .await
            .unwrap()
            .is_empty()
    );
}

fn list(apps: Option<Vec<AppId>>, kind: Option<TriggerKind>) -> ListTriggers {
    ListTriggers {
        apps,
        kind,
        limit: 100,
        after: None,
    }
}

pub async fn lists_are_filtered_by_app_and_kind_and_paged_oldest_first(repos: Repos) {
    let shop = repos.add_app("shop").await;
    let blog = repos.add_app("blog").await;
    let shop_script = repos.add_script(shop, "s").await;
    let blog_script = repos.add_script(blog, "b").await;
    let user = repos.add_user("ada").await.id;
    let mut created = Vec::new();
    for new in [
        kv_trigger(shop, &shop_script, user, "a", &[KvOp::Set]),
        dead_letter_trigger(shop, &shop_script, user),
        kv_trigger(blog, &blog_script, user, "b", &[KvOp::Set]),
        kv_trigger(shop, &shop_script, user, "c", &[KvOp::Set]),
    ] {
        created.push(repos.triggers.create(new).await.unwrap());
    }

    let all = repos.triggers.list(list(None, None)).await.unwrap();
    assert_eq!(ids(&all), ids(&created));

    let shop_only = repos
        .triggers
        .list(list(Some(vec![shop]), None))
        .await
        .unwrap();
    assert_eq!(
        ids(&shop_only),
        vec![created[0].id, created[1].id, created[3].id]
    );

    let shop_kv = repos
        .triggers
        .list(list(Some(vec![shop]), Some(TriggerKind::Kv)))
        .await
        .unwrap();
    assert_eq!(ids(&shop_kv), vec![created[0].id, created[3].id]);

    let dead_letter = repos
        .triggers
        .list(list(None, Some(TriggerKind::DeadLetter)))
        .await
        .unwrap();
    assert_eq!(ids(&dead_letter), vec![created[1].id]);

    let page = repos
        .triggers
        .list(ListTriggers {
            apps: None,
            kind: None,
            limit: 2,
            after: Some((created[0].created_at, created[0].id)),
        })
        .await
        .unwrap();
    assert_eq!(ids(&page), vec![created[1].id, created[2].id]);

    let none = repos
        .triggers
        .list(list(Some(Vec::new()), None))
        .await
        .unwrap();
    assert!(none.is_empty());
}

pub async fn set_enabled_switches_a_trigger(repos: Repos) {
    let app = repos.add_app("shop").await;
    let script = repos.add_script(app, "s").await;
    let user = repos.add_user("ada").await.id;
    let created = repos
        .triggers
        .create(kv_trigger(app, &script, user, "*", &[KvOp::Set]))
        .await
        .unwrap();
    let disabled = repos.triggers.set_enabled(created.id, false).await.unwrap();
    assert!(!disabled.enabled);
    assert!(disabled.updated_at >= created.updated_at);
    assert_eq!(
        repos.triggers.get(created.id).await.unwrap(),
        Some(disabled.clone())
    );
    let enabled = repos.triggers.set_enabled(created.id, true).await.unwrap();
    assert!(enabled.enabled);
    assert_eq!(enabled.details, created.details);

    let missing = TriggerId::new();
    let err = repos.triggers.set_enabled(missing, true).await.unwrap_err();
    match err {
        RepoError::NotFound { what } => assert_eq!(what, format!("trigger {missing}")),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub async fn update_replaces_retry_and_details_of_the_same_kind_only(repos: Repos) {
    let app = repos.add_app("shop").await;
    let script = repos.add_script(app, "s").await;
    let user = repos.add_user("ada").await.id;
    let created = repos
        .triggers
        .create(kv_trigger(app, &script, user, "*", &[KvOp::Set]))
        .await
        .unwrap();
    let retry = RetryPolicy {
        max_attempts: 7,
        base_delay_ms: 100,
        max_delay_ms: 500,
    };
    let details = TriggerDetails::Kv(KvDetails {
        collection: CollectionGlob::parse("orders:*").unwrap(),
        ops: KvOps::new(&[KvOp::Delete]).unwrap(),
    });
    let updated = repos
        .triggers
        .update(
            created.id,
            TriggerUpdate {
                enabled: None,
                retry: Some(retry),
                details: Some(details.clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.retry, retry);
    assert_eq!(updated.details, details);
    assert!(updated.enabled, "what the update does not name stays");
    assert_eq!(
        repos.triggers.get(created.id).await.unwrap(),
        Some(updated.clone())
    );

    // A kind never changes: details of another kind are refused and nothing changes.
    let err = repos
        .triggers
        .update(
            created.id,
            TriggerUpdate {
                enabled: Some(false),
                retry: None,
                details: Some(TriggerDetails::DeadLetter(DeadLetterDetails {
                    source_kinds: SourceKinds::new(&[TriggerKind::Kv]).unwrap(),
                })),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::Invalid(_)), "{err:?}");
    assert_eq!(repos.triggers.get(created.id).await.unwrap(), Some(updated));
}

pub async fn delete_removes_a_trigger(repos: Repos) {
    let app = repos.add_app("shop").await;
    let script = repos.add_script(app, "s").await;
    let user = repos.add_user("ada").await.id;
    let created = repos
        .triggers
        .create(kv_trigger(app, &script, user, "*", &[KvOp::Set]))
        .await
        .unwrap();
    repos.triggers.delete(created.id).await.unwrap();
    assert_eq!(repos.triggers.get(created.id).await.unwrap(), None);
    let err = repos.triggers.delete(created.id).await.unwrap_err();
    assert!(matches!(err, RepoError::NotFound { .. }), "{err:?}");
}

fn kv_change(collection: &str, op: KvOp) -> EventSubject {
    EventSubject::Kv {
        collection: collection.to_owned(),
        key: "k".to_owned(),
        op,
        value: None,
    }
}

fn targets_of(targets: &[Target]) -> Vec<TriggerId> {
    targets.iter().map(|t| t.trigger_id).collect()
}

pub async fn targets_are_this_apps_enabled_triggers_the_kinds_matcher_accepts(repos: Repos) {
    let shop = repos.add_app("shop").await;
    let blog = repos.add_app("blog").await;
    let script = repos.add_script(shop, "s").await;
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
    let prefix = create(kv_trigger(shop, &script, user, "orders:*", &[KvOp::Set])).await;
    let exact = create(kv_trigger(shop, &script, user, "orders:2024", &[KvOp::Set])).await;
    let deletes = create(kv_trigger(shop, &script, user, "orders:*", &[KvOp::Delete])).await;
    let other = create(kv_trigger(shop, &script, user, "users", &[KvOp::Set])).await;
    let off = create(kv_trigger(shop, &script, user, "*", &[KvOp::Set])).await;
    repos.triggers.set_enabled(off.id, false).await.unwrap();
    let elsewhere = create(kv_trigger(blog, &blog_script, user, "*", &[KvOp::Set])).await;
    // Not a KV trigger at all: it sees only dead letters.
    let handler = create(dead_letter_trigger(shop, &script, user)).await;

    let set = repos
        .triggers
        .targets(shop, &kv_change("orders:2024", KvOp::Set))
        .await
        .unwrap();
    assert_eq!(targets_of(&set), vec![all.id, prefix.id, exact.id]);

    let delete = repos
        .triggers
        .targets(shop, &kv_change("orders:2024", KvOp::Delete))
        .await
        .unwrap();
    assert_eq!(targets_of(&delete), vec![all.id, deletes.id]);

    let users = repos
        .triggers
        .targets(shop, &kv_change("users", KvOp::Set))
        .await
        .unwrap();
    assert_eq!(targets_of(&users), vec![all.id, other.id]);

    let blog_set = repos
        .triggers
        .targets(blog, &kv_change("orders:2024", KvOp::Set))
        .await
        .unwrap();
    assert_eq!(targets_of(&blog_set), vec![elsewhere.id]);

    let dead_letter = EventSubject::DeadLetter {
        dead_letter_id: DeadLetterId::new(),
        source_kind: TriggerKind::Kv,
        trigger_id: Some(all.id),
        script_id: Some(script.id),
        event: json!({ "kind": "kv" }),
        attempts: 3,
        last_error: "boom".to_owned(),
    };
    let handlers = repos.triggers.targets(shop, &dead_letter).await.unwrap();
    assert_eq!(targets_of(&handlers), vec![handler.id]);
    assert_eq!(handlers[0].script_id, script.id);
    assert!(
        repos
            .triggers
            .targets(blog, &dead_letter)
            .await
            .unwrap()
            .is_empty()
    );
}

fn file_change(collection: &str, op: FileOp) -> EventSubject {
    EventSubject::Files {
        collection: collection.to_owned(),
        name: "ada.png".to_owned(),
        op,
        file: None,
    }
}

pub async fn file_changes_target_only_the_files_triggers_that_match(repos: Repos) {
    let shop = repos.add_app("shop").await;
    let blog = repos.add_app("blog").await;
    let script = repos.add_script(shop, "s").await;
    let blog_script = repos.add_script(blog, "b").await;
    let user = repos.add_user("ada").await.id;
    let create = |new| {
        let triggers = repos.triggers.clone();
        async move { triggers.create(new).await.unwrap() }
    };
    let all = create(files_trigger(shop, &script, user, "*", &FileOp::ALL)).await;
    let prefix = create(files_trigger(
        shop,
        &script,
        user,
        "avatars*",
        &[FileOp::Create, FileOp::Delete],
    ))
    .await;
    let exact = create(files_trigger(
        shop,
        &script,
        user,
        "avatars",
        &[FileOp::Update],
    ))
    .await;
    let other = create(files_trigger(shop, &script, user, "docs", &FileOp::ALL)).await;
    let off = create(files_trigger(shop, &script, user, "*", &FileOp::ALL)).await;
    repos.triggers.set_enabled(off.id, false).await.unwrap();
    let elsewhere = create(files_trigger(blog, &blog_script, user, "*", &FileOp::ALL)).await;
    // Same collection, another kind: file changes never reach it, nor KV changes the files
    // triggers.
    let kv = create(kv_trigger(
        shop,
        &script,
        user,
        "*",
        &[KvOp::Set, KvOp::Delete],
    ))
    .await;
    let kv_handler = create(dead_letter_trigger(shop, &script, user)).await;
    let files_handler = create(dead_letter_trigger_for(
        shop,
        &script,
        user,
        &[TriggerKind::Files],
    ))
    .await;

    let targets = |app, subject| {
        let triggers = repos.triggers.clone();
        async move { targets_of(&triggers.targets(app, &subject).await.unwrap()) }
    };
    assert_eq!(
        targets(shop, file_change("avatars", FileOp::Create)).await,
        vec![all.id, prefix.id]
    );
    assert_eq!(
        targets(shop, file_change("avatars", FileOp::Update)).await,
        vec![all.id, exact.id]
    );
    assert_eq!(
        targets(shop, file_change("avatars:2024", FileOp::Update)).await,
        vec![all.id]
    );
    assert_eq!(
        targets(shop, file_change("docs", FileOp::Delete)).await,
        vec![all.id, other.id]
    );
    assert_eq!(
        targets(blog, file_change("avatars", FileOp::Create)).await,
        vec![elsewhere.id]
    );
    assert_eq!(
        targets(shop, kv_change("avatars", KvOp::Set)).await,
        vec![kv.id]
    );

    // A files trigger's dead letters go to the handlers that name files, and only those.
    let dead_letter = |source_kind| EventSubject::DeadLetter {
        dead_letter_id: DeadLetterId::new(),
        source_kind,
        trigger_id: Some(all.id),
        script_id: Some(script.id),
        event: json!({ "kind": "files" }),
        attempts: 3,
        last_error: "boom".to_owned(),
    };
    assert_eq!(
        targets(shop, dead_letter(TriggerKind::Files)).await,
        vec![files_handler.id]
    );
    assert_eq!(
        targets(shop, dead_letter(TriggerKind::Kv)).await,
        vec![kv_handler.id]
    );
}

pub async fn deleting_the_script_or_the_user_deletes_their_triggers(repos: Repos) {
    let app = repos.add_app("shop").await;
    let doomed = repos.add_script(app, "doomed").await;
    let kept = repos.add_script(app, "kept").await;
    let ada = repos.add_user("ada").await.id;
    let bob = repos.add_user("bob").await.id;
    let of_script = repos
        .triggers
        .create(kv_trigger(app, &doomed, ada, "*", &[KvOp::Set]))
        .await
        .unwrap();
    let of_user = repos
        .triggers
        .create(kv_trigger(app, &kept, bob, "*", &[KvOp::Set]))
        .await
        .unwrap();
    let survivor = repos
        .triggers
        .create(kv_trigger(app, &kept, ada, "*", &[KvOp::Set]))
        .await
        .unwrap();

    repos.scripts.delete(doomed.id).await.unwrap();
    repos.users.delete(bob).await.unwrap();

    assert_eq!(repos.triggers.get(of_script.id).await.unwrap(), None);
    assert_eq!(repos.triggers.get(of_user.id).await.unwrap(), None);
    let left = repos.triggers.list(list(None, None)).await.unwrap();
    assert_eq!(ids(&left), vec![survivor.id]);
}

/// Layout E is structural: a details row can only belong to a trigger of its own kind, and
/// a trigger's kind must be a registered one.
#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn the_schema_refuses_details_of_another_kind_and_unknown_kinds(pool: sqlx::PgPool) {
    let repos = Repos::postgres(pool.clone());
    let app = repos.add_app("shop").await;
    let script = repos.add_script(app, "s").await;
    let user = repos.add_user("ada").await.id;
    let handler = repos
        .triggers
        .create(dead_letter_trigger(app, &script, user))
        .await
        .unwrap();
    let err = sqlx::query(
        "INSERT INTO kv_trigger_details (trigger_id, collection_glob, ops) \
         VALUES ($1, '*', ARRAY['set'])",
    )
    .bind(handler.id.as_uuid())
    .execute(&pool)
    .await
    .unwrap_err();
    let constraint = err.as_database_error().and_then(|e| e.constraint());
    assert_eq!(constraint, Some("kv_trigger_details_trigger_fkey"), "{err}");
    let err = sqlx::query(
        "INSERT INTO kv_trigger_details (trigger_id, kind, collection_glob, ops) \
         VALUES ($1, 'dead_letter', '*', ARRAY['set'])",
    )
    .bind(handler.id.as_uuid())
    .execute(&pool)
    .await
    .unwrap_err();
    let constraint = err.as_database_error().and_then(|e| e.constraint());
    assert_eq!(constraint, Some("kv_trigger_details_kind_check"), "{err}");

    let err = sqlx::query(
        "INSERT INTO triggers (id, app_id, kind, script_id, registered_by_principal, \
                               max_attempts, backoff_base_ms, backoff_max_ms) \
         VALUES ($1, $2, 'cron', $3, $4, 1, 0, 0)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(app.as_uuid())
    .bind(script.id.as_uuid())
    .bind(user.as_uuid())
    .execute(&pool)
    .await
    .unwrap_err();
    let constraint = err.as_database_error().and_then(|e| e.constraint());
    assert_eq!(constraint, Some("triggers_kind_fkey"), "{err}");
    // Nor can a trigger change kind under its details.
    let err = sqlx::query("UPDATE triggers SET kind = 'kv' WHERE id = $1")
        .bind(handler.id.as_uuid())
        .execute(&pool)
        .await
        .unwrap_err();
    let constraint = err.as_database_error().and_then(|e| e.constraint());
    assert_eq!(
        constraint,
        Some("dead_letter_trigger_details_trigger_fkey"),
        "{err}"
    );
}

/// The files kind's table holds the same structural guarantees: its rows belong to files
/// triggers only, and its ops are never empty nor one of another kind's.
#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn the_schema_refuses_files_details_of_another_kind_and_unknown_ops(pool: sqlx::PgPool) {
    let repos = Repos::postgres(pool.clone());
    let app = repos.add_app("shop").await;
    let script = repos.add_script(app, "s").await;
    let user = repos.add_user("ada").await.id;
    let kv = repos
        .triggers
        .create(kv_trigger(app, &script, user, "*", &[KvOp::Set]))
        .await
        .unwrap();
    let files = repos
        .triggers
        .create(files_trigger(app, &script, user, "*", &FileOp::ALL))
        .await
        .unwrap();
    let constraint_of = |err: sqlx::Error| {
        err.as_database_error()
            .and_then(|e| e.constraint())
            .map(str::to_owned)
    };
    let err = sqlx::query(
        "INSERT INTO files_trigger_details (trigger_id, collection_glob, ops) \
         VALUES ($1, '*', ARRAY['create'])",
    )
    .bind(kv.id.as_uuid())
    .execute(&pool)
    .await
    .unwrap_err();
    assert_eq!(
        constraint_of(err).as_deref(),
        Some("files_trigger_details_trigger_fkey")
    );
    for ops in [vec![], vec!["set"], vec!["create", "upsert"]] {
        let err = sqlx::query("UPDATE files_trigger_details SET ops = $2 WHERE trigger_id = $1")
            .bind(files.id.as_uuid())
            .bind(&ops)
            .execute(&pool)
            .await
            .unwrap_err();
        assert_eq!(
            constraint_of(err).as_deref(),
            Some("files_trigger_details_ops_check"),
            "{ops:?}"
        );
    }
    // The kv table refuses a files trigger's details just the same.
    let err = sqlx::query(
        "INSERT INTO kv_trigger_details (trigger_id, collection_glob, ops) \
         VALUES ($1, '*', ARRAY['set'])",
    )
    .bind(files.id.as_uuid())
    .execute(&pool)
    .await
    .unwrap_err();
    assert_eq!(
        constraint_of(err).as_deref(),
        Some("kv_trigger_details_trigger_fkey")
    );
}
