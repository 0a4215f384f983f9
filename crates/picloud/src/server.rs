//! Composition: every router in one place, the health endpoints, and graceful shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::from_fn;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use picloud_executor_core::{LocalExecutorClient, ScriptServices};
use picloud_manager_core::access::LoginDefences;
use picloud_manager_core::access::secrets::generate_password;
use picloud_manager_core::{
    AdminDeps, AdminState, BatchingExecutionRecorder, Bootstrap, CachedScriptResolver,
    EventRetention, OutboxSignal, PgOutboxWaker, PrunerHandle, RecorderHandle, TokenAuthenticator,
    ensure_instance_admin, spawn_event_retention_pruner, spawn_retention_pruner,
};
use picloud_manager_core::{
    access::{PgMembershipRepository, PgTokenRepository, PgUserRepository, UserRepository},
    apps::PgAppRepository,
    dead_letters::{PgAbandonedExecutionRepository, PgDeadLetterRepository},
    executions::PgExecutionLogRepository,
    files::{FileSweeper, FsBlobStore, PgFilesService, spawn_file_sweeper},
    kv::PgKvService,
    outbox::{OutboxEmitter, PgOutboxStore},
    scripts::{PgScriptRepository, ScriptObservers},
    triggers::PgTriggerRepository,
};
use picloud_orchestrator_core::{
    Dispatcher, DispatcherConfig, DispatcherDeps, DispatcherHandle, OrchestratorState,
    propagate_request_id,
};
use picloud_shared::{ErrorCode, ErrorEnvelope, ServiceSet, TriggerConfig};
use serde_json::json;
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;

use crate::ServerConfig;
use crate::secret_file::PendingSecretFile;

/// The composed application: its router plus the background work that must be drained
/// on shutdown.
#[derive(Debug)]
pub struct App {
    /// Every route of the server.
    pub router: Router,
    recorder: RecorderHandle,
    pruner: PrunerHandle,
    event_pruner: PrunerHandle,
    file_sweeper: PrunerHandle,
    dispatcher: DispatcherHandle,
}

impl App {
    /// Stops the outbox dispatcher (its runs in flight finish and its claims are
    /// released), then flushes every queued execution record, theirs included, and stops
    /// the other background tasks.
    pub async fn shutdown(self) {
        self.dispatcher.shutdown().await;
        self.recorder.shutdown().await;
        self.pruner.shutdown().await;
        self.event_pruner.shutdown().await;
        self.file_sweeper.shutdown().await;
    }
}

/// Wires the Postgres repositories, the blob store, the in-process executor and both
/// routers. Fails only when the files root cannot be created.
pub fn build_app(config: &ServerConfig, pool: PgPool) -> anyhow::Result<App> {
    let scripts = Arc::new(PgScriptRepository::new(pool.clone()));
    let apps = Arc::new(PgAppRepository::new(pool.clone()));
    let executions = Arc::new(PgExecutionLogRepository::new(pool.clone()));
    let users = Arc::new(PgUserRepository::new(pool.clone()));
    let tokens = Arc::new(PgTokenRepository::new(pool.clone()));
    let memberships = Arc::new(PgMembershipRepository::new(pool.clone()));
    let authenticator = Arc::new(TokenAuthenticator::new(
        tokens.clone(),
        users.clone(),
        memberships.clone(),
    ));
    let resolver = Arc::new(CachedScriptResolver::new(scripts.clone()));
    // KV changes write their trigger rows through the outbox emitter, in the change's own
    // transaction, and announce them after the commit: this process's dispatcher in
    // memory, other nodes by a coalesced NOTIFY.
    let signal = OutboxSignal::spawn(pool.clone());
    let emitter = OutboxEmitter::new(config.triggers.max_trigger_depth, signal.clone());
    // The same services for scripts and for the admin API, each over its own pool: public
    // requests flooding scripts' KV calls can take every connection of theirs, never one
    // the admin API, logins or the dispatcher need.
    let script_pool = crate::database::sibling_pool(&pool, config.database_script_connections);
    let blobs = Arc::new(FsBlobStore::open(&config.files.root).with_context(|| {
        format!(
            "could not create the files root {} (PICLOUD_FILES_ROOT)",
            config.files.root.display()
        )
    })?);
    let files = |pool: &PgPool| {
        PgFilesService::new(
            pool.clone(),
            Arc::new(emitter.clone()),
            blobs.clone(),
            config.files.limits,
        )
    };
    let services = ServiceSet {
        kv: Arc::new(PgKvService::new(pool.clone(), Arc::new(emitter.clone()))),
        files: Arc::new(files(&pool)),
    };
    let script_services = ServiceSet {
        kv: Arc::new(PgKvService::new(
            script_pool.clone(),
            Arc::new(emitter.clone()),
        )),
        files: Arc::new(files(&script_pool)),
    };
    let sweeper = Arc::new(FileSweeper::new(
        pool.clone(),
        blobs.clone(),
        config.files.sweep_grace,
    ));
    let file_sweeper = spawn_file_sweeper(sweeper.clone(), config.files.sweep_interval);
    // Scripts reach the services through the executor, which drives their async calls on
    // this runtime from each run's own thread.
    let executor = Arc::new(LocalExecutorClient::with_services(
        config.executor.clone(),
        ScriptServices {
            services: script_services,
            runtime: tokio::runtime::Handle::current(),
        },
    ));
    let (recorder, recorder_handle) = BatchingExecutionRecorder::spawn(executions.clone());
    let pruner = spawn_retention_pruner(executions.clone(), config.manager.execution_log_retention);
    let dead_letters = Arc::new(PgDeadLetterRepository::new(pool.clone(), signal.clone()));
    let event_pruner = spawn_event_retention_pruner(EventRetention {
        dead_letters: dead_letters.clone(),
        dead_letter_retention: config.triggers.dead_letter_retention,
        abandoned: Arc::new(PgAbandonedExecutionRepository::new(pool.clone())),
        abandoned_retention: config.triggers.abandoned_executions_retention,
    });

    // Told of every committed change to scripts and apps, by the services that make them.
    let observers = ScriptObservers::new(vec![resolver.clone(), executor.clone()]);
    let admin = picloud_manager_core::router_with_body_limit(
        AdminState::new(AdminDeps {
            apps,
            scripts,
            executions,
            users,
            tokens,
            memberships,
            services,
            file_sweeper: sweeper,
            triggers: Arc::new(PgTriggerRepository::new(pool.clone())),
            dead_letters,
            trigger_defaults: config.triggers.retry,
            authenticator: authenticator.clone(),
            login: Arc::new(LoginDefences::from_config(&config.manager)),
            session_ttl: config.manager.session_ttl,
            validator: executor.clone(),
            observers,
        }),
        config.manager.admin_max_body_bytes,
    );
    let recorder = Arc::new(recorder);
    let dispatcher = Dispatcher::spawn(DispatcherDeps {
        store: Arc::new(PgOutboxStore::new(pool.clone(), emitter)),
        // Holds one pooled connection for LISTEN for as long as the dispatcher runs.
        waker: Arc::new(PgOutboxWaker::spawn(pool.clone(), &signal)),
        resolver: resolver.clone(),
        executor: executor.clone(),
        recorder: recorder.clone(),
        config: DispatcherConfig {
            worker_id: DispatcherConfig::worker_id(&host_name()),
            max_in_flight: dispatcher_max_in_flight(config.executor.gate.max_concurrent),
            lease: config.triggers.outbox_lease,
            max_run: TriggerConfig::longest_run(
                config.executor.ceiling.limits().timeout,
                config.executor.gate.max_wait,
            ),
        },
    });
    let data_plane = picloud_orchestrator_core::router(OrchestratorState {
        resolver,
        executor,
        recorder,
        authenticator,
        config: config.orchestrator,
    });
    let health = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(pool);

    let router = Router::new()
        .merge(admin)
        .merge(data_plane)
        .merge(health)
        .fallback(no_route)
        .layer(from_fn(propagate_request_id))
        .layer(CatchPanicLayer::custom(panic_response));
    Ok(App {
        router,
        recorder: recorder_handle,
        pruner,
        event_pruner,
        file_sweeper,
        dispatcher,
    })
}

/// Triggered runs may take at most half of the execution gate's slots, so a burst of
/// events never leaves HTTP requests waiting for all of them.
fn dispatcher_max_in_flight(max_concurrent: usize) -> u32 {
    u32::try_from(max_concurrent / 2).unwrap_or(u32::MAX).max(1)
}

/// This machine's name, for the dispatcher's worker id (which node holds a claim).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "picloud".to_owned())
}

/// The file, in the data directory, that holds a generated first-admin password.
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";

/// Creates the instance admin on an empty database and says how to log in, once. The
/// password is `password` (from `PICLOUD_ADMIN_PASSWORD`) or a generated one, which goes to
/// [`ADMIN_PASSWORD_FILE`] in `data_dir` (mode 0600) and never into the log: the log says
/// where it is. The file is written before the admin is created, so a refused write stops
/// the start rather than leaving an admin whose password nobody has.
pub async fn bootstrap_admin(
    pool: &PgPool,
    listen: SocketAddr,
    data_dir: &Path,
    password: Option<String>,
) -> anyhow::Result<()> {
    let users = PgUserRepository::new(pool.clone());
    // Every start but the first: no password to make, no file to write and remove.
    if !users
        .list(1, None)
        .await
        .context("could not read the users")?
        .is_empty()
    {
        return Ok(());
    }
    let (password, pending) = match password {
        Some(given) => (given, None),
        None => {
            let generated = generate_password();
            std::fs::create_dir_all(data_dir).with_context(|| {
                format!("could not create the data directory {}", data_dir.display())
            })?;
            let path = data_dir.join(ADMIN_PASSWORD_FILE);
            let pending = PendingSecretFile::write(&path, &generated)
                .with_context(|| format!("could not write {}", path.display()))?;
            (generated, Some(pending))
        }
    };
    match (
        ensure_instance_admin(&users, Some(password)).await?,
        pending,
    ) {
        (Bootstrap::Created { username, .. }, Some(pending)) => {
            let path = pending
                .keep()
                .context("could not keep the admin password file")?;
            tracing::warn!(
                username = %username,
                password_file = %path.display(),
                "created the instance admin with a generated password, written to {} \
                 (readable by this user only): log in with it at \
                 http://{listen}/api/admin/auth/login, change it, then delete the file",
                path.display(),
            );
        }
        (Bootstrap::Created { username, .. }, None) => tracing::info!(
            username = %username,
            "created the instance admin with the password from PICLOUD_ADMIN_PASSWORD"
        ),
        (Bootstrap::AlreadyInitialised, Some(pending)) => pending
            .discard()
            .context("could not remove an unused admin password file")?,
        (Bootstrap::AlreadyInitialised, None) => {}
    }
    Ok(())
}

/// The process is up.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The process can serve: the database answers.
async fn readyz(State(pool): State<PgPool>) -> Response {
    let probe = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&pool),
    )
    .await;
    match probe {
        Ok(Ok(_)) => Json(json!({ "status": "ready" })).into_response(),
        Ok(Err(e)) => not_ready(&e.to_string()),
        Err(_) => not_ready("timed out"),
    }
}

/// An error answer of the server's own, with the status its code has everywhere.
fn error_response(code: ErrorCode, message: impl Into<String>) -> Response {
    let envelope = ErrorEnvelope::new(code, message);
    let status =
        StatusCode::from_u16(envelope.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(envelope)).into_response()
}

fn not_ready(cause: &str) -> Response {
    tracing::warn!(cause, "readiness check failed");
    error_response(ErrorCode::NotReady, "database unreachable")
}

async fn no_route(request: Request) -> Response {
    let message = format!("no route for {} {}", request.method(), request.uri().path());
    error_response(ErrorCode::NotFound, message)
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    error_response(ErrorCode::Internal, "internal error")
}
