//! The `ScriptRepository` suite.

use std::time::Duration;

use picloud_manager_core::{
    DEFAULT_APP_ID, ListScripts, NewScript, RepoError, ScriptSummary, ScriptUpdate,
};
use picloud_shared::{AppId, AppSlug, Script, ScriptId, ScriptLimits, ScriptName};

use crate::Repos;

fn new_script(app_id: AppId, name: &str) -> NewScript {
    NewScript {
        app_id,
        name: ScriptName::parse(name).unwrap(),
        source: format!("\"hello from {name}\""),
        limits: ScriptLimits::default(),
        require_token: false,
    }
}

async fn create(repos: &Repos, app_id: AppId, name: &str) -> Script {
    repos
        .scripts
        .create(new_script(app_id, name))
        .await
        .unwrap()
}

fn names(page: &[ScriptSummary]) -> Vec<&str> {
    page.iter().map(|s| s.name.as_str()).collect()
}

pub async fn a_created_script_reads_back_unchanged(repos: Repos) {
    let limits = ScriptLimits {
        max_operations: Some(1000),
        timeout_ms: Some(250),
        ..ScriptLimits::default()
    };
    let created = repos
        .scripts
        .create(NewScript {
            limits,
            ..new_script(DEFAULT_APP_ID, "hello")
        })
        .await
        .unwrap();
    assert_eq!(created.app_id, DEFAULT_APP_ID);
    assert_eq!(created.name.as_str(), "hello");
    assert_eq!(created.source, "\"hello from hello\"");
    assert_eq!(created.limits, limits);
    assert_eq!(created.version, 1);
    assert!(!created.require_token);
    assert_eq!(created.created_at, created.updated_at);

    let read = repos.scripts.get(created.id).await.unwrap();
    assert_eq!(read, Some(created));
    assert_eq!(repos.scripts.get(ScriptId::new()).await.unwrap(), None);
}

pub async fn creating_in_a_missing_app_is_not_found_naming_the_app(repos: Repos) {
    let missing = AppId::new();
    let err = repos
        .scripts
        .create(new_script(missing, "orphan"))
        .await
        .unwrap_err();
    match err {
        RepoError::NotFound { what } => assert_eq!(what, format!("app {missing}")),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub async fn a_duplicate_name_in_the_same_app_conflicts(repos: Repos) {
    let first = create(&repos, DEFAULT_APP_ID, "dup").await;
    let err = repos
        .scripts
        .create(new_script(DEFAULT_APP_ID, "dup"))
        .await
        .unwrap_err();
    match err {
        RepoError::Conflict { what } => assert!(what.contains("'dup'"), "{what}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    // The first script is untouched and still the only one.
    let page = repos
        .scripts
        .list(ListScripts {
            apps: None,
            limit: 10,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, first.id);
}

pub async fn the_same_name_may_be_used_in_another_app(repos: Repos) {
    let other = repos.add_app("other").await;
    let a = create(&repos, DEFAULT_APP_ID, "shared-name").await;
    let b = create(&repos, other, "shared-name").await;
    assert_ne!(a.id, b.id);
    assert_eq!(b.app_id, other);
}

pub async fn get_by_name_joins_the_app_slug(repos: Repos) {
    let other = repos.add_app("other").await;
    let in_default = create(&repos, DEFAULT_APP_ID, "greet").await;
    let in_other = create(&repos, other, "greet").await;
    let greet = ScriptName::parse("greet").unwrap();

    let found = repos
        .scripts
        .get_by_name(&AppSlug::default_app(), &greet)
        .await
        .unwrap();
    assert_eq!(found, Some(in_default));
    let found = repos
        .scripts
        .get_by_name(&AppSlug::parse("other").unwrap(), &greet)
        .await
        .unwrap();
    assert_eq!(found, Some(in_other));

    let unknown_app = AppSlug::parse("ghost").unwrap();
    assert_eq!(
        repos
            .scripts
            .get_by_name(&unknown_app, &greet)
            .await
            .unwrap(),
        None
    );
    let unknown_name = ScriptName::parse("nobody").unwrap();
    assert_eq!(
        repos
            .scripts
            .get_by_name(&AppSlug::default_app(), &unknown_name)
            .await
            .unwrap(),
        None
    );
}

pub async fn lists_are_paged_in_name_order(repos: Repos) {
    // Byte order: upper-case sorts before lower-case, '-' before digits before '_'.
    for name in ["delta", "alpha", "Zulu", "b_2", "b-1", "charlie"] {
        create(&repos, DEFAULT_APP_ID, name).await;
    }
    let page = |limit, after: Option<&ScriptSummary>| ListScripts {
        apps: None,
        limit,
        after: after.map(|s| (s.name.clone(), s.id)),
    };
    let first = repos.scripts.list(page(4, None)).await.unwrap();
    assert_eq!(names(&first), ["Zulu", "alpha", "b-1", "b_2"]);
    let second = repos.scripts.list(page(4, first.last())).await.unwrap();
    assert_eq!(names(&second), ["charlie", "delta"]);
    let beyond = repos.scripts.list(page(4, second.last())).await.unwrap();
    assert!(beyond.is_empty());
}

pub async fn lists_can_be_limited_to_one_app(repos: Repos) {
    let other = repos.add_app("other").await;
    create(&repos, DEFAULT_APP_ID, "mine").await;
    let theirs = create(&repos, other, "theirs").await;
    let page = repos
        .scripts
        .list(ListScripts {
            apps: Some(vec![other]),
            limit: 50,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, theirs.id);
    assert_eq!(page[0].app_id, other);

    let empty_app = repos.add_app("empty").await;
    let page = repos
        .scripts
        .list(ListScripts {
            apps: Some(vec![empty_app]),
            limit: 50,
            after: None,
        })
        .await
        .unwrap();
    assert!(page.is_empty());
}

pub async fn lists_can_be_limited_to_several_apps_in_one_order(repos: Repos) {
    let first = repos.add_app("first").await;
    let second = repos.add_app("second").await;
    let hidden = repos.add_app("hidden").await;
    create(&repos, second, "b").await;
    create(&repos, first, "c").await;
    create(&repos, first, "a").await;
    create(&repos, hidden, "aa").await;
    let list = |after: Option<&ScriptSummary>| ListScripts {
        apps: Some(vec![first, second]),
        limit: 2,
        after: after.map(|s| (s.name.clone(), s.id)),
    };
    let page = repos.scripts.list(list(None)).await.unwrap();
    assert_eq!(names(&page), ["a", "b"]);
    let page = repos.scripts.list(list(page.last())).await.unwrap();
    assert_eq!(names(&page), ["c"], "the hidden app's script is not listed");
}

pub async fn update_changes_given_fields_and_bumps_the_version(repos: Repos) {
    let created = create(&repos, DEFAULT_APP_ID, "evolving").await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let source_only = repos
        .scripts
        .update(
            created.id,
            ScriptUpdate {
                source: Some("40 + 2".to_owned()),
                ..ScriptUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(source_only.version, 2);
    assert_eq!(source_only.source, "40 + 2");
    assert_eq!(source_only.name, created.name);
    assert_eq!(source_only.limits, created.limits);
    assert_eq!(source_only.created_at, created.created_at);
    assert!(source_only.updated_at > created.updated_at);

    let limits = ScriptLimits {
        max_call_depth: Some(8),
        ..ScriptLimits::default()
    };
    let renamed = repos
        .scripts
        .update(
            created.id,
            ScriptUpdate {
                name: Some(ScriptName::parse("evolved").unwrap()),
                limits: Some(limits),
                source: None,
                require_token: Some(true),
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.version, 3);
    assert_eq!(renamed.name.as_str(), "evolved");
    assert_eq!(renamed.limits, limits);
    assert_eq!(renamed.source, "40 + 2");
    assert!(renamed.require_token);
    assert_eq!(repos.scripts.get(created.id).await.unwrap(), Some(renamed));

    // Keeping its own name is not a clash with itself.
    let same_name = repos
        .scripts
        .update(
            created.id,
            ScriptUpdate {
                name: Some(ScriptName::parse("evolved").unwrap()),
                ..ScriptUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(same_name.version, 4);
}

pub async fn renaming_onto_a_used_name_conflicts(repos: Repos) {
    create(&repos, DEFAULT_APP_ID, "taken").await;
    let other = create(&repos, DEFAULT_APP_ID, "free").await;
    let err = repos
        .scripts
        .update(
            other.id,
            ScriptUpdate {
                name: Some(ScriptName::parse("taken").unwrap()),
                ..ScriptUpdate::default()
            },
        )
        .await
        .unwrap_err();
    match err {
        RepoError::Conflict { what } => assert!(what.contains("'taken'"), "{what}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    // Nothing changed, not even the version.
    assert_eq!(repos.scripts.get(other.id).await.unwrap(), Some(other));
}

pub async fn updating_a_missing_script_is_not_found(repos: Repos) {
    let id = ScriptId::new();
    let err = repos
        .scripts
        .update(
            id,
            ScriptUpdate {
                source: Some("1".to_owned()),
                ..ScriptUpdate::default()
            },
        )
        .await
        .unwrap_err();
    match err {
        RepoError::NotFound { what } => assert_eq!(what, format!("script {id}")),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub async fn an_empty_update_is_invalid(repos: Repos) {
    let created = create(&repos, DEFAULT_APP_ID, "still").await;
    let err = repos
        .scripts
        .update(created.id, ScriptUpdate::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::Invalid(_)), "{err:?}");
    assert_eq!(repos.scripts.get(created.id).await.unwrap(), Some(created));
}

pub async fn delete_removes_the_script(repos: Repos) {
    let doomed = create(&repos, DEFAULT_APP_ID, "doomed").await;
    let kept = create(&repos, DEFAULT_APP_ID, "kept").await;
    repos.scripts.delete(doomed.id).await.unwrap();
    assert_eq!(repos.scripts.get(doomed.id).await.unwrap(), None);
    assert_eq!(repos.scripts.get(kept.id).await.unwrap(), Some(kept));

    let err = repos.scripts.delete(doomed.id).await.unwrap_err();
    assert!(matches!(err, RepoError::NotFound { .. }), "{err:?}");
    // The name is free again.
    create(&repos, DEFAULT_APP_ID, "doomed").await;
}
