//! The state the in-memory repositories share, standing in for one database.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use picloud_shared::{AppId, AppRole, AppSlug, Script, ScriptId, TokenId, UserId};

use super::{lock, now};
use crate::DEFAULT_APP_ID;
use crate::{
    access::{Token, User},
    apps::App,
};

/// A user row: the user and their password hash.
#[derive(Debug, Clone)]
pub(crate) struct UserRow {
    pub user: User,
    pub password_hash: String,
}

/// A token row: the token and the hash of its secret.
#[derive(Debug, Clone)]
pub(crate) struct TokenRow {
    pub token: Token,
    pub secret_hash: [u8; 32],
}

/// The tables.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub apps: BTreeMap<AppId, App>,
    pub scripts: BTreeMap<ScriptId, Script>,
    pub users: BTreeMap<UserId, UserRow>,
    pub members: BTreeMap<(AppId, UserId), AppRole>,
    pub tokens: BTreeMap<TokenId, TokenRow>,
    /// Slugs apps gave up by renaming, and the app each still belongs to.
    pub retired_slugs: BTreeMap<String, AppId>,
}

impl Tables {
    pub fn app_id_of(&self, slug: &AppSlug) -> Option<AppId> {
        self.apps.values().find(|a| &a.slug == slug).map(|a| a.id)
    }
}

/// One in-memory database, shared (cheaply cloned) by the repositories built over it.
/// Starts with the `default` app, as the first migration does.
#[derive(Debug, Clone)]
pub struct InMemoryStore {
    tables: Arc<Mutex<Tables>>,
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryStore {
    /// A store holding only the `default` app (id [`DEFAULT_APP_ID`]).
    pub fn new() -> Self {
        let at = now();
        let default = App {
            id: DEFAULT_APP_ID,
            slug: AppSlug::default_app(),
            name: "Default".to_owned(),
            created_at: at,
            updated_at: at,
        };
        let tables = Tables {
            apps: BTreeMap::from([(default.id, default)]),
            ..Tables::default()
        };
        Self {
            tables: Arc::new(Mutex::new(tables)),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Tables> {
        lock(&self.tables)
    }
}
