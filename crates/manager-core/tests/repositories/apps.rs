//! The `AppRepository` suite.

use std::collections::HashMap;
use std::time::Duration;

use picloud_manager_core::apps::{AppUpdate, ListApps};
use picloud_manager_core::{App, DEFAULT_APP_ID, NewScript, RepoError};
use picloud_shared::{AppId, AppRole, AppSlug, ScriptId, ScriptLimits, ScriptName, UserId};

use crate::Repos;

pub async fn the_default_app_exists_under_its_well_known_id(repos: Repos) {
    assert_eq!(
        DEFAULT_APP_ID.to_string(),
        "00000000-0000-0000-0000-000000000001"
    );
    let app = repos.apps.get(DEFAULT_APP_ID).await.unwrap().unwrap();
    assert_eq!(app.slug, AppSlug::default_app());
    let by_slug = repos
        .apps
        .get_by_slug(&AppSlug::default_app())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_slug, app);
}

pub async fn apps_are_found_by_id_and_slug(repos: Repos) {
    let id = repos.add_app("shop").await;
    let app = repos.apps.get(id).await.unwrap().unwrap();
    assert_eq!(app.slug.as_str(), "shop");
    assert_eq!(app.name, "Test app");
    let by_slug = repos
        .apps
        .get_by_slug(&AppSlug::parse("shop").unwrap())
        .await
        .unwrap();
    assert_eq!(by_slug, Some(app));

    assert_eq!(repos.apps.get(AppId::new()).await.unwrap(), None);
    let missing = AppSlug::parse("nope").unwrap();
    assert_eq!(repos.apps.get_by_slug(&missing).await.unwrap(), None);
}

fn slug(raw: &str) -> AppSlug {
    AppSlug::parse(raw).unwrap()
}

fn list(only: Option<Vec<AppId>>, limit: u32, after: Option<&str>) -> ListApps {
    ListApps {
        only,
        limit,
        after: after.map(slug),
    }
}

fn slugs(apps: &[App]) -> Vec<&str> {
    apps.iter().map(|a| a.slug.as_str()).collect()
}

pub async fn creating_with_an_owner_makes_them_its_owner(repos: Repos) {
    let ada = repos.add_user("ada").await;
    let app = repos
        .apps
        .create(slug("shop"), "The Shop".to_owned(), Some(ada.id))
        .await
        .unwrap();
    assert_eq!(app.slug.as_str(), "shop");
    assert_eq!(app.name, "The Shop");
    assert_eq!(app.created_at, app.updated_at);
    assert_eq!(repos.apps.get(app.id).await.unwrap(), Some(app.clone()));
    let members = repos.memberships.members(app.id).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].user_id, ada.id);
    assert_eq!(members[0].role, AppRole::Owner);

    let ownerless = repos
        .apps
        .create(slug("blog"), "Blog".to_owned(), None)
        .await
        .unwrap();
    assert_eq!(
        repos.memberships.members(ownerless.id).await.unwrap(),
        vec![]
    );
}

pub async fn a_taken_slug_conflicts(repos: Repos) {
    repos
        .apps
        .create(slug("shop"), "Shop".to_owned(), None)
        .await
        .unwrap();
    let err = repos
        .apps
        .create(slug("shop"), "Other".to_owned(), None)
        .await
        .unwrap_err();
    match err {
        RepoError::Conflict { what } => assert_eq!(what, "app 'shop'"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    let err = repos
        .apps
        .create(AppSlug::default_app(), "Again".to_owned(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::Conflict { .. }), "{err:?}");
}

pub async fn a_missing_owner_is_not_found_and_leaves_no_app(repos: Repos) {
    let ghost = UserId::new();
    let err = repos
        .apps
        .create(slug("shop"), "Shop".to_owned(), Some(ghost))
        .await
        .unwrap_err();
    match err {
        RepoError::NotFound { what } => assert_eq!(what, format!("user {ghost}")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // The app insert was rolled back with the membership.
    assert_eq!(repos.apps.get_by_slug(&slug("shop")).await.unwrap(), None);
}

pub async fn lists_are_ordered_by_slug_filtered_and_paged(repos: Repos) {
    let mut ids = Vec::new();
    for s in ["zeta", "alpha", "mid"] {
        ids.push(
            repos
                .apps
                .create(slug(s), s.to_owned(), None)
                .await
                .unwrap()
                .id,
        );
    }
    let all = repos.apps.list(list(None, 10, None)).await.unwrap();
    assert_eq!(slugs(&all), ["alpha", "default", "mid", "zeta"]);

    // Keyset pages: the second starts after the first's last slug.
    let first_page = repos.apps.list(list(None, 2, None)).await.unwrap();
    assert_eq!(slugs(&first_page), ["alpha", "default"]);
    let second_page = repos
        .apps
        .list(list(None, 2, Some("default")))
        .await
        .unwrap();
    assert_eq!(slugs(&second_page), ["mid", "zeta"]);
    let past_the_end = repos.apps.list(list(None, 2, Some("zeta"))).await.unwrap();
    assert!(past_the_end.is_empty());

    // ids[0] is zeta, ids[1] alpha.
    let mine = repos
        .apps
        .list(list(Some(vec![ids[0], ids[1]]), 10, None))
        .await
        .unwrap();
    assert_eq!(slugs(&mine), ["alpha", "zeta"]);
    let mine_paged = repos
        .apps
        .list(list(Some(vec![ids[0], ids[1]]), 1, Some("alpha")))
        .await
        .unwrap();
    assert_eq!(slugs(&mine_paged), ["zeta"]);

    let none = repos.apps.list(list(Some(vec![]), 10, None)).await.unwrap();
    assert_eq!(none, vec![]);
}

pub async fn update_renames_and_refuses_a_taken_slug(repos: Repos) {
    let app = repos
        .apps
        .create(slug("shop"), "Shop".to_owned(), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let renamed = repos
        .apps
        .update(
            app.id,
            AppUpdate {
                slug: Some(slug("store")),
                name: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.slug.as_str(), "store");
    assert_eq!(renamed.name, "Shop");
    assert_eq!(renamed.created_at, app.created_at);
    assert!(renamed.updated_at > app.updated_at);
    assert_eq!(repos.apps.get_by_slug(&slug("shop")).await.unwrap(), None);
    assert_eq!(
        repos.apps.get_by_slug(&slug("store")).await.unwrap(),
        Some(renamed.clone())
    );

    let both = repos
        .apps
        .update(
            app.id,
            AppUpdate {
                slug: Some(slug("store")),
                name: Some("The Store".to_owned()),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        both.slug.as_str(),
        "store",
        "keeping its own slug is no clash"
    );
    assert_eq!(both.name, "The Store");

    let err = repos
        .apps
        .update(
            app.id,
            AppUpdate {
                slug: Some(AppSlug::default_app()),
                name: None,
            },
        )
        .await
        .unwrap_err();
    match err {
        RepoError::Conflict { what } => assert_eq!(what, "app 'default'"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(repos.apps.get(app.id).await.unwrap(), Some(both));
}

/// L5: the slug an app renamed away from stays its own, so a by-name URL cannot start
/// running another app's code; the app may take it back, and deleting it frees it.
pub async fn a_renamed_apps_old_slug_stays_reserved_for_it(repos: Repos) {
    let rename = |id: AppId, to: &str| {
        let apps = repos.apps.clone();
        let to = slug(to);
        async move {
            apps.update(
                id,
                AppUpdate {
                    slug: Some(to),
                    name: None,
                },
            )
            .await
        }
    };
    let shop = repos
        .apps
        .create(slug("shop"), "Shop".to_owned(), None)
        .await
        .unwrap();
    let other = repos
        .apps
        .create(slug("other"), "Other".to_owned(), None)
        .await
        .unwrap();
    rename(shop.id, "shop-v2").await.unwrap();
    let reserved = "a reservation of slug 'shop' for the app that used it before a rename";
    match rename(other.id, "shop").await.unwrap_err() {
        RepoError::Conflict { what } => assert_eq!(what, reserved),
        err => panic!("expected Conflict, got {err:?}"),
    }
    match repos
        .apps
        .create(slug("shop"), "Squatter".to_owned(), None)
        .await
        .unwrap_err()
    {
        RepoError::Conflict { what } => assert_eq!(what, reserved),
        err => panic!("expected Conflict, got {err:?}"),
    }
    // The app takes its old slug back; the one it left then is reserved in turn.
    rename(shop.id, "shop").await.unwrap();
    assert!(rename(other.id, "shop-v2").await.is_err());
    // Deleting the app frees every slug it held.
    repos.apps.delete(shop.id, false).await.unwrap();
    rename(other.id, "shop-v2").await.unwrap();
    rename(other.id, "shop").await.unwrap();
}

pub async fn updating_a_missing_app_or_changing_nothing_fails(repos: Repos) {
    let missing = AppId::new();
    let err = repos
        .apps
        .update(
            missing,
            AppUpdate {
                name: Some("x".to_owned()),
                slug: None,
            },
        )
        .await
        .unwrap_err();
    match err {
        RepoError::NotFound { what } => assert_eq!(what, format!("app {missing}")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let err = repos
        .apps
        .update(DEFAULT_APP_ID, AppUpdate::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::Invalid(_)), "{err:?}");
}

async fn add_script(repos: &Repos, app_id: AppId, name: &str) -> ScriptId {
    repos
        .scripts
        .create(NewScript {
            app_id,
            name: ScriptName::parse(name).unwrap(),
            source: "1".to_owned(),
            limits: ScriptLimits::default(),
            require_token: false,
        })
        .await
        .unwrap()
        .id
}

pub async fn delete_refuses_an_app_with_scripts_without_cascade(repos: Repos) {
    let app = repos
        .apps
        .create(slug("shop"), "Shop".to_owned(), None)
        .await
        .unwrap();
    let script = add_script(&repos, app.id, "checkout").await;
    let err = repos.apps.delete(app.id, false).await.unwrap_err();
    match err {
        RepoError::Conflict { what } => {
            assert_eq!(what, "a script in app 'shop'");
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(repos.apps.get(app.id).await.unwrap().is_some());
    assert!(repos.scripts.get(script).await.unwrap().is_some());

    // Without scripts, no cascade is needed.
    let empty = repos
        .apps
        .create(slug("empty"), "Empty".to_owned(), None)
        .await
        .unwrap();
    assert_eq!(repos.apps.delete(empty.id, false).await.unwrap(), vec![]);
    assert_eq!(repos.apps.get(empty.id).await.unwrap(), None);
}

pub async fn cascading_delete_returns_the_scripts_and_removes_what_belonged_to_the_app(
    repos: Repos,
) {
    let ada = repos.add_user("ada").await;
    let app = repos
        .apps
        .create(slug("shop"), "Shop".to_owned(), Some(ada.id))
        .await
        .unwrap();
    repos
        .memberships
        .set_role(DEFAULT_APP_ID, ada.id, AppRole::Viewer)
        .await
        .unwrap();
    let mut scripts = vec![
        add_script(&repos, app.id, "a").await,
        add_script(&repos, app.id, "b").await,
    ];
    scripts.sort();
    let elsewhere = add_script(&repos, DEFAULT_APP_ID, "a").await;
    let limited = crate::tokens::issue(&repos, ada.id, Some(app.id)).await;
    let unlimited = crate::tokens::issue(&repos, ada.id, None).await;

    let mut deleted = repos.apps.delete(app.id, true).await.unwrap();
    deleted.sort();
    assert_eq!(deleted, scripts);

    assert_eq!(repos.apps.get(app.id).await.unwrap(), None);
    for id in &scripts {
        assert_eq!(repos.scripts.get(*id).await.unwrap(), None);
    }
    assert!(repos.scripts.get(elsewhere).await.unwrap().is_some());
    assert_eq!(repos.memberships.members(app.id).await.unwrap(), vec![]);
    let roles = repos.memberships.roles_of(ada.id).await.unwrap();
    assert_eq!(roles, HashMap::from([(DEFAULT_APP_ID, AppRole::Viewer)]));
    assert_eq!(repos.tokens.get(limited).await.unwrap(), None);
    assert!(repos.tokens.get(unlimited).await.unwrap().is_some());
}

pub async fn deleting_a_missing_app_is_not_found(repos: Repos) {
    let missing = AppId::new();
    for cascade in [false, true] {
        let err = repos.apps.delete(missing, cascade).await.unwrap_err();
        match err {
            RepoError::NotFound { what } => assert_eq!(what, format!("app {missing}")),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
}
