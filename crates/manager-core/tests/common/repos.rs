//! The repositories of both backends behind one handle, for the suites that run on both:
//! the in-memory ones, and the PostgreSQL ones over a test's fresh database.

use std::sync::Arc;

use picloud_manager_core::access::{
    MembershipRepository, NewUser, PgMembershipRepository, PgTokenRepository, PgUserRepository,
    TokenRepository, User, UserRepository,
};
use picloud_manager_core::apps::{AppRepository, PgAppRepository};
use picloud_manager_core::dead_letters::{
    DeadLetterRepository, InMemoryDeadLetterRepository, PgDeadLetterRepository, Resolution,
};
use picloud_manager_core::executions::{ExecutionLogRepository, PgExecutionLogRepository};
use picloud_manager_core::memory::InMemoryRepositories;
use picloud_manager_core::outbox::OutboxSignal;
use picloud_manager_core::scripts::{NewScript, PgScriptRepository, ScriptRepository};
use picloud_manager_core::triggers::{PgTriggerRepository, TriggerRepository};
use picloud_shared::{
    AppId, AppSlug, DeadLetterId, Script, ScriptLimits, ScriptName, TriggerId, Username,
};
use picloud_testkit::PHC;
use serde_json::Value;
use sqlx::PgPool;

/// The repositories under test, and what a test needs around them.
pub struct Repos {
    pub apps: Arc<dyn AppRepository>,
    pub scripts: Arc<dyn ScriptRepository>,
    pub executions: Arc<dyn ExecutionLogRepository>,
    pub users: Arc<dyn UserRepository>,
    pub tokens: Arc<dyn TokenRepository>,
    pub memberships: Arc<dyn MembershipRepository>,
    pub triggers: Arc<dyn TriggerRepository>,
    pub dead_letters: Arc<dyn DeadLetterRepository>,
    pub backend: Backend,
}

impl std::fmt::Debug for Repos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.backend {
            Backend::Memory(_) => "Repos(in-memory)",
            Backend::Postgres(_) => "Repos(postgres)",
        })
    }
}

#[derive(Debug)]
pub enum Backend {
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
            apps: repos.apps.clone(),
            scripts: repos.scripts.clone(),
            executions: repos.executions.clone(),
            users: repos.users.clone(),
            tokens: repos.tokens.clone(),
            memberships: repos.memberships.clone(),
            triggers: repos.triggers.clone(),
            dead_letters: repos.dead_letters.clone(),
            backend: Backend::Memory(repos),
        }
    }

    pub fn postgres(pool: PgPool) -> Self {
        Self {
            apps: Arc::new(PgAppRepository::new(pool.clone())),
            scripts: Arc::new(PgScriptRepository::new(pool.clone())),
            executions: Arc::new(PgExecutionLogRepository::new(pool.clone())),
            users: Arc::new(PgUserRepository::new(pool.clone())),
            tokens: Arc::new(PgTokenRepository::new(pool.clone())),
            memberships: Arc::new(PgMembershipRepository::new(pool.clone())),
            triggers: Arc::new(PgTriggerRepository::new(pool.clone())),
            dead_letters: Arc::new(PgDeadLetterRepository::new(
                pool.clone(),
                OutboxSignal::spawn(pool.clone()),
            )),
            backend: Backend::Postgres(pool),
        }
    }

    /// The pool, for assertions on the stored rows; `None` in memory.
    pub fn pool(&self) -> Option<&PgPool> {
        match &self.backend {
            Backend::Memory(_) => None,
            Backend::Postgres(pool) => Some(pool),
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
    pub async fn add_user(&self, name: &str) -> User {
        self.users
            .create(NewUser {
                username: Username::parse(name).unwrap(),
                password_hash: PHC.to_owned(),
                instance_admin: false,
            })
            .await
            .unwrap()
    }

    /// The in-memory dead letters, for what only the dispatcher does to them.
    pub fn memory_dead_letters(&self) -> Option<&Arc<InMemoryDeadLetterRepository>> {
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
