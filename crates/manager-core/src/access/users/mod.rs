//! People who log in.

#[cfg(feature = "admin-api")]
pub(crate) mod http;
#[cfg(feature = "testsuite")]
mod memory;
mod pg;
mod service;

#[cfg(feature = "admin-api")]
pub use http::{CreateUserRequest, SetPasswordRequest, UserView};
#[cfg(feature = "testsuite")]
pub use memory::InMemoryUserRepository;
pub use pg::PgUserRepository;
pub use service::{UserChangeError, UserService};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{UserId, Username};

use crate::repository::RepoResult;

/// A stored user (never with its password hash: see [`UserRepository::credentials`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id.
    pub id: UserId,
    /// Unique login name.
    pub username: Username,
    /// Instance admins hold every role in every app and manage users and apps.
    pub instance_admin: bool,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
    /// When the user last changed.
    pub updated_at: DateTime<Utc>,
}

/// A user to create. The password arrives already hashed (argon2id PHC string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Unique login name.
    pub username: Username,
    /// The argon2id hash of the password, as a PHC string.
    pub password_hash: String,
    /// Whether the user is an instance admin.
    pub instance_admin: bool,
}

/// Stores users.
#[async_trait]
pub trait UserRepository: Send + Sync {
    /// Creates a user; `Conflict` when the username is taken.
    async fn create(&self, user: NewUser) -> RepoResult<User>;

    /// Creates `user` only if there is no user at all, atomically (two nodes starting at
    /// once create one admin between them). `None` when users already existed.
    async fn create_if_none(&self, user: NewUser) -> RepoResult<Option<User>>;

    /// The user with this id.
    async fn get(&self, id: UserId) -> RepoResult<Option<User>>;

    /// The user with this username and their password hash, for logging in.
    async fn credentials(&self, username: &Username) -> RepoResult<Option<(User, String)>>;

    /// Users ordered by username.
    async fn list(&self, limit: u32, after: Option<&Username>) -> RepoResult<Vec<User>>;

    /// Replaces the password hash; `NotFound` when there is no such user.
    async fn set_password(&self, id: UserId, password_hash: String) -> RepoResult<()>;

    /// Deletes the user with their tokens and memberships; `NotFound` when absent.
    async fn delete(&self, id: UserId) -> RepoResult<()>;
}
