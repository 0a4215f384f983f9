//! The `KvService` suite, written once and run against both implementations: the
//! in-memory one always, the PostgreSQL one against a fresh database per test (from
//! `DATABASE_URL`; the tests fail when it is unset). PostgreSQL-only tests cover the
//! transaction a write shares with its events.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions fail loudly on the first surprise too"
)]

mod atomic;
mod postgres_only;
mod suite;

use std::sync::Arc;

use picloud_manager_core::kv::{InMemoryKvService, PgKvService};
use picloud_manager_core::outbox::RecordingEmitter;
use picloud_shared::{AppId, CollectionName, KvKey, KvService, ServiceEvent};
use sqlx::PgPool;

/// A service under test and what it emitted.
#[expect(
    missing_debug_implementations,
    reason = "a test harness, never printed"
)]
pub struct Kv {
    pub service: Arc<dyn KvService>,
    emitter: Arc<RecordingEmitter>,
    backend: Backend,
}

enum Backend {
    Memory,
    Postgres { pool: PgPool },
}

impl Kv {
    pub fn in_memory() -> Self {
        let emitter = Arc::new(RecordingEmitter::default());
        Self {
            service: Arc::new(InMemoryKvService::new(emitter.clone())),
            emitter,
            backend: Backend::Memory,
        }
    }

    pub fn postgres(pool: PgPool) -> Self {
        let emitter = Arc::new(RecordingEmitter::default());
        Self {
            service: Arc::new(PgKvService::new(pool.clone(), emitter.clone())),
            emitter,
            backend: Backend::Postgres { pool },
        }
    }

    /// Every event emitted so far, oldest first.
    pub fn events(&self) -> Vec<ServiceEvent> {
        self.emitter.events()
    }

    /// An app to keep entries in (a row in `apps` for PostgreSQL).
    pub async fn add_app(&self, slug: &str) -> AppId {
        let id = AppId::new();
        if let Backend::Postgres { pool } = &self.backend {
            sqlx::query("INSERT INTO apps (id, slug, name) VALUES ($1, $2, 'Test app')")
                .bind(id.as_uuid())
                .bind(slug)
                .execute(pool)
                .await
                .unwrap();
        }
        id
    }
}

pub use picloud_testkit::services::{principal, run_as, script_ctx};

pub fn coll(raw: &str) -> CollectionName {
    CollectionName::parse(raw).unwrap()
}

pub fn key(raw: &str) -> KvKey {
    KvKey::parse(raw).unwrap()
}

picloud_testkit::backend_suite!(
    memory: Kv::in_memory(),
    postgres(migrator = "picloud_manager_core::MIGRATOR"): |pool| Kv::postgres(pool);
    suite::a_set_value_reads_back_and_a_set_replaces_it,
    suite::delete_says_whether_the_key_existed_and_only_a_real_delete_emits,
    suite::lists_are_in_byte_order_filtered_by_prefix_and_paged,
    suite::a_page_of_large_values_is_cut_at_its_byte_budget,
    suite::a_page_that_ends_the_collection_has_no_cursor,
    suite::collections_are_counted_per_app,
    suite::values_up_to_64_kib_are_accepted_and_one_byte_more_is_refused,
    suite::values_that_cannot_be_stored_and_bad_list_options_are_refused,
    suite::one_apps_context_never_reaches_another_apps_entries,
    suite::a_principal_needs_the_role_and_scope_for_each_call,
    suite::events_carry_the_runs_depth_plus_one_and_its_id,
    atomic::every_write_gives_the_key_a_larger_version_never_reused,
    atomic::a_conditional_set_writes_only_when_its_condition_holds,
    atomic::increments_count_from_zero_and_refuse_what_is_not_a_number,
    atomic::a_batch_whose_checks_hold_changes_every_key_and_emits_each_change,
    atomic::a_batch_whose_check_fails_changes_nothing_and_emits_nothing,
);
