//! `picloud`: the all-in-one server. Configured entirely from the environment (see README).

use std::process::ExitCode;

use picloud::embedded_postgres::{EmbeddedPostgres, PostgresTuning};
use picloud::{
    DatabaseSource, ServerConfig, bootstrap_admin, build_app, database, serve, telemetry,
};
use picloud_shared::config::ProcessEnv;

/// Counts what each script run holds, so `max_memory_bytes` binds whatever a script does.
#[global_allocator]
static ALLOCATOR: picloud_executor_core::RunMemoryAllocator =
    picloud_executor_core::RunMemoryAllocator;

/// The database PiCloud keeps its state in, inside its private cluster.
const EMBEDDED_DATABASE: &str = "picloud";

fn main() -> ExitCode {
    let config = match ServerConfig::from_env(&ProcessEnv) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("picloud: {e}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(config.log_format, &config.log_filter);
    // Runtime threads get the stack a short script needs, so the executor runs such
    // scripts on the thread that took the request instead of handing them to a worker.
    let runtime = match picloud_executor_core::inline_runtime(&config.executor.ceiling.limits()) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("picloud: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "picloud stopped on an error");
            eprintln!("picloud: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let (url, embedded) = match &config.database {
        DatabaseSource::Url(url) => (url.clone(), None),
        DatabaseSource::Embedded => {
            let data_dir = config.data_dir.clone();
            let tuning = PostgresTuning::for_pools(
                config.database_max_connections,
                config.database_script_connections,
                config.postgres_settings.clone(),
            );
            let cluster = tokio::task::spawn_blocking(move || {
                EmbeddedPostgres::start_tuned(&data_dir, tuning)
            })
            .await??;
            (cluster.url(EMBEDDED_DATABASE), Some(cluster))
        }
    };
    let result = serve_until_signal(&config, &url).await;
    if let Some(cluster) = embedded {
        tokio::task::spawn_blocking(move || cluster.stop()).await??;
    }
    result
}

async fn serve_until_signal(config: &ServerConfig, url: &str) -> anyhow::Result<()> {
    let pool = database::connect_and_migrate(url, config.database_max_connections).await?;
    bootstrap_admin(
        &pool,
        config.listen,
        &config.data_dir,
        config.admin_password.expose().map(str::to_owned),
    )
    .await?;
    let app = build_app(config, pool.clone())?;
    let server = serve(config.listen, app.router.clone(), config.http)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "could not listen on {} (PICLOUD_LISTEN): {e}",
                config.listen
            )
        })?;
    tracing::info!(
        addr = %server.addr,
        data_dir = %config.data_dir.display(),
        "picloud is serving; try: curl http://{}/healthz",
        server.addr
    );
    server.run_until(shutdown_signal()).await?;
    tracing::info!(
        "in-flight requests finished, stopping the outbox dispatcher and flushing execution records"
    );
    app.shutdown().await;
    pool.close().await;
    tracing::info!("picloud stopped");
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM (systemd, docker stop).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops picloud");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received, finishing in-flight requests");
}
