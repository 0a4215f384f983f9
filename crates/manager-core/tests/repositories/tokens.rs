//! The `TokenRepository` suite.

use std::collections::BTreeSet;

use chrono::TimeDelta;
use picloud_manager_core::access::secrets::{GeneratedToken, generate_token, hash_token};
use picloud_manager_core::access::{NewToken, Token};
use picloud_manager_core::{DEFAULT_APP_ID, RepoError};
use picloud_shared::{AppId, CredentialKind, Scope, TokenId, UserId};

use crate::Repos;
use crate::common::now;

fn new_token(user_id: UserId, secret: &GeneratedToken) -> NewToken {
    NewToken {
        user_id,
        name: "ci deploy".to_owned(),
        kind: CredentialKind::ApiToken,
        scopes: BTreeSet::from([Scope::ScriptRead, Scope::ScriptWrite]),
        app_id: None,
        secret_hash: secret.hash,
        prefix: secret.prefix.clone(),
        expires_at: None,
        parent_id: None,
    }
}

/// Stores an API token for `user_id` (limited to `app_id` when given) and returns its id.
pub async fn issue(repos: &Repos, user_id: UserId, app_id: Option<AppId>) -> TokenId {
    let secret = generate_token();
    repos
        .tokens
        .create(NewToken {
            app_id,
            ..new_token(user_id, &secret)
        })
        .await
        .unwrap()
        .id
}

fn ids(tokens: &[Token]) -> Vec<TokenId> {
    tokens.iter().map(|t| t.id).collect()
}

pub async fn a_created_token_reads_back_and_is_found_by_its_hash(repos: Repos) {
    let ada = repos.add_user("ada").await;
    let secret = generate_token();
    let expires = now() + TimeDelta::days(30);
    let token = repos
        .tokens
        .create(NewToken {
            app_id: Some(DEFAULT_APP_ID),
            expires_at: Some(expires),
            ..new_token(ada.id, &secret)
        })
        .await
        .unwrap();
    assert_eq!(token.user_id, ada.id);
    assert_eq!(token.name, "ci deploy");
    assert_eq!(token.kind, CredentialKind::ApiToken);
    assert_eq!(
        token.scopes,
        BTreeSet::from([Scope::ScriptRead, Scope::ScriptWrite])
    );
    assert_eq!(token.app_id, Some(DEFAULT_APP_ID));
    assert_eq!(token.prefix, secret.prefix);
    assert_eq!(token.expires_at, Some(expires));
    assert_eq!(token.last_used_at, None);
    assert_eq!(token.revoked_at, None);

    assert_eq!(
        repos.tokens.get(token.id).await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(repos.tokens.get(TokenId::new()).await.unwrap(), None);
    let found = repos
        .tokens
        .find_usable(&hash_token(&secret.secret), now())
        .await
        .unwrap();
    assert_eq!(found, Some(token));
    let other = generate_token();
    assert_eq!(
        repos.tokens.find_usable(&other.hash, now()).await.unwrap(),
        None
    );
}

pub async fn expired_and_revoked_tokens_are_not_usable(repos: Repos) {
    let ada = repos.add_user("ada").await;
    let at = now();

    let expiring = generate_token();
    repos
        .tokens
        .create(NewToken {
            expires_at: Some(at + TimeDelta::minutes(5)),
            ..new_token(ada.id, &expiring)
        })
        .await
        .unwrap();
    let usable = |when| {
        let tokens = repos.tokens.clone();
        async move { tokens.find_usable(&expiring.hash, when).await.unwrap() }
    };
    assert!(usable(at).await.is_some());
    assert!(
        usable(at + TimeDelta::minutes(5) - TimeDelta::seconds(1))
            .await
            .is_some()
    );
    assert!(
        usable(at + TimeDelta::minutes(5)).await.is_none(),
        "expiry is exclusive"
    );
    assert!(usable(at + TimeDelta::days(1)).await.is_none());

    let revoked = generate_token();
    let token = repos
        .tokens
        .create(new_token(ada.id, &revoked))
        .await
        .unwrap();
    assert!(
        repos
            .tokens
            .find_usable(&revoked.hash, at)
            .await
            .unwrap()
            .is_some()
    );
    repos.tokens.revoke(token.id, at).await.unwrap();
    assert_eq!(
        repos.tokens.find_usable(&revoked.hash, at).await.unwrap(),
        None
    );
    // Still there to list, just not usable.
    let stored = repos.tokens.get(token.id).await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, Some(at));
}

pub async fn tokens_for_a_missing_user_or_app_are_not_found(repos: Repos) {
    let ada = repos.add_user("ada").await;
    let ghost = UserId::new();
    let err = repos
        .tokens
        .create(new_token(ghost, &generate_token()))
        .await
        .unwrap_err();
    match err {
        RepoError::NotFound { what } => assert_eq!(what, format!("user {ghost}")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let gone = AppId::new();
    let err = repos
        .tokens
        .create(NewToken {
            app_id: Some(gone),
            ..new_token(ada.id, &generate_token())
        })
        .await
        .unwrap_err();
    match err {
        RepoError::NotFound { what } => assert_eq!(what, format!("app {gone}")),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub async fn a_session_cannot_be_limited_to_an_app(repos: Repos) {
    let ada = repos.add_user("ada").await;
    let err = repos
        .tokens
        .create(NewToken {
            kind: CredentialKind::Session,
            scopes: Scope::ALL.into_iter().collect(),
            app_id: Some(DEFAULT_APP_ID),
            ..new_token(ada.id, &generate_token())
        })
        .await
        .unwrap_err();
    match err {
        RepoError::Invalid(message) => {
            assert!(message.contains("api_tokens_session_shape"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

pub async fn a_users_tokens_are_listed_newest_first_by_kind(repos: Repos) {
    let ada = repos.add_user("ada").await;
    let bob = repos.add_user("bob").await;
    let first = issue(&repos, ada.id, None).await;
    let second = issue(&repos, ada.id, None).await;
    let third = issue(&repos, ada.id, Some(DEFAULT_APP_ID)).await;
    issue(&repos, bob.id, None).await;
    let session = repos
        .tokens
        .create(NewToken {
            kind: CredentialKind::Session,
            name: "login".to_owned(),
            scopes: Scope::ALL.into_iter().collect(),
            ..new_token(ada.id, &generate_token())
        })
        .await
        .unwrap();
    repos.tokens.revoke(second, now()).await.unwrap();

    let api = repos
        .tokens
        .list_for_user(ada.id, CredentialKind::ApiToken)
        .await
        .unwrap();
    assert_eq!(ids(&api), [third, second, first], "revoked ones included");
    let sessions = repos
        .tokens
        .list_for_user(ada.id, CredentialKind::Session)
        .await
        .unwrap();
    assert_eq!(sessions, vec![session]);
    assert_eq!(
        repos
            .tokens
            .list_for_user(UserId::new(), CredentialKind::ApiToken)
            .await
            .unwrap(),
        vec![]
    );
}

pub async fn revoke_is_idempotent_and_keeps_the_first_time(repos: Repos) {
    let ada = repos.add_user("ada").await;
    let token = issue(&repos, ada.id, None).await;
    let first = now();
    repos.tokens.revoke(token, first).await.unwrap();
    repos
        .tokens
        .revoke(token, first + TimeDelta::hours(1))
        .await
        .unwrap();
    let stored = repos.tokens.get(token).await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, Some(first));

    let missing = TokenId::new();
    let err = repos.tokens.revoke(missing, first).await.unwrap_err();
    match err {
        RepoError::NotFound { what } => assert_eq!(what, format!("token {missing}")),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub async fn revoke_all_revokes_only_that_users_live_tokens(repos: Repos) {
    let ada = repos.add_user("ada").await;
    let bob = repos.add_user("bob").await;
    let earlier = now() - TimeDelta::hours(1);
    let already = issue(&repos, ada.id, None).await;
    repos.tokens.revoke(already, earlier).await.unwrap();
    let live = [
        issue(&repos, ada.id, None).await,
        issue(&repos, ada.id, Some(DEFAULT_APP_ID)).await,
    ];
    let bobs = issue(&repos, bob.id, None).await;

    let at = now();
    assert_eq!(
        repos.tokens.revoke_all_for_user(ada.id, at).await.unwrap(),
        2
    );
    for id in live {
        let token = repos.tokens.get(id).await.unwrap().unwrap();
        assert_eq!(token.revoked_at, Some(at));
    }
    let token = repos.tokens.get(already).await.unwrap().unwrap();
    assert_eq!(token.revoked_at, Some(earlier));
    let token = repos.tokens.get(bobs).await.unwrap().unwrap();
    assert_eq!(token.revoked_at, None);
    assert_eq!(
        repos.tokens.revoke_all_for_user(ada.id, at).await.unwrap(),
        0
    );
}

pub async fn touch_keeps_the_latest_use(repos: Repos) {
    let ada = repos.add_user("ada").await;
    let token = issue(&repos, ada.id, None).await;
    let at = now();
    repos.tokens.touch(token, at).await.unwrap();
    assert_eq!(
        repos.tokens.get(token).await.unwrap().unwrap().last_used_at,
        Some(at)
    );
    // A touch that arrives late does not move the time back.
    repos
        .tokens
        .touch(token, at - TimeDelta::minutes(1))
        .await
        .unwrap();
    assert_eq!(
        repos.tokens.get(token).await.unwrap().unwrap().last_used_at,
        Some(at)
    );
    let later = at + TimeDelta::minutes(2);
    repos.tokens.touch(token, later).await.unwrap();
    assert_eq!(
        repos.tokens.get(token).await.unwrap().unwrap().last_used_at,
        Some(later)
    );

    let missing = TokenId::new();
    let err = repos.tokens.touch(missing, at).await.unwrap_err();
    assert!(matches!(err, RepoError::NotFound { .. }), "{err:?}");
}

/// PostgreSQL only: what the table holds is the SHA-256 of the secret, and the secret
/// appears in no column.
pub async fn the_stored_hash_is_the_sha256_of_the_secret(repos: Repos) {
    let pool = repos.pool().unwrap().clone();
    let ada = repos.add_user("ada").await;
    let secret = generate_token();
    let token = repos
        .tokens
        .create(new_token(ada.id, &secret))
        .await
        .unwrap();

    let (stored_hash, prefix): (Vec<u8>, String) =
        sqlx::query_as("SELECT secret_hash, prefix FROM api_tokens WHERE id = $1")
            .bind(token.id.as_uuid())
            .fetch_one(&pool)
            .await
            .unwrap();
    let expected: [u8; 32] = {
        use sha2::Digest as _;
        sha2::Sha256::digest(secret.secret.as_bytes()).into()
    };
    assert_eq!(stored_hash, expected.to_vec());
    assert_eq!(prefix, &secret.secret[..11]);

    let rows_holding_the_secret: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_tokens t WHERE strpos(t::text, $1) > 0 \
         OR strpos(encode(t.secret_hash, 'escape'), $1) > 0",
    )
    .bind(&secret.secret)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows_holding_the_secret, 0);
}

pub async fn revoking_a_token_revokes_every_token_made_through_it(repos: Repos) {
    let ada = repos.add_user("ada").await;
    let parent = issue(&repos, ada.id, None).await;
    let child_secret = generate_token();
    let child = repos
        .tokens
        .create(NewToken {
            parent_id: Some(parent),
            ..new_token(ada.id, &child_secret)
        })
        .await
        .unwrap();
    assert_eq!(child.parent_id, Some(parent));
    let grandchild_secret = generate_token();
    repos
        .tokens
        .create(NewToken {
            parent_id: Some(child.id),
            ..new_token(ada.id, &grandchild_secret)
        })
        .await
        .unwrap();
    let sibling = issue(&repos, ada.id, None).await;

    repos.tokens.revoke(parent, now()).await.unwrap();
    for secret in [&child_secret, &grandchild_secret] {
        assert_eq!(
            repos.tokens.find_usable(&secret.hash, now()).await.unwrap(),
            None,
            "a descendant dies with its parent"
        );
    }
    let sibling = repos.tokens.get(sibling).await.unwrap().unwrap();
    assert_eq!(sibling.revoked_at, None, "an unrelated token lives on");
}
