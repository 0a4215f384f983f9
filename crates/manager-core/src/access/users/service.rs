//! The rules every change to a user goes through, whoever asks: a password meets the
//! policy and is stored only as its argon2id hash (computed off the async workers, since
//! argon2 is deliberately slow); changing a password revokes every session and token of
//! the user; nobody deletes their own user (which also keeps an instance admin around).

use std::sync::Arc;

use chrono::Utc;
use picloud_shared::{UserId, Username};

use super::{NewUser, User, UserRepository};
use crate::access::TokenRepository;
use crate::access::secrets::{self, PasswordError};
use crate::repository::RepoError;

/// Why a user change was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserChangeError {
    /// The password does not meet the policy.
    #[error(transparent)]
    Password(PasswordError),
    /// A user tried to delete themselves.
    #[error("you cannot delete your own user")]
    DeletingSelf,
    /// Hashing failed (a fault).
    #[error("hashing the password failed")]
    Hashing(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] RepoError),
}

/// Creates users, changes their passwords and deletes them, by the rules.
#[derive(Clone)]
pub struct UserService {
    users: Arc<dyn UserRepository>,
    tokens: Arc<dyn TokenRepository>,
}

impl std::fmt::Debug for UserService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserService").finish_non_exhaustive()
    }
}

impl UserService {
    /// A service over `users`, revoking through `tokens`.
    pub fn new(users: Arc<dyn UserRepository>, tokens: Arc<dyn TokenRepository>) -> Self {
        Self { users, tokens }
    }

    /// The users themselves, for reads.
    pub fn repo(&self) -> &dyn UserRepository {
        self.users.as_ref()
    }

    /// Creates a user with `password` (checked, then hashed).
    pub async fn create(
        &self,
        username: Username,
        password: String,
        instance_admin: bool,
    ) -> Result<User, UserChangeError> {
        let password_hash = hash_new_password(password).await?;
        Ok(self
            .users
            .create(NewUser {
                username,
                password_hash,
                instance_admin,
            })
            .await?)
    }

    /// Sets a user's password and revokes every session and token they have; returns how
    /// many were revoked.
    pub async fn set_password(&self, id: UserId, password: String) -> Result<u64, UserChangeError> {
        let password_hash = hash_new_password(password).await?;
        self.users.set_password(id, password_hash).await?;
        Ok(self.tokens.revoke_all_for_user(id, Utc::now()).await?)
    }

    /// Deletes user `id` on behalf of user `by`.
    pub async fn delete(&self, by: UserId, id: UserId) -> Result<(), UserChangeError> {
        if id == by {
            return Err(UserChangeError::DeletingSelf);
        }
        Ok(self.users.delete(id).await?)
    }
}

/// Checks the password policy, then hashes off the async workers.
async fn hash_new_password(password: String) -> Result<String, UserChangeError> {
    secrets::check_password_policy(&password).map_err(UserChangeError::Password)?;
    tokio::task::spawn_blocking(move || secrets::hash_password(&password))
        .await
        .map_err(|e| UserChangeError::Hashing(Box::new(e)))?
        .map_err(|e| match e {
            PasswordError::Hashing(_) => UserChangeError::Hashing(Box::new(e)),
            policy => UserChangeError::Password(policy),
        })
}
