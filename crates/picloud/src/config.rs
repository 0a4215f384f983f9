//! The server's configuration, read once from the environment at start-up. Every variable
//! is documented in the README with its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::http_server::HttpLimits;
use picloud_executor_core::ExecutorConfig;
use picloud_manager_core::ManagerConfig;
use picloud_orchestrator_core::OrchestratorConfig;
use picloud_shared::config::{ConfigError, EnvLookup, optional_var, parse_var};
use picloud_shared::{FileLimits, TriggerConfig};

/// Where the database comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseSource {
    /// An existing server (`PICLOUD_DATABASE_URL`); the database is created if missing.
    Url(String),
    /// A private cluster PiCloud runs under its data directory.
    Embedded,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable lines, for a terminal.
    Pretty,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            _ => Err("expected 'json' or 'pretty'".to_owned()),
        }
    }
}

/// PiCloud's own events at info; the database driver's notices (such as "relation already
/// exists, skipping" on every migration check) only when they are warnings.
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn";

/// Everything the `picloud` binary is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address the HTTP server binds (`PICLOUD_LISTEN`).
    pub listen: SocketAddr,
    /// Where PiCloud keeps its state (`PICLOUD_DATA_DIR`).
    pub data_dir: PathBuf,
    /// The database.
    pub database: DatabaseSource,
    /// Pool size of the admin API, logins, the dispatcher and the recorder
    /// (`PICLOUD_DATABASE_MAX_CONNECTIONS`).
    pub database_max_connections: u32,
    /// Pool size of scripts' service calls (`PICLOUD_DATABASE_SCRIPT_CONNECTIONS`), apart
    /// from the other so that public endpoints cannot take its connections.
    pub database_script_connections: u32,
    /// Server settings of the private PostgreSQL given after PiCloud's own
    /// (`PICLOUD_POSTGRES_SETTINGS`, `name=value` pairs).
    pub postgres_settings: Vec<(String, String)>,
    /// `PICLOUD_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `PICLOUD_LOG`, a tracing filter such as `info` or `picloud=debug,info`.
    pub log_filter: String,
    /// The executor's sandbox ceiling and execution gate.
    pub executor: ExecutorConfig,
    /// The data plane's limits.
    pub orchestrator: OrchestratorConfig,
    /// The control plane's settings.
    pub manager: ManagerConfig,
    /// The event core's settings: retry defaults, outbox lease, depth limit, retention.
    pub triggers: TriggerConfig,
    /// The first start's instance admin password (`PICLOUD_ADMIN_PASSWORD`).
    pub admin_password: Redacted,
    /// How the HTTP server bounds slow and idle clients (`PICLOUD_HTTP_*`).
    pub http: HttpLimits,
    /// Where files' bytes live, their limits and the sweep (`PICLOUD_FILES_*`).
    pub files: FilesConfig,
}

/// The files service's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesConfig {
    /// Where the bytes live (`PICLOUD_FILES_ROOT`, default `<data dir>/files`).
    pub root: PathBuf,
    /// The per-file limit and the per-app quota (`PICLOUD_FILES_MAX_FILE_BYTES`,
    /// `PICLOUD_FILES_APP_QUOTA_BYTES`).
    pub limits: FileLimits,
    /// Time between two sweeps (`PICLOUD_FILES_SWEEP_INTERVAL_SECS`); one also runs at
    /// start-up.
    pub sweep_interval: Duration,
    /// What the sweep leaves alone: bytes written less than this long ago
    /// (`PICLOUD_FILES_SWEEP_GRACE_SECS`).
    pub sweep_grace: Duration,
}

impl FilesConfig {
    /// Six hours between sweeps.
    pub const DEFAULT_SWEEP_INTERVAL_SECS: u64 = 6 * 60 * 60;
    /// An hour's grace.
    pub const DEFAULT_SWEEP_GRACE_SECS: u64 = 60 * 60;

    fn from_env(env: &impl EnvLookup, data_dir: &std::path::Path) -> Result<Self, ConfigError> {
        let root = optional_var(env, "PICLOUD_FILES_ROOT")
            .map_or_else(|| data_dir.join("files"), PathBuf::from);
        let limits = FileLimits {
            max_file_bytes: parse_var(
                env,
                "PICLOUD_FILES_MAX_FILE_BYTES",
                FileLimits::DEFAULT_MAX_FILE_BYTES,
            )?,
            app_quota_bytes: parse_var(
                env,
                "PICLOUD_FILES_APP_QUOTA_BYTES",
                FileLimits::DEFAULT_APP_QUOTA_BYTES,
            )?,
        };
        const INTERVAL: &str = "PICLOUD_FILES_SWEEP_INTERVAL_SECS";
        let interval: u64 = parse_var(env, INTERVAL, Self::DEFAULT_SWEEP_INTERVAL_SECS)?;
        // A sweep walks every blob: more often than a minute would be polling.
        if interval < 60 {
            return Err(ConfigError {
                variable: INTERVAL.to_owned(),
                value: interval.to_string(),
                reason: "must be at least 60".to_owned(),
            });
        }
        let grace: u64 = parse_var(
            env,
            "PICLOUD_FILES_SWEEP_GRACE_SECS",
            Self::DEFAULT_SWEEP_GRACE_SECS,
        )?;
        Ok(Self {
            root,
            limits,
            sweep_interval: Duration::from_secs(interval),
            sweep_grace: Duration::from_secs(grace),
        })
    }
}

/// A secret setting that never shows in a debug print of the config.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redacted(Option<String>);

impl Redacted {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(<redacted>)"
        } else {
            "None"
        })
    }
}

impl ServerConfig {
    /// The default listen address: loopback only, since Caddy sits in front.
    pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

    /// Reads every setting, failing on the first unusable value with its variable's name.
    pub fn from_env(env: &impl EnvLookup) -> Result<Self, ConfigError> {
        let listen = parse_var(
            env,
            "PICLOUD_LISTEN",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
        )?;
        let data_dir = optional_var(env, "PICLOUD_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| default_data_dir(env));
        let database = optional_var(env, "PICLOUD_DATABASE_URL")
            .map_or(DatabaseSource::Embedded, DatabaseSource::Url);
        let executor = ExecutorConfig::from_env(env)?;
        let triggers = TriggerConfig::from_env(env)?;
        // A lease that ends while its run may still be going would let a second dispatcher
        // start the same delivery: refuse such a configuration at start-up.
        triggers.check_lease(executor.ceiling.limits().timeout, executor.gate.max_wait)?;
        let files = FilesConfig::from_env(env, &data_dir)?;
        let postgres_settings = optional_var(env, "PICLOUD_POSTGRES_SETTINGS")
            .map(|raw| {
                crate::embedded_postgres::parse_settings(&raw).map_err(|reason| ConfigError {
                    variable: "PICLOUD_POSTGRES_SETTINGS".to_owned(),
                    value: raw.clone(),
                    reason,
                })
            })
            .transpose()?
            .unwrap_or_default();
        Ok(Self {
            listen,
            data_dir,
            database,
            database_max_connections: pool_size(env, "PICLOUD_DATABASE_MAX_CONNECTIONS", 10)?,
            database_script_connections: pool_size(env, "PICLOUD_DATABASE_SCRIPT_CONNECTIONS", 6)?,
            postgres_settings,
            log_format: parse_var(env, "PICLOUD_LOG_FORMAT", LogFormat::Json)?,
            log_filter: optional_var(env, "PICLOUD_LOG")
                .unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned()),
            executor,
            orchestrator: OrchestratorConfig::from_env(env)?,
            manager: ManagerConfig::from_env(env)?,
            triggers,
            admin_password: Redacted(optional_var(env, "PICLOUD_ADMIN_PASSWORD")),
            http: HttpLimits::from_env(env)?,
            files,
        })
    }
}

/// A pool size: at least one connection, or nothing could ever be asked.
fn pool_size(env: &impl EnvLookup, name: &str, default: u32) -> Result<u32, ConfigError> {
    let size: u32 = parse_var(env, name, default)?;
    if size == 0 {
        return Err(ConfigError {
            variable: name.to_owned(),
            value: size.to_string(),
            reason: "must be at least 1".to_owned(),
        });
    }
    Ok(size)
}

/// `/var/lib/picloud` for root (a system service, and a place the `postgres` user can
/// traverse); `$XDG_DATA_HOME/picloud` or `~/.local/share/picloud` for anyone else.
fn default_data_dir(env: &impl EnvLookup) -> PathBuf {
    if crate::embedded_postgres::running_as_root() {
        return PathBuf::from("/var/lib/picloud");
    }
    if let Some(xdg) = optional_var(env, "XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("picloud");
    }
    optional_var(env, "HOME").map_or_else(
        || PathBuf::from("picloud-data"),
        |home| PathBuf::from(home).join(".local/share/picloud"),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_need_no_environment() {
        let config = ServerConfig::from_env(&env(&[("PICLOUD_DATA_DIR", "/srv/pc")])).unwrap();
        assert_eq!(config.listen.to_string(), ServerConfig::DEFAULT_LISTEN);
        assert_eq!(config.database, DatabaseSource::Embedded);
        assert_eq!(config.data_dir, PathBuf::from("/srv/pc"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.files.root, PathBuf::from("/srv/pc/files"));
        assert_eq!(config.files.limits, FileLimits::default());
    }

    #[test]
    fn a_database_url_replaces_the_private_cluster() {
        let config =
            ServerConfig::from_env(&env(&[("PICLOUD_DATABASE_URL", "postgres://db/x")])).unwrap();
        assert_eq!(
            config.database,
            DatabaseSource::Url("postgres://db/x".into())
        );
    }

    #[test]
    fn the_admin_password_never_shows_in_a_debug_print() {
        let config =
            ServerConfig::from_env(&env(&[("PICLOUD_ADMIN_PASSWORD", "hunter2-hunter2")])).unwrap();
        assert_eq!(config.admin_password.expose(), Some("hunter2-hunter2"));
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (key, value) in [
            ("PICLOUD_LISTEN", "nowhere"),
            ("PICLOUD_LOG_FORMAT", "xml"),
            ("PICLOUD_DATABASE_MAX_CONNECTIONS", "-1"),
            ("PICLOUD_MAX_BODY_BYTES", "lots"),
            ("PICLOUD_OUTBOX_LEASE_SECS", "soon"),
            ("PICLOUD_MAX_TRIGGER_DEPTH", "0"),
            ("PICLOUD_FILES_MAX_FILE_BYTES", "big"),
            ("PICLOUD_FILES_SWEEP_INTERVAL_SECS", "5"),
            ("PICLOUD_POSTGRES_SETTINGS", "shared_buffers"),
        ] {
            let err = ServerConfig::from_env(&env(&[(key, value)])).unwrap_err();
            assert_eq!(err.variable, key);
        }
    }

    #[test]
    fn the_outbox_lease_must_outlast_the_longest_run() {
        // The review's case: 58 s of sandbox time and 30 s of queue wait do not fit a
        // 60 s lease, although the timeout alone would.
        let err = ServerConfig::from_env(&env(&[
            ("PICLOUD_SANDBOX_TIMEOUT_MS", "58000"),
            ("PICLOUD_EXECUTION_QUEUE_TIMEOUT_MS", "30000"),
            ("PICLOUD_OUTBOX_LEASE_SECS", "60"),
        ]))
        .unwrap_err();
        assert_eq!(err.variable, "PICLOUD_OUTBOX_LEASE_SECS");
        assert!(err.reason.contains("execution queue wait"), "{err}");

        let config = ServerConfig::from_env(&env(&[
            ("PICLOUD_SANDBOX_TIMEOUT_MS", "120000"),
            ("PICLOUD_OUTBOX_LEASE_SECS", "132"),
            ("PICLOUD_MAX_TRIGGER_DEPTH", "3"),
        ]))
        .unwrap();
        assert_eq!(
            config.triggers.outbox_lease,
            std::time::Duration::from_secs(132)
        );
        assert_eq!(config.triggers.max_trigger_depth, 3);
    }
}
