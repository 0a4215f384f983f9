//! The event core's control plane: the trigger and dead-letter repository suites, written
//! once and run against both implementations (the in-memory ones always, PostgreSQL
//! against a fresh database per test from `DATABASE_URL`; the tests fail when it is
//! unset), and the outbox emitter and dead-letter fan-out against PostgreSQL.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

#[path = "../common/mod.rs"]
mod common;

mod dead_letters;
mod emitter;
mod executions;
mod triggers;

use std::sync::Arc;

use picloud_manager_core::outbox::OutboxSignal;
use picloud_manager_core::triggers::kinds::{DeadLetterDetails, KvDetails, KvOps, SourceKinds};
use picloud_manager_core::{ExecutionLogRepository, NewScript, ScriptRepository};
use picloud_manager_core::{
    access::PgUserRepository, dead_letters::PgDeadLetterRepository,
    executions::PgExecutionLogRepository, scripts::PgScriptRepository,
    triggers::PgTriggerRepository,
};
use picloud_manager_core::{
    access::{NewUser, UserRepository},
    dead_letters::{DeadLetterRepository, Resolution},
    triggers::{NewTrigger, Trigger, TriggerDetails, TriggerRepository},
};
use picloud_manager_core::{
    dead_letters::InMemoryDeadLetterRepository, memory::InMemoryRepositories,
};
use picloud_shared::{
    AppId, AppSlug, CollectionGlob, DeadLetterId, KvOp, RetryPolicy, Script, ScriptLimits,
    ScriptName, TriggerId, TriggerKind, UserId, Username,
};
use picloud_testkit::PHC;
use serde_json::Value;
use sqlx::PgPool;

/// The repositories under test, and what a test needs around them.
pub struct Repos {
    pub triggers: Arc<dyn TriggerRepository>,
    pub dead_letters: Arc<dyn DeadLetterRepository>,
    pub scripts: Arc<dyn ScriptRepository>,
    pub users: Arc<dyn UserRepository>,
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
    Memory(InMemoryRepositories),
    Postgres(PgPool),
}

/// A delivery waiting in the outbox (or, in memory, a replay enqueued).
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    pub trigger_id: TriggerId,
    pub event: Value,
    pub depth: u32,
    pub attempts: u32,
}

impl Repos {
    pub fn in_memory() -> Self {
        let repos = InMemoryRepositories::new();
        Self {
            triggers: repos.triggers.clone(),
            dead_letters: repos.dead_letters.clone(),
            scripts: repos.scripts.clone(),
            users: repos.users.clone(),
            executions: repos.executions.clone(),
            backend: Backend::Memory(repos),
        }
    }

    pub fn postgres(pool: PgPool) -> Self {
        Self {
            triggers: Arc::new(PgTriggerRepository::new(pool.clone())),
            dead_letters: Arc::new(PgDeadLetterRepository::new(
                pool.clone(),
                OutboxSignal::spawn(pool.clone()),
            )),
            scripts: Arc::new(PgScriptRepository::new(pool.clone())),
            users: Arc::new(PgUserRepository::new(pool.clone())),
            executions: Arc::new(PgExecutionLogRepository::new(pool.clone())),
            backend: Backend::Postgres(pool),
        }
    }

    /// Adds an app with this slug.
    pub async fn add_app(&self, slug: &str) -> AppId {
        let slug = AppSlug::parse(slug).unwrap();
        match &self.backend {
            Backend::Memory(repos) => repos.apps.add(slug, "Test app").unwrap().id,
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

    /// Adds a script named `name` to `app`.
    pub async fn add_script(&self, app: AppId, name: &str) -> Script {
        self.scripts
            .create(NewScript {
                app_id: app,
                name: ScriptName::parse(name).unwrap(),
                source: "1".to_owned(),
                limits: ScriptLimits::default(),
                require_token: false,
            })
            .await
            .unwrap()
    }

    /// Adds a user named `name`.
    pub async fn add_user(&self, name: &str) -> UserId {
        self.users
            .create(NewUser {
                username: Username::parse(name).unwrap(),
                password_hash: PHC.to_owned(),
                instance_admin: false,
            })
            .await
            .unwrap()
            .id
    }

    /// The in-memory dead letters, for what only the dispatcher does to them.
    fn memory_dead_letters(&self) -> Option<&Arc<InMemoryDeadLetterRepository>> {
        match &self.backend {
            Backend::Memory(repos) => Some(&repos.dead_letters),
            Backend::Postgres(_) => None,
        }
    }

    /// Resolves a dead letter as a dispatcher settling a handler's outcome would.
    pub async fn resolve(&self, id: DeadLetterId, resolution: Resolution) {
        match &self.backend {
            Backend::Memory(_) => self.memory_dead_letters().unwrap().resolve(id, resolution),
            Backend::Postgres(pool) => {
                sqlx::query(
                    "UPDATE dead_letters SET resolution = $2, resolved_at = now() WHERE id = $1",
                )
                .bind(id.as_uuid())
                .bind(resolution.as_str())
                .execute(pool)
                .await
                .unwrap();
            }
        }
    }

    /// Every delivery enqueued for `trigger`, oldest first.
    pub async fn enqueued(&self, trigger: TriggerId) -> Vec<Enqueued> {
        match &self.backend {
            Backend::Memory(_) => self
                .memory_dead_letters()
                .unwrap()
                .replays()
                .into_iter()
                .filter(|r| r.trigger_id == trigger)
                .map(|r| Enqueued {
                    trigger_id: r.trigger_id,
                    event: r.event,
                    depth: r.depth,
                    attempts: 0,
                })
                .collect(),
            Backend::Postgres(pool) => {
                let rows: Vec<(uuid::Uuid, Value, i32, i32)> = sqlx::query_as(
                    "SELECT trigger_id, event, depth, attempts FROM outbox \
                     WHERE trigger_id = $1 ORDER BY id",
                )
                .bind(trigger.as_uuid())
                .fetch_all(pool)
                .await
                .unwrap();
                rows.into_iter()
                    .map(|(trigger, event, depth, attempts)| Enqueued {
                        trigger_id: TriggerId::from_uuid(trigger),
                        event,
                        depth: u32::try_from(depth).unwrap(),
                        attempts: u32::try_from(attempts).unwrap(),
                    })
                    .collect()
            }
        }
    }
}

/// A KV trigger on `glob` for `ops`, with the default retry policy.
pub fn kv_trigger(
    app: AppId,
    script: &Script,
    user: UserId,
    glob: &str,
    ops: &[KvOp],
) -> NewTrigger {
    NewTrigger {
        app_id: app,
        script_id: script.id,
        enabled: true,
        registered_by: user,
        retry: RetryPolicy::default(),
        details: TriggerDetails::Kv(KvDetails {
            collection: CollectionGlob::parse(glob).unwrap(),
            ops: KvOps::new(ops).unwrap(),
        }),
    }
}

/// A dead-letter trigger for KV dead letters.
pub fn dead_letter_trigger(app: AppId, script: &Script, user: UserId) -> NewTrigger {
    NewTrigger {
        app_id: app,
        script_id: script.id,
        enabled: true,
        registered_by: user,
        retry: RetryPolicy::default(),
        details: TriggerDetails::DeadLetter(DeadLetterDetails {
            source_kinds: SourceKinds::new(&[TriggerKind::Kv]).unwrap(),
        }),
    }
}

/// The ids of `triggers`, in order.
pub fn ids(triggers: &[Trigger]) -> Vec<TriggerId> {
    triggers.iter().map(|t| t.id).collect()
}

picloud_testkit::backend_suite!(
    memory: Repos::in_memory(),
    postgres(migrator = "picloud_manager_core::MIGRATOR"): |pool| Repos::postgres(pool);
    triggers::a_kv_trigger_reads_back_as_created,
    triggers::a_dead_letter_trigger_reads_back_with_its_source_kinds,
    triggers::a_script_of_another_app_or_none_is_not_found_and_nothing_is_stored,
    triggers::a_missing_user_is_not_found,
    triggers::lists_are_filtered_by_app_and_kind_and_paged_oldest_first,
    triggers::set_enabled_switches_a_trigger,
    triggers::update_replaces_retry_and_details_of_the_same_kind_only,
    triggers::delete_removes_a_trigger,
    triggers::targets_are_this_apps_enabled_triggers_the_kinds_matcher_accepts,
    triggers::deleting_the_script_or_the_user_deletes_their_triggers,
    dead_letters::a_recorded_dead_letter_reads_back_unresolved,
    dead_letters::lists_are_newest_first_filtered_and_paged_by_cursor,
    dead_letters::the_unresolved_count_is_per_app,
    dead_letters::replay_enqueues_the_original_event_once_and_resolves,
    dead_letters::replay_refuses_without_a_trigger,
    dead_letters::a_failed_handler_leaves_the_dead_letter_open,
    dead_letters::ignore_resolves_once,
    dead_letters::actions_on_a_missing_dead_letter_are_not_found,
    dead_letters::prune_deletes_only_dead_letters_resolved_before_the_cutoff,
    executions::a_triggered_run_reads_back_with_its_trigger,
    emitter::a_set_writes_one_row_per_matching_enabled_trigger_of_the_app_only,
    emitter::an_event_no_trigger_matches_writes_nothing,
    emitter::an_event_past_the_depth_limit_becomes_one_unresolved_dead_letter,
    emitter::a_deep_event_nothing_watches_is_not_a_dead_letter,
    emitter::a_dead_letter_fans_out_to_the_apps_enabled_dead_letter_triggers,
);
