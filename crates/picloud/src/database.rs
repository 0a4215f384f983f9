//! Opening the database: create it when missing, then migrate.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// A pooled connection idle for at least this long is pinged before it is handed out, so
/// one the server dropped meanwhile (a restart, an idle timeout) is replaced rather than
/// failing a request. A connection in steady use is not: a ping is a round trip, and
/// pinging before every statement made it the most frequent message PiCloud sent.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(30);

/// A pooled connection idle for this long is closed. Each is a PostgreSQL backend of 2–3
/// MiB, so after a burst of work the database gives its memory back within about twice
/// this (the pool checks once per this period: a wake-up of a few microseconds, not a
/// poll for work); a request after a quiet spell opens a connection again, a few
/// milliseconds.
pub const CLOSE_AFTER_IDLE: Duration = Duration::from_secs(10);

/// Connects to the database `url` names, creating it first if the server does not have it.
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| anyhow::anyhow!("PICLOUD_DATABASE_URL is not a valid PostgreSQL URL: {e}"))?;
    create_database_if_missing(&options).await?;
    let pool = pool_options(max_connections)
        .connect_with(options)
        .await
        .map_err(|e| anyhow::anyhow!("could not connect to the database: {e}"))?;
    picloud_manager_core::MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("could not apply database migrations: {e}"))?;
    Ok(pool)
}

/// A second pool on the same database as `pool`, of `max_connections`, opened lazily:
/// what scripts' service calls use, so a flood of public requests can take all of its
/// connections and none of the admin API's, the login's or the dispatcher's.
pub fn sibling_pool(pool: &PgPool, max_connections: u32) -> PgPool {
    pool_options(max_connections).connect_lazy_with(pool.connect_options().as_ref().clone())
}

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(CLOSE_AFTER_IDLE)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let maintenance = options.clone().database("postgres");
    let mut conn = maintenance
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("could not connect to the database server: {e}"))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let quoted = name.replace('"', "\"\"");
        // CREATE DATABASE takes no bind parameters; the name is quoted as an identifier.
        let statement = format!("CREATE DATABASE \"{quoted}\"");
        match sqlx::raw_sql(&statement).execute(&mut conn).await {
            Ok(_) => tracing::info!(database = %name, "created the database"),
            // Another node created it between our check and our CREATE.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(anyhow::anyhow!("could not create database '{name}': {e}")),
        }
    }
    conn.close().await.ok();
    Ok(())
}
