//! The rule every membership change goes through, whoever asks: an app keeps at least one
//! owner (without one, only an instance admin could manage it).

use std::sync::Arc;

use picloud_shared::{AppId, AppRole, UserId};

use super::{Member, MembershipRepository};
use crate::repository::RepoError;

/// Why a membership change was refused.
#[derive(Debug, thiserror::Error)]
pub enum MembershipChangeError {
    /// The user is the app's only owner: the change would leave it without one.
    #[error("user {0} is the app's only owner")]
    LastOwner(UserId),
    /// The user is not a member of the app.
    #[error("user {0} is not a member of the app")]
    NotMember(UserId),
    /// The store refused or failed (`NotFound` for a missing app or user).
    #[error(transparent)]
    Store(#[from] RepoError),
}

/// Changes who belongs to an app, by the rule.
#[derive(Clone)]
pub struct MembershipService {
    repo: Arc<dyn MembershipRepository>,
}

impl std::fmt::Debug for MembershipService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipService").finish_non_exhaustive()
    }
}

/// Refuses a change that takes away `user`'s ownership when they are the only owner.
fn keep_an_owner(members: &[Member], user: UserId) -> Result<(), MembershipChangeError> {
    let is_owner = |m: &Member| m.role == AppRole::Owner;
    let target_is_owner = members.iter().any(|m| m.user_id == user && is_owner(m));
    if target_is_owner && members.iter().filter(|m| is_owner(m)).count() == 1 {
        return Err(MembershipChangeError::LastOwner(user));
    }
    Ok(())
}

impl MembershipService {
    /// A service over `repo`.
    pub fn new(repo: Arc<dyn MembershipRepository>) -> Self {
        Self { repo }
    }

    /// The memberships themselves, for reads.
    pub fn repo(&self) -> &dyn MembershipRepository {
        self.repo.as_ref()
    }

    /// Adds `user` to `app` with `role`, or changes their role there.
    pub async fn set_role(
        &self,
        app: AppId,
        user: UserId,
        role: AppRole,
    ) -> Result<(), MembershipChangeError> {
        if role != AppRole::Owner {
            keep_an_owner(&self.repo.members(app).await?, user)?;
        }
        Ok(self.repo.set_role(app, user, role).await?)
    }

    /// Removes `user` from `app`.
    pub async fn remove(&self, app: AppId, user: UserId) -> Result<(), MembershipChangeError> {
        let members = self.repo.members(app).await?;
        if !members.iter().any(|m| m.user_id == user) {
            return Err(MembershipChangeError::NotMember(user));
        }
        keep_an_owner(&members, user)?;
        self.repo.remove(app, user).await.map_err(|err| match err {
            RepoError::NotFound { .. } => MembershipChangeError::NotMember(user),
            other => other.into(),
        })
    }
}
