//! [`TokenRepository`] in memory.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{CredentialKind, TokenId, UserId};

use crate::access::secrets::hashes_equal;
use crate::memory::store::TokenRow;
use crate::memory::{InMemoryStore, now, stored};
use crate::{
    access::{NewToken, Token, TokenRepository},
    repository::{RepoError, RepoResult},
};

/// Tokens in an [`InMemoryStore`], referring to its users and apps.
#[derive(Debug, Clone)]
pub struct InMemoryTokenRepository {
    store: InMemoryStore,
}

impl InMemoryTokenRepository {
    /// A repository over a shared store.
    pub fn new(store: InMemoryStore) -> Self {
        Self { store }
    }
}

fn not_found(id: TokenId) -> RepoError {
    RepoError::NotFound {
        what: format!("token {id}"),
    }
}

/// The checks the `api_tokens` table's CHECK constraints make.
fn check_shape(token: &NewToken) -> RepoResult<()> {
    let refused = |constraint: &str| {
        Err(RepoError::Invalid(format!(
            "value refused by constraint {constraint}"
        )))
    };
    if !(1..=128).contains(&token.name.chars().count()) {
        return refused("api_tokens_name_length");
    }
    if token.kind == CredentialKind::Session && token.app_id.is_some() {
        return refused("api_tokens_session_shape");
    }
    Ok(())
}

fn usable(token: &Token, now: DateTime<Utc>) -> bool {
    token.revoked_at.is_none() && token.expires_at.is_none_or(|at| at > now)
}

#[async_trait]
impl TokenRepository for InMemoryTokenRepository {
    async fn create(&self, new: NewToken) -> RepoResult<Token> {
        check_shape(&new)?;
        let mut tables = self.store.lock();
        if !tables.users.contains_key(&new.user_id) {
            return Err(RepoError::NotFound {
                what: format!("user {}", new.user_id),
            });
        }
        if let Some(app) = new.app_id
            && !tables.apps.contains_key(&app)
        {
            return Err(RepoError::NotFound {
                what: format!("app {app}"),
            });
        }
        if let Some(parent) = new.parent_id
            && !tables.tokens.contains_key(&parent)
        {
            return Err(not_found(parent));
        }
        if tables
            .tokens
            .values()
            .any(|row| hashes_equal(&row.secret_hash, &new.secret_hash))
        {
            return Err(RepoError::Conflict {
                what: "a token with this secret".to_owned(),
            });
        }
        let token = Token {
            id: TokenId::new(),
            user_id: new.user_id,
            name: new.name,
            kind: new.kind,
            scopes: new.scopes,
            app_id: new.app_id,
            prefix: new.prefix,
            created_at: now(),
            expires_at: new.expires_at.map(stored),
            last_used_at: None,
            revoked_at: None,
            parent_id: new.parent_id,
        };
        tables.tokens.insert(
            token.id,
            TokenRow {
                token: token.clone(),
                secret_hash: new.secret_hash,
            },
        );
        Ok(token)
    }

    async fn find_usable(
        &self,
        secret_hash: &[u8; 32],
        now: DateTime<Utc>,
    ) -> RepoResult<Option<Token>> {
        Ok(self
            .store
            .lock()
            .tokens
            .values()
            .find(|row| hashes_equal(&row.secret_hash, secret_hash))
            .filter(|row| usable(&row.token, now))
            .map(|row| row.token.clone()))
    }

    async fn get(&self, id: TokenId) -> RepoResult<Option<Token>> {
        Ok(self
            .store
            .lock()
            .tokens
            .get(&id)
            .map(|row| row.token.clone()))
    }

    async fn list_for_user(&self, user_id: UserId, kind: CredentialKind) -> RepoResult<Vec<Token>> {
        let mut tokens: Vec<Token> = self
            .store
            .lock()
            .tokens
            .values()
            .filter(|row| row.token.user_id == user_id && row.token.kind == kind)
            .map(|row| row.token.clone())
            .collect();
        tokens.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id)));
        Ok(tokens)
    }

    async fn revoke(&self, id: TokenId, now: DateTime<Utc>) -> RepoResult<()> {
        let mut tables = self.store.lock();
        if !tables.tokens.contains_key(&id) {
            return Err(not_found(id));
        }
        // The token and every descendant, made through it; the first revocation's time is
        // kept, so revoking again changes nothing.
        let mut family = vec![id];
        while let Some(parent) = family.pop() {
            for row in tables.tokens.values_mut() {
                if row.token.id == parent || row.token.parent_id == Some(parent) {
                    if row.token.id != parent {
                        family.push(row.token.id);
                    }
                    row.token.revoked_at.get_or_insert(stored(now));
                }
            }
        }
        Ok(())
    }

    async fn revoke_all_for_user(&self, user_id: UserId, now: DateTime<Utc>) -> RepoResult<u64> {
        let mut tables = self.store.lock();
        let mut revoked = 0;
        for row in tables.tokens.values_mut() {
            if row.token.user_id == user_id && row.token.revoked_at.is_none() {
                row.token.revoked_at = Some(stored(now));
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    async fn touch(&self, id: TokenId, now: DateTime<Utc>) -> RepoResult<()> {
        let mut tables = self.store.lock();
        let row = tables.tokens.get_mut(&id).ok_or_else(|| not_found(id))?;
        // Touches are sent in the background and may arrive out of order: keep the latest.
        let at = stored(now);
        row.token.last_used_at = Some(row.token.last_used_at.map_or(at, |last| last.max(at)));
        Ok(())
    }
}
