//! [`UserRepository`] in memory.

use async_trait::async_trait;
use picloud_shared::{UserId, Username};

use crate::memory::store::{Tables, UserRow};
use crate::memory::{InMemoryStore, now};
use crate::{
    access::{NewUser, User, UserRepository},
    repository::{RepoError, RepoResult},
};

/// Users in an [`InMemoryStore`]; deleting one removes their tokens and memberships, as
/// the foreign keys' `ON DELETE CASCADE` does.
#[derive(Debug, Clone)]
pub struct InMemoryUserRepository {
    store: InMemoryStore,
}

impl InMemoryUserRepository {
    /// A repository over a shared store.
    pub fn new(store: InMemoryStore) -> Self {
        Self { store }
    }
}

fn not_found(id: UserId) -> RepoError {
    RepoError::NotFound {
        what: format!("user {id}"),
    }
}

fn insert(tables: &mut Tables, new: NewUser) -> RepoResult<User> {
    // The same backstop as the `users_password_hash_phc` CHECK: a plain password must
    // never be stored by mistake.
    if !new.password_hash.starts_with("$argon2id$") {
        return Err(RepoError::Invalid(
            "value refused by constraint users_password_hash_phc".to_owned(),
        ));
    }
    if tables
        .users
        .values()
        .any(|row| row.user.username == new.username)
    {
        return Err(RepoError::Conflict {
            what: format!("user '{}'", new.username),
        });
    }
    let at = now();
    let user = User {
        id: UserId::new(),
        username: new.username,
        instance_admin: new.instance_admin,
        created_at: at,
        updated_at: at,
    };
    tables.users.insert(
        user.id,
        UserRow {
            user: user.clone(),
            password_hash: new.password_hash,
        },
    );
    Ok(user)
}

#[async_trait]
impl UserRepository for InMemoryUserRepository {
    async fn create(&self, user: NewUser) -> RepoResult<User> {
        insert(&mut self.store.lock(), user)
    }

    async fn create_if_none(&self, user: NewUser) -> RepoResult<Option<User>> {
        let mut tables = self.store.lock();
        if !tables.users.is_empty() {
            return Ok(None);
        }
        insert(&mut tables, user).map(Some)
    }

    async fn get(&self, id: UserId) -> RepoResult<Option<User>> {
        Ok(self.store.lock().users.get(&id).map(|row| row.user.clone()))
    }

    async fn credentials(&self, username: &Username) -> RepoResult<Option<(User, String)>> {
        Ok(self
            .store
            .lock()
            .users
            .values()
            .find(|row| &row.user.username == username)
            .map(|row| (row.user.clone(), row.password_hash.clone())))
    }

    async fn list(&self, limit: u32, after: Option<&Username>) -> RepoResult<Vec<User>> {
        let mut users: Vec<User> = self
            .store
            .lock()
            .users
            .values()
            .map(|row| row.user.clone())
            .filter(|u| after.is_none_or(|after| u.username.as_str() > after.as_str()))
            .collect();
        users.sort_by(|a, b| a.username.as_str().cmp(b.username.as_str()));
        users.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(users)
    }

    async fn set_password(&self, id: UserId, password_hash: String) -> RepoResult<()> {
        if !password_hash.starts_with("$argon2id$") {
            return Err(RepoError::Invalid(
                "value refused by constraint users_password_hash_phc".to_owned(),
            ));
        }
        let mut tables = self.store.lock();
        let row = tables.users.get_mut(&id).ok_or_else(|| not_found(id))?;
        row.password_hash = password_hash;
        row.user.updated_at = now();
        Ok(())
    }

    async fn delete(&self, id: UserId) -> RepoResult<()> {
        let mut tables = self.store.lock();
        if tables.users.remove(&id).is_none() {
            return Err(not_found(id));
        }
        tables.members.retain(|(_, user), _| *user != id);
        tables.tokens.retain(|_, row| row.token.user_id != id);
        Ok(())
    }
}
