//! The `UserRepository` suite.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;

use picloud_manager_core::access::{NewUser, User};
use picloud_manager_core::{DEFAULT_APP_ID, RepoError};
use picloud_shared::{AppRole, CredentialKind, UserId, Username};

use crate::{PHC, Repos};

fn username(raw: &str) -> Username {
    Username::parse(raw).unwrap()
}

fn new_user(name: &str, password_hash: &str) -> NewUser {
    NewUser {
        username: username(name),
        password_hash: password_hash.to_owned(),
        instance_admin: false,
    }
}

fn names(page: &[User]) -> Vec<&str> {
    page.iter().map(|u| u.username.as_str()).collect()
}

pub async fn a_created_user_reads_back_by_id_and_username(repos: Repos) {
    let user = repos
        .users
        .create(NewUser {
            instance_admin: true,
            ..new_user("ada", PHC)
        })
        .await
        .unwrap();
    assert_eq!(user.username.as_str(), "ada");
    assert!(user.instance_admin);
    assert_eq!(user.created_at, user.updated_at);

    assert_eq!(repos.users.get(user.id).await.unwrap(), Some(user.clone()));
    assert_eq!(repos.users.get(UserId::new()).await.unwrap(), None);
    let (found, hash) = repos
        .users
        .credentials(&username("ada"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, user);
    assert_eq!(hash, PHC);
    assert_eq!(
        repos.users.credentials(&username("bob")).await.unwrap(),
        None
    );
}

pub async fn a_taken_username_conflicts(repos: Repos) {
    repos.add_user("ada").await;
    let err = repos.users.create(new_user("ada", PHC)).await.unwrap_err();
    match err {
        RepoError::Conflict { what } => assert_eq!(what, "user 'ada'"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(repos.users.list(10, None).await.unwrap().len(), 1);
}

pub async fn users_are_listed_by_username_and_paged(repos: Repos) {
    for name in ["carol", "ada", "bob"] {
        repos.add_user(name).await;
    }
    let all = repos.users.list(10, None).await.unwrap();
    assert_eq!(names(&all), ["ada", "bob", "carol"]);
    let page = repos.users.list(1, Some(&all[0].username)).await.unwrap();
    assert_eq!(names(&page), ["bob"]);
}

pub async fn set_password_replaces_the_hash(repos: Repos) {
    let user = repos.add_user("ada").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let new_hash = format!("{PHC}x");
    repos
        .users
        .set_password(user.id, new_hash.clone())
        .await
        .unwrap();
    let (after, hash) = repos
        .users
        .credentials(&user.username)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hash, new_hash);
    assert!(after.updated_at > user.updated_at);

    let missing = UserId::new();
    let err = repos
        .users
        .set_password(missing, PHC.to_owned())
        .await
        .unwrap_err();
    match err {
        RepoError::NotFound { what } => assert_eq!(what, format!("user {missing}")),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub async fn deleting_a_user_removes_their_tokens_and_memberships(repos: Repos) {
    let ada = repos.add_user("ada").await;
    let bob = repos.add_user("bob").await;
    repos
        .memberships
        .set_role(DEFAULT_APP_ID, ada.id, AppRole::Developer)
        .await
        .unwrap();
    repos
        .memberships
        .set_role(DEFAULT_APP_ID, bob.id, AppRole::Viewer)
        .await
        .unwrap();
    let adas = crate::tokens::issue(&repos, ada.id, None).await;
    let bobs = crate::tokens::issue(&repos, bob.id, None).await;

    repos.users.delete(ada.id).await.unwrap();

    assert_eq!(repos.users.get(ada.id).await.unwrap(), None);
    assert_eq!(repos.tokens.get(adas).await.unwrap(), None);
    assert_eq!(
        repos
            .tokens
            .list_for_user(ada.id, CredentialKind::ApiToken)
            .await
            .unwrap(),
        vec![]
    );
    assert!(repos.memberships.roles_of(ada.id).await.unwrap().is_empty());
    let members = repos.memberships.members(DEFAULT_APP_ID).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].user_id, bob.id);
    assert!(repos.tokens.get(bobs).await.unwrap().is_some());

    let err = repos.users.delete(ada.id).await.unwrap_err();
    match err {
        RepoError::NotFound { what } => assert_eq!(what, format!("user {}", ada.id)),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub async fn create_if_none_creates_only_the_first_user(repos: Repos) {
    let first = repos
        .users
        .create_if_none(NewUser {
            instance_admin: true,
            ..new_user("admin", PHC)
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.username.as_str(), "admin");
    assert!(first.instance_admin);

    let second = repos
        .users
        .create_if_none(new_user("other", PHC))
        .await
        .unwrap();
    assert_eq!(second, None);
    let all = repos.users.list(10, None).await.unwrap();
    assert_eq!(names(&all), ["admin"]);
}

pub async fn create_if_none_creates_one_user_when_racing(repos: Repos) {
    // Several rounds of eight simultaneous attempts with different usernames, so only the
    // first-user rule (not the unique index) can keep the others out.
    for round in 0..10 {
        let start = Arc::new(Barrier::new(8));
        let attempts: Vec<_> = (0..8)
            .map(|i| {
                let users = repos.users.clone();
                let start = start.clone();
                tokio::spawn(async move {
                    start.wait().await;
                    users
                        .create_if_none(new_user(&format!("admin{round}-{i}"), PHC))
                        .await
                })
            })
            .collect();
        let mut created = Vec::new();
        for attempt in attempts {
            if let Some(user) = attempt.await.unwrap().unwrap() {
                created.push(user);
            }
        }
        assert_eq!(created.len(), 1, "round {round}: {created:?}");
        assert_eq!(repos.users.list(10, None).await.unwrap().len(), 1);
        repos.users.delete(created[0].id).await.unwrap();
    }
}
