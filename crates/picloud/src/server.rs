//! Composition: every router in one place, the health endpoints, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::from_fn;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use picloud_executor_core::LocalExecutorClient;
use picloud_manager_core::http::LoginRateLimiter;
use picloud_manager_core::postgres::{
    PgAppRepository, PgExecutionLogRepository, PgMembershipRepository, PgScriptRepository,
    PgTokenRepository, PgUserRepository,
};
use picloud_manager_core::{
    AdminState, BatchingExecutionRecorder, Bootstrap, CachedScriptResolver, PrunerHandle,
    RecorderHandle, TokenAuthenticator, ensure_instance_admin, spawn_retention_pruner,
};
use picloud_orchestrator_core::{OrchestratorState, propagate_request_id};
use picloud_shared::{ErrorEnvelope, ScriptChangeObserver};
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;

use crate::ServerConfig;

/// The composed application: its router plus the background work that must be drained
/// on shutdown.
#[derive(Debug)]
pub struct App {
    /// Every route of the server.
    pub router: Router,
    recorder: RecorderHandle,
    pruner: PrunerHandle,
}

impl App {
    /// Flushes every queued execution record and stops background tasks.
    pub async fn shutdown(self) {
        self.recorder.shutdown().await;
        self.pruner.shutdown().await;
    }
}

/// Wires the Postgres repositories, the in-process executor and both routers.
pub fn build_app(config: &ServerConfig, pool: PgPool) -> App {
    let executor = Arc::new(LocalExecutorClient::new(config.executor.clone()));
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
    let (recorder, recorder_handle) = BatchingExecutionRecorder::spawn(executions.clone());
    let pruner = spawn_retention_pruner(executions.clone(), config.manager.execution_log_retention);

    let observers: Vec<Arc<dyn ScriptChangeObserver>> = vec![resolver.clone(), executor.clone()];
    let admin = picloud_manager_core::router_with_body_limit(
        AdminState {
            scripts,
            apps,
            executions,
            users,
            tokens,
            memberships,
            authenticator: authenticator.clone(),
            login_limiter: Arc::new(LoginRateLimiter::new(
                config.manager.login_max_failures,
                config.manager.login_window,
            )),
            session_ttl: config.manager.session_ttl,
            validator: executor.clone(),
            observers,
        },
        config.manager.admin_max_body_bytes,
    );
    let data_plane = picloud_orchestrator_core::router(OrchestratorState {
        resolver,
        executor,
        recorder: Arc::new(recorder),
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
    App {
        router,
        recorder: recorder_handle,
        pruner,
    }
}

/// Creates the instance admin on an empty database and says how to log in, once: the
/// generated password is stored only as a hash, so this log line is the only place it
/// ever appears.
pub async fn bootstrap_admin(
    pool: &PgPool,
    listen: SocketAddr,
    password: Option<String>,
) -> anyhow::Result<()> {
    let users = PgUserRepository::new(pool.clone());
    match ensure_instance_admin(&users, password).await? {
        Bootstrap::Created {
            username,
            generated_password: Some(password),
        } => tracing::warn!(
            username = %username,
            generated_password = %password,
            "created the instance admin with a generated password, shown only this once; log in with: \
             curl -s http://{listen}/api/admin/auth/login -H 'content-type: application/json' \
             -d '{{\"username\": \"{username}\", \"password\": \"<generated_password>\"}}'"
        ),
        Bootstrap::Created { username, .. } => tracing::info!(
            username = %username,
            "created the instance admin with the password from PICLOUD_ADMIN_PASSWORD"
        ),
        Bootstrap::AlreadyInitialised => {}
    }
    Ok(())
}

/// A server listening on a real socket.
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, then returns.
    pub async fn shutdown(self) -> std::io::Result<()> {
        // The server may have stopped on its own already; then there is nothing to signal.
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| std::io::Error::other(format!("server task failed: {e}")))?
    }

    /// Waits until the server stops after `signal` completes.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> std::io::Result<()> {
        signal.await;
        self.shutdown().await
    }
}

/// Binds `listen` and serves `router` until [`RunningServer::shutdown`].
pub async fn serve(listen: SocketAddr, router: Router) -> std::io::Result<RunningServer> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // The peer address feeds the per-address login rate limit.
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        })
        .await
    });
    Ok(RunningServer { addr, task, stop })
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

fn not_ready(cause: &str) -> Response {
    tracing::warn!(cause, "readiness check failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(ErrorEnvelope::new("not_ready", "database unreachable")),
    )
        .into_response()
}

async fn no_route(request: Request) -> Response {
    let message = format!("no route for {} {}", request.method(), request.uri().path());
    (
        StatusCode::NOT_FOUND,
        Json(ErrorEnvelope::new("not_found", message)),
    )
        .into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(ErrorEnvelope::new("internal", "internal error")),
    )
        .into_response()
}
