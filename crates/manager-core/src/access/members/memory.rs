//! [`MembershipRepository`] in memory.

use std::collections::HashMap;

use async_trait::async_trait;
use picloud_shared::{AppId, AppRole, UserId};

use crate::memory::InMemoryStore;
use crate::{
    access::{Member, MembershipRepository},
    repository::{RepoError, RepoResult},
};

/// Memberships in an [`InMemoryStore`], referring to its apps and users.
#[derive(Debug, Clone)]
pub struct InMemoryMembershipRepository {
    store: InMemoryStore,
}

impl InMemoryMembershipRepository {
    /// A repository over a shared store.
    pub fn new(store: InMemoryStore) -> Self {
        Self { store }
    }
}

#[async_trait]
impl MembershipRepository for InMemoryMembershipRepository {
    async fn roles_of(&self, user_id: UserId) -> RepoResult<HashMap<AppId, AppRole>> {
        Ok(self
            .store
            .lock()
            .members
            .iter()
            .filter(|((_, user), _)| *user == user_id)
            .map(|((app, _), role)| (*app, *role))
            .collect())
    }

    async fn members(&self, app_id: AppId) -> RepoResult<Vec<Member>> {
        let tables = self.store.lock();
        let mut members: Vec<Member> = tables
            .members
            .iter()
            .filter(|((app, _), _)| *app == app_id)
            .filter_map(|((_, user), role)| {
                tables.users.get(user).map(|row| Member {
                    user_id: *user,
                    username: row.user.username.clone(),
                    role: *role,
                })
            })
            .collect();
        members.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(members)
    }

    async fn set_role(&self, app_id: AppId, user_id: UserId, role: AppRole) -> RepoResult<()> {
        let mut tables = self.store.lock();
        if !tables.apps.contains_key(&app_id) {
            return Err(RepoError::NotFound {
                what: format!("app {app_id}"),
            });
        }
        if !tables.users.contains_key(&user_id) {
            return Err(RepoError::NotFound {
                what: format!("user {user_id}"),
            });
        }
        tables.members.insert((app_id, user_id), role);
        Ok(())
    }

    async fn remove(&self, app_id: AppId, user_id: UserId) -> RepoResult<()> {
        match self.store.lock().members.remove(&(app_id, user_id)) {
            Some(_) => Ok(()),
            None => Err(RepoError::NotFound {
                what: format!("member {user_id} of app {app_id}"),
            }),
        }
    }
}
