//! Bearer tokens to principals: the [`Authenticator`] every access check starts from.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use picloud_shared::{
    AuthError, Authenticator, Credential, CredentialKind, Principal, Scope, TokenId,
};

use crate::access::secrets::{hash_token, is_well_formed_token};
use crate::error_chain;
use crate::{
    access::{MembershipRepository, TokenRepository, UserRepository},
    repository::RepoError,
};

/// Authenticates bearer tokens (login sessions and API tokens) against the token, user
/// and membership repositories.
///
/// Nothing that grants access is cached between requests: a revoked token, a removed
/// member or a deleted user is refused on the very next request. What is kept is the time
/// of each token's last recorded use (its `last_used_at` is written at most once per
/// [`Self::TOUCH_INTERVAL`], in the background, so the hot path does not wait for a
/// write) and, for a minute, the hashes of tokens that were refused: a refused secret
/// never becomes valid (a new token has a new secret), so asking the database again would
/// be work for nothing (review L6). At most [`Self::MAX_CONCURRENT_LOOKUPS`] tokens are
/// looked up at once, so a flood of made-up tokens costs a bounded share of the pool.
pub struct TokenAuthenticator {
    tokens: Arc<dyn TokenRepository>,
    users: Arc<dyn UserRepository>,
    memberships: Arc<dyn MembershipRepository>,
    touch_interval: Duration,
    last_touch: Mutex<HashMap<TokenId, Instant>>,
    refused: Mutex<HashMap<[u8; 32], Instant>>,
    lookups: tokio::sync::Semaphore,
}

impl fmt::Debug for TokenAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAuthenticator")
            .field("touch_interval", &self.touch_interval)
            .finish_non_exhaustive()
    }
}

/// Tokens remembered as recently touched before stale entries are swept.
const TOUCH_MAP_SWEEP_AT: usize = 10_000;

/// Refused token hashes remembered at most (32 bytes and an instant each).
const REFUSED_CAPACITY: usize = 4096;

/// How long a refused token's hash is remembered.
const REFUSED_FOR: Duration = Duration::from_secs(60);

impl TokenAuthenticator {
    /// How often a token's `last_used_at` is written at most.
    pub const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

    /// Most token lookups in the database at once.
    pub const MAX_CONCURRENT_LOOKUPS: usize = 4;

    /// An authenticator over the three repositories.
    pub fn new(
        tokens: Arc<dyn TokenRepository>,
        users: Arc<dyn UserRepository>,
        memberships: Arc<dyn MembershipRepository>,
    ) -> Self {
        Self {
            tokens,
            users,
            memberships,
            touch_interval: Self::TOUCH_INTERVAL,
            last_touch: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            lookups: tokio::sync::Semaphore::new(Self::MAX_CONCURRENT_LOOKUPS),
        }
    }

    /// Whether `hash` was refused within the last [`REFUSED_FOR`].
    fn recently_refused(&self, hash: &[u8; 32]) -> bool {
        let refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        refused
            .get(hash)
            .is_some_and(|at| at.elapsed() < REFUSED_FOR)
    }

    /// Remembers `hash` as refused, keeping the memory bounded: expired entries go first,
    /// and when every entry is fresh the oldest memory is given up wholesale.
    fn remember_refused(&self, hash: [u8; 32]) {
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        if refused.len() >= REFUSED_CAPACITY {
            refused.retain(|_, at| at.elapsed() < REFUSED_FOR);
            if refused.len() >= REFUSED_CAPACITY {
                refused.clear();
            }
        }
        refused.insert(hash, Instant::now());
    }

    /// The same, writing `last_used_at` at most once per `interval` (tests use a short one).
    pub fn with_touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval = interval;
        self
    }

    /// Whether this use of `token` should be recorded, noting it as recorded if so.
    fn due_for_touch(&self, token: TokenId) -> bool {
        let now = Instant::now();
        // The map only throttles writes: one left by a panicking thread is still usable.
        let mut last = self
            .last_touch
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last
            .get(&token)
            .is_some_and(|at| now.duration_since(*at) < self.touch_interval)
        {
            return false;
        }
        if last.len() >= TOUCH_MAP_SWEEP_AT {
            let interval = self.touch_interval;
            last.retain(|_, at| now.duration_since(*at) < interval);
        }
        last.insert(token, now);
        true
    }

    /// Records the use of `token` in the background when it is due.
    fn touch(&self, token: TokenId) {
        if !self.due_for_touch(token) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let tokens = Arc::clone(&self.tokens);
        runtime.spawn(async move {
            if let Err(err) = tokens.touch(token, Utc::now()).await {
                // Losing a last-used time is harmless; say so once and move on.
                tracing::warn!(token_id = %token, error = %error_chain(&err), "could not record token use");
            }
        });
    }
}

fn unavailable(err: &RepoError) -> AuthError {
    AuthError::Unavailable(error_chain(err))
}

#[async_trait]
impl Authenticator for TokenAuthenticator {
    // The token is a secret: it must never reach a span or a log line.
    #[tracing::instrument(skip_all)]
    async fn authenticate(&self, bearer_token: &str) -> Result<Principal, AuthError> {
        if !is_well_formed_token(bearer_token) {
            return Err(AuthError::Invalid);
        }
        let hash = hash_token(bearer_token);
        if self.recently_refused(&hash) {
            return Err(AuthError::Invalid);
        }
        let _lookup = self
            .lookups
            .acquire()
            .await
            .map_err(|_| AuthError::Unavailable("the authenticator is shut down".to_owned()))?;
        let Some(token) = self
            .tokens
            .find_usable(&hash, Utc::now())
            .await
            .map_err(|e| unavailable(&e))?
        else {
            self.remember_refused(hash);
            return Err(AuthError::Invalid);
        };
        // A user deleted between the two reads takes their tokens with them.
        let user = self
            .users
            .get(token.user_id)
            .await
            .map_err(|e| unavailable(&e))?
            .ok_or(AuthError::Invalid)?;
        let roles = self
            .memberships
            .roles_of(user.id)
            .await
            .map_err(|e| unavailable(&e))?;
        let (scopes, app_restriction) = match token.kind {
            // A login session is the user themself: every scope, every app they belong to.
            CredentialKind::Session => (Scope::ALL.into_iter().collect::<BTreeSet<_>>(), None),
            CredentialKind::ApiToken => (token.scopes, token.app_id),
        };
        self.touch(token.id);
        Ok(Principal {
            user_id: user.id,
            username: user.username,
            instance_admin: user.instance_admin,
            roles,
            credential: Credential::Token {
                kind: token.kind,
                token_id: token.id,
            },
            scopes,
            app_restriction,
            token_name: Some(token.name),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::{DateTime, Duration as TimeDelta};
    use picloud_shared::{AppId, AppRole, Capability, UserId, Username};
    use picloud_testkit::PHC;

    use super::*;
    use crate::access::secrets::{GeneratedToken, generate_token};
    use crate::memory::InMemoryRepositories;
    use crate::{
        access::{NewToken, NewUser, Token},
        apps::AppRepository,
        repository::RepoResult,
    };

    /// Counts touches and can fail lookups, delegating the rest.
    struct Probe {
        inner: Arc<dyn TokenRepository>,
        touches: AtomicUsize,
        lookups: AtomicUsize,
        failing: bool,
        touched: tokio::sync::Notify,
    }

    #[async_trait]
    impl TokenRepository for Probe {
        async fn create(&self, token: NewToken) -> RepoResult<Token> {
            self.inner.create(token).await
        }
        async fn find_usable(
            &self,
            secret_hash: &[u8; 32],
            now: DateTime<Utc>,
        ) -> RepoResult<Option<Token>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if self.failing {
                return Err(RepoError::Internal("disk on fire".into()));
            }
            self.inner.find_usable(secret_hash, now).await
        }
        async fn get(&self, id: TokenId) -> RepoResult<Option<Token>> {
            self.inner.get(id).await
        }
        async fn list_for_user(
            &self,
            user_id: UserId,
            kind: CredentialKind,
        ) -> RepoResult<Vec<Token>> {
            self.inner.list_for_user(user_id, kind).await
        }
        async fn revoke(&self, id: TokenId, now: DateTime<Utc>) -> RepoResult<()> {
            self.inner.revoke(id, now).await
        }
        async fn revoke_all_for_user(
            &self,
            user_id: UserId,
            now: DateTime<Utc>,
        ) -> RepoResult<u64> {
            self.inner.revoke_all_for_user(user_id, now).await
        }
        async fn touch(&self, id: TokenId, now: DateTime<Utc>) -> RepoResult<()> {
            let done = self.inner.touch(id, now).await;
            self.touches.fetch_add(1, Ordering::SeqCst);
            self.touched.notify_one();
            done
        }
    }

    struct Fixture {
        repos: InMemoryRepositories,
        probe: Arc<Probe>,
        auth: TokenAuthenticator,
        user: UserId,
        app: AppId,
    }

    async fn fixture(failing: bool) -> Fixture {
        let repos = InMemoryRepositories::new();
        let user = repos
            .users
            .create(NewUser {
                username: Username::parse("ada").unwrap(),
                password_hash: PHC.to_owned(),
                instance_admin: false,
            })
            .await
            .unwrap();
        let app = repos
            .apps
            .create("shop".parse().unwrap(), "Shop".to_owned(), Some(user.id))
            .await
            .unwrap();
        let probe = Arc::new(Probe {
            inner: repos.tokens.clone(),
            touches: AtomicUsize::new(0),
            lookups: AtomicUsize::new(0),
            failing,
            touched: tokio::sync::Notify::new(),
        });
        let auth = TokenAuthenticator::new(
            probe.clone(),
            repos.users.clone(),
            repos.memberships.clone(),
        );
        Fixture {
            repos,
            probe,
            auth,
            user: user.id,
            app: app.id,
        }
    }

    impl Fixture {
        async fn issue(
            &self,
            kind: CredentialKind,
            scopes: &[Scope],
            app_id: Option<AppId>,
            expires_at: Option<DateTime<Utc>>,
        ) -> (GeneratedToken, Token) {
            let secret = generate_token();
            let token = self
                .repos
                .tokens
                .create(NewToken {
                    user_id: self.user,
                    name: "test".to_owned(),
                    kind,
                    scopes: scopes.iter().copied().collect(),
                    app_id,
                    secret_hash: secret.hash,
                    prefix: secret.prefix.clone(),
                    expires_at,
                    parent_id: None,
                })
                .await
                .unwrap();
            (secret, token)
        }

        async fn wait_for_touches(&self, expected: usize) {
            tokio::time::timeout(Duration::from_secs(5), async {
                while self.probe.touches.load(Ordering::SeqCst) < expected {
                    self.probe.touched.notified().await;
                }
            })
            .await
            .unwrap();
        }
    }

    #[tokio::test]
    async fn a_session_carries_every_scope_and_the_users_roles() {
        let f = fixture(false).await;
        let (secret, token) = f
            .issue(CredentialKind::Session, &Scope::ALL, None, None)
            .await;
        let principal = f.auth.authenticate(&secret.secret).await.unwrap();
        assert_eq!(principal.user_id, f.user);
        assert_eq!(principal.username.as_str(), "ada");
        assert_eq!(
            principal.credential,
            Credential::Token {
                kind: CredentialKind::Session,
                token_id: token.id
            }
        );
        assert_eq!(principal.scopes, Scope::ALL.into_iter().collect());
        assert_eq!(principal.app_restriction, None);
        assert!(!principal.instance_admin);
        assert_eq!(principal.roles.get(&f.app), Some(&AppRole::Owner));
        assert_eq!(principal.authorize(&Capability::AppAdmin(f.app)), Ok(()));
    }

    #[tokio::test]
    async fn an_api_token_carries_its_own_scopes_and_app_restriction() {
        let f = fixture(false).await;
        let (secret, _) = f
            .issue(
                CredentialKind::ApiToken,
                &[Scope::ScriptRead],
                Some(f.app),
                None,
            )
            .await;
        let principal = f.auth.authenticate(&secret.secret).await.unwrap();
        assert_eq!(
            principal.credential.token_kind(),
            Some(CredentialKind::ApiToken)
        );
        assert_eq!(principal.scopes, BTreeSet::from([Scope::ScriptRead]));
        assert_eq!(principal.app_restriction, Some(f.app));
        assert_eq!(
            principal.authorize(&Capability::AppScriptsRead(f.app)),
            Ok(())
        );
        assert!(
            principal
                .authorize(&Capability::AppScriptsWrite(f.app))
                .is_err(),
            "the owner's token without script:write cannot write"
        );
    }

    #[tokio::test]
    async fn unknown_malformed_expired_and_revoked_tokens_are_invalid() {
        let f = fixture(false).await;
        assert_eq!(f.auth.authenticate("").await, Err(AuthError::Invalid));
        assert_eq!(
            f.auth.authenticate("pc_short").await,
            Err(AuthError::Invalid)
        );
        let unknown = generate_token();
        assert_eq!(
            f.auth.authenticate(&unknown.secret).await,
            Err(AuthError::Invalid)
        );

        let past = Utc::now() - TimeDelta::seconds(1);
        let (expired, _) = f
            .issue(CredentialKind::ApiToken, &Scope::ALL, None, Some(past))
            .await;
        assert_eq!(
            f.auth.authenticate(&expired.secret).await,
            Err(AuthError::Invalid)
        );

        let (revoked, token) = f
            .issue(CredentialKind::ApiToken, &Scope::ALL, None, None)
            .await;
        assert!(f.auth.authenticate(&revoked.secret).await.is_ok());
        f.repos.tokens.revoke(token.id, Utc::now()).await.unwrap();
        assert_eq!(
            f.auth.authenticate(&revoked.secret).await,
            Err(AuthError::Invalid)
        );
    }

    #[tokio::test]
    async fn a_deleted_users_token_is_invalid() {
        let f = fixture(false).await;
        let (secret, _) = f
            .issue(CredentialKind::Session, &Scope::ALL, None, None)
            .await;
        f.repos.users.delete(f.user).await.unwrap();
        assert_eq!(
            f.auth.authenticate(&secret.secret).await,
            Err(AuthError::Invalid)
        );
    }

    #[tokio::test]
    async fn a_store_failure_is_unavailable_not_invalid() {
        let f = fixture(true).await;
        let (secret, _) = f
            .issue(CredentialKind::Session, &Scope::ALL, None, None)
            .await;
        match f.auth.authenticate(&secret.secret).await {
            Err(AuthError::Unavailable(cause)) => {
                assert!(cause.contains("disk on fire"), "{cause}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn use_is_recorded_at_most_once_per_interval() {
        let f = fixture(false).await;
        let (secret, token) = f
            .issue(CredentialKind::ApiToken, &Scope::ALL, None, None)
            .await;
        for _ in 0..5 {
            f.auth.authenticate(&secret.secret).await.unwrap();
        }
        f.wait_for_touches(1).await;
        // Give a wrongly spawned second touch the chance to land before counting.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(f.probe.touches.load(Ordering::SeqCst), 1);
        let stored = f.repos.tokens.get(token.id).await.unwrap().unwrap();
        assert!(stored.last_used_at.is_some());
    }

    #[tokio::test]
    async fn use_is_recorded_again_once_the_interval_has_passed() {
        let mut f = fixture(false).await;
        f.auth = TokenAuthenticator::new(
            f.probe.clone(),
            f.repos.users.clone(),
            f.repos.memberships.clone(),
        )
        .with_touch_interval(Duration::ZERO);
        let (secret, _) = f
            .issue(CredentialKind::ApiToken, &Scope::ALL, None, None)
            .await;
        for _ in 0..3 {
            f.auth.authenticate(&secret.secret).await.unwrap();
        }
        f.wait_for_touches(3).await;
        assert_eq!(f.probe.touches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_token_is_not_looked_up_again() {
        let f = fixture(false).await;
        let bogus = generate_token().secret;
        for _ in 0..5 {
            assert_eq!(f.auth.authenticate(&bogus).await, Err(AuthError::Invalid));
        }
        assert_eq!(
            f.probe.lookups.load(Ordering::SeqCst),
            1,
            "one database lookup for five tries of one made-up token"
        );
        // A real token is still looked up, and works.
        let (secret, _) = f
            .issue(CredentialKind::ApiToken, &[Scope::ScriptRead], None, None)
            .await;
        assert!(f.auth.authenticate(&secret.secret).await.is_ok());
        assert_eq!(f.probe.lookups.load(Ordering::SeqCst), 2);
    }
}
