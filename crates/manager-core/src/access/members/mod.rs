//! Who belongs to which app, in which role.

#[cfg(feature = "admin-api")]
pub(crate) mod http;
#[cfg(feature = "testsuite")]
mod memory;
mod pg;
mod service;

#[cfg(feature = "admin-api")]
pub use http::{MemberView, SetMemberRequest};
#[cfg(feature = "testsuite")]
pub use memory::InMemoryMembershipRepository;
pub use pg::PgMembershipRepository;
pub use service::{MembershipChangeError, MembershipService};

use std::collections::HashMap;

use async_trait::async_trait;
use picloud_shared::{AppId, AppRole, UserId, Username};

use crate::repository::RepoResult;

/// One member of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The user.
    pub user_id: UserId,
    /// Their username.
    pub username: Username,
    /// Their role in the app.
    pub role: AppRole,
}

/// Stores app memberships.
#[async_trait]
pub trait MembershipRepository: Send + Sync {
    /// Every app the user belongs to, with their role there.
    async fn roles_of(&self, user_id: UserId) -> RepoResult<HashMap<AppId, AppRole>>;

    /// An app's members ordered by username.
    async fn members(&self, app_id: AppId) -> RepoResult<Vec<Member>>;

    /// Adds the user to the app or changes their role; `NotFound` when the app or the user
    /// does not exist.
    async fn set_role(&self, app_id: AppId, user_id: UserId, role: AppRole) -> RepoResult<()>;

    /// Removes the user from the app; `NotFound` when they were not a member.
    async fn remove(&self, app_id: AppId, user_id: UserId) -> RepoResult<()>;
}
