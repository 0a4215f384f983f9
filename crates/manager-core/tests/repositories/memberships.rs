//! The `MembershipRepository` suite.

use std::collections::HashMap;

use picloud_manager_core::{DEFAULT_APP_ID, RepoError};
use picloud_shared::{AppId, AppRole, AppSlug, UserId};

use crate::Repos;

pub async fn set_role_adds_and_changes_a_role(repos: Repos) {
    let ada = repos.add_user("ada").await;
    let shop = repos.add_app("shop").await;
    assert!(repos.memberships.roles_of(ada.id).await.unwrap().is_empty());

    repos
        .memberships
        .set_role(shop, ada.id, AppRole::Viewer)
        .await
        .unwrap();
    repos
        .memberships
        .set_role(DEFAULT_APP_ID, ada.id, AppRole::Developer)
        .await
        .unwrap();
    assert_eq!(
        repos.memberships.roles_of(ada.id).await.unwrap(),
        HashMap::from([
            (shop, AppRole::Viewer),
            (DEFAULT_APP_ID, AppRole::Developer)
        ])
    );

    repos
        .memberships
        .set_role(shop, ada.id, AppRole::Owner)
        .await
        .unwrap();
    let roles = repos.memberships.roles_of(ada.id).await.unwrap();
    assert_eq!(roles.get(&shop), Some(&AppRole::Owner));
    assert_eq!(repos.memberships.members(shop).await.unwrap().len(), 1);
}

pub async fn members_are_listed_by_username(repos: Repos) {
    let shop = repos.add_app("shop").await;
    let carol = repos.add_user("carol").await;
    let ada = repos.add_user("ada").await;
    let bob = repos.add_user("bob").await;
    for (user, role) in [
        (carol.id, AppRole::Viewer),
        (ada.id, AppRole::Owner),
        (bob.id, AppRole::Developer),
    ] {
        repos.memberships.set_role(shop, user, role).await.unwrap();
    }
    let members = repos.memberships.members(shop).await.unwrap();
    let listed: Vec<(&str, UserId, AppRole)> = members
        .iter()
        .map(|m| (m.username.as_str(), m.user_id, m.role))
        .collect();
    assert_eq!(
        listed,
        [
            ("ada", ada.id, AppRole::Owner),
            ("bob", bob.id, AppRole::Developer),
            ("carol", carol.id, AppRole::Viewer),
        ]
    );
    assert_eq!(
        repos.memberships.members(DEFAULT_APP_ID).await.unwrap(),
        vec![]
    );
}

pub async fn set_role_names_a_missing_app_or_user(repos: Repos) {
    let ada = repos.add_user("ada").await;
    let missing_app = AppId::new();
    let err = repos
        .memberships
        .set_role(missing_app, ada.id, AppRole::Viewer)
        .await
        .unwrap_err();
    match err {
        RepoError::NotFound { what } => assert_eq!(what, format!("app {missing_app}")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let missing_user = UserId::new();
    let err = repos
        .memberships
        .set_role(DEFAULT_APP_ID, missing_user, AppRole::Viewer)
        .await
        .unwrap_err();
    match err {
        RepoError::NotFound { what } => assert_eq!(what, format!("user {missing_user}")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(
        repos
            .apps
            .get_by_slug(&AppSlug::default_app())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        repos.memberships.members(DEFAULT_APP_ID).await.unwrap(),
        vec![]
    );
}

pub async fn remove_takes_a_member_out(repos: Repos) {
    let ada = repos.add_user("ada").await;
    let bob = repos.add_user("bob").await;
    for user in [ada.id, bob.id] {
        repos
            .memberships
            .set_role(DEFAULT_APP_ID, user, AppRole::Developer)
            .await
            .unwrap();
    }
    repos
        .memberships
        .remove(DEFAULT_APP_ID, ada.id)
        .await
        .unwrap();
    let members = repos.memberships.members(DEFAULT_APP_ID).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].user_id, bob.id);
    assert!(repos.memberships.roles_of(ada.id).await.unwrap().is_empty());

    let err = repos
        .memberships
        .remove(DEFAULT_APP_ID, ada.id)
        .await
        .unwrap_err();
    match err {
        RepoError::NotFound { what } => {
            assert_eq!(what, format!("member {} of app {DEFAULT_APP_ID}", ada.id));
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}
