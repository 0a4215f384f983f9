//! The repository test suite, written once and run against both implementations: the
//! in-memory ones always, the PostgreSQL ones against a fresh database per test (from
//! `DATABASE_URL`; the tests fail when it is unset).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions fail loudly on the first surprise too"
)]

#[path = "../common/mod.rs"]
mod common;

mod apps;
mod executions;
mod scripts;

use std::sync::Arc;

use picloud_manager_core::memory::{
    InMemoryAppRepository, InMemoryExecutionLogRepository, InMemoryScriptRepository,
};
use picloud_manager_core::postgres::{
    PgAppRepository, PgExecutionLogRepository, PgScriptRepository,
};
use picloud_manager_core::{AppRepository, ExecutionLogRepository, ScriptRepository};
use picloud_shared::{AppId, AppSlug};
use sqlx::PgPool;

/// The repositories under test, plus a way to add apps (there is no apps API yet).
pub struct Repos {
    pub scripts: Arc<dyn ScriptRepository>,
    pub apps: Arc<dyn AppRepository>,
    pub executions: Arc<dyn ExecutionLogRepository>,
    backend: Backend,
}

impl std::fmt::Debug for Repos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.backend {
            Backend::Memory(_) => "Repos(in-memory)",
            Backend::Postgres(_) => "Repos(postgres)",
        })
    }
}

enum Backend {
    Memory(Arc<InMemoryAppRepository>),
    Postgres(PgPool),
}

impl Repos {
    pub fn in_memory() -> Self {
        let apps = Arc::new(InMemoryAppRepository::new());
        Self {
            scripts: Arc::new(InMemoryScriptRepository::new(apps.clone())),
            apps: apps.clone(),
            executions: Arc::new(InMemoryExecutionLogRepository::new()),
            backend: Backend::Memory(apps),
        }
    }

    pub fn postgres(pool: PgPool) -> Self {
        Self {
            scripts: Arc::new(PgScriptRepository::new(pool.clone())),
            apps: Arc::new(PgAppRepository::new(pool.clone())),
            executions: Arc::new(PgExecutionLogRepository::new(pool.clone())),
            backend: Backend::Postgres(pool),
        }
    }

    /// Adds an app with this slug and returns its id.
    pub async fn add_app(&self, slug: &str) -> AppId {
        let slug = AppSlug::parse(slug).unwrap();
        match &self.backend {
            Backend::Memory(apps) => apps.add(slug, "Test app").unwrap().id,
            Backend::Postgres(pool) => {
                let id = AppId::new();
                sqlx::query("INSERT INTO apps (id, slug, name) VALUES ($1, $2, 'Test app')")
                    .bind(id.as_uuid())
                    .bind(slug.as_str())
                    .execute(pool)
                    .await
                    .unwrap();
                id
            }
        }
    }
}

/// Generates, for each suite function, one test on the in-memory repositories and one on
/// PostgreSQL.
macro_rules! suite {
    ($($module:ident :: $test:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test]
                async fn $test() {
                    crate::$module::$test(crate::Repos::in_memory()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
                async fn $test(pool: sqlx::PgPool) {
                    crate::$module::$test(crate::Repos::postgres(pool)).await;
                }
            )*
        }
    };
}

suite!(
    apps::the_default_app_exists_under_its_well_known_id,
    apps::apps_are_found_by_id_and_slug,
    scripts::a_created_script_reads_back_unchanged,
    scripts::creating_in_a_missing_app_is_not_found_naming_the_app,
    scripts::a_duplicate_name_in_the_same_app_conflicts,
    scripts::the_same_name_may_be_used_in_another_app,
    scripts::get_by_name_joins_the_app_slug,
    scripts::lists_are_paged_in_name_order,
    scripts::lists_can_be_limited_to_one_app,
    scripts::update_changes_given_fields_and_bumps_the_version,
    scripts::renaming_onto_a_used_name_conflicts,
    scripts::updating_a_missing_script_is_not_found,
    scripts::an_empty_update_is_invalid,
    scripts::delete_removes_the_script,
    executions::inserted_records_read_back_unchanged,
    executions::insert_batch_is_idempotent_on_the_record_id,
    executions::an_empty_batch_writes_nothing,
    executions::runs_are_listed_newest_first_and_paged_by_cursor,
    executions::prune_deletes_only_runs_before_the_cutoff,
);

/// A closed pool is reported as `Unavailable`, which the API answers with 503.
#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_closed_pool_is_unavailable(pool: PgPool) {
    let repos = Repos::postgres(pool.clone());
    pool.close().await;
    let err = repos
        .scripts
        .get(picloud_shared::ScriptId::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, picloud_manager_core::RepoError::Unavailable(_)),
        "{err:?}"
    );
}
