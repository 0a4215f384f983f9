//! The manager's own settings, read through [`EnvLookup`] so tests pass a map and only the
//! binaries hand in the process environment.

use std::time::Duration;

use picloud_shared::config::{ConfigError, EnvLookup, parse_var};

use crate::access::TrustedProxies;

/// Settings of the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerConfig {
    /// How long execution records are kept (`PICLOUD_EXECUTION_LOG_RETENTION_DAYS`, in whole
    /// days, default 7).
    pub execution_log_retention: Duration,
    /// Largest admin request body accepted, in bytes (`PICLOUD_ADMIN_MAX_BODY_BYTES`, default
    /// 1 MiB); larger bodies are answered 413.
    pub admin_max_body_bytes: usize,
    /// How long a login session lasts (`PICLOUD_SESSION_TTL_HOURS`, in whole hours, default
    /// 12).
    pub session_ttl: Duration,
    /// Failed logins allowed per username and per client address within
    /// [`login_window`](Self::login_window) before further attempts are refused
    /// (`PICLOUD_LOGIN_MAX_FAILURES`, default 5).
    pub login_max_failures: u32,
    /// The window failed logins are counted over (`PICLOUD_LOGIN_WINDOW_SECS`, default 300).
    pub login_window: Duration,
    /// The reverse proxies whose `X-Forwarded-For` names the client
    /// (`PICLOUD_TRUSTED_PROXIES`, comma-separated addresses and networks; default
    /// loopback, `none` for no one).
    pub trusted_proxies: TrustedProxies,
}

impl ManagerConfig {
    /// Default retention of execution records, in days.
    pub const DEFAULT_RETENTION_DAYS: u32 = 7;
    /// Default admin body limit: room for the largest script source plus its JSON framing.
    pub const DEFAULT_ADMIN_MAX_BODY_BYTES: usize = 1024 * 1024;
    /// Default session lifetime, in hours: a working day.
    pub const DEFAULT_SESSION_TTL_HOURS: u32 = 12;
    /// Default failed logins per key and window.
    pub const DEFAULT_LOGIN_MAX_FAILURES: u32 = 5;
    /// Default window failed logins are counted over, in seconds.
    pub const DEFAULT_LOGIN_WINDOW_SECS: u64 = 300;

    /// Reads the manager's variables, each falling back to its default when unset or empty.
    pub fn from_env(env: &impl EnvLookup) -> Result<Self, ConfigError> {
        const RETENTION: &str = "PICLOUD_EXECUTION_LOG_RETENTION_DAYS";
        const BODY: &str = "PICLOUD_ADMIN_MAX_BODY_BYTES";
        const SESSION_TTL: &str = "PICLOUD_SESSION_TTL_HOURS";
        const LOGIN_FAILURES: &str = "PICLOUD_LOGIN_MAX_FAILURES";
        const LOGIN_WINDOW: &str = "PICLOUD_LOGIN_WINDOW_SECS";
        const TRUSTED_PROXIES: &str = "PICLOUD_TRUSTED_PROXIES";
        let days: u32 = parse_var(env, RETENTION, Self::DEFAULT_RETENTION_DAYS)?;
        if days == 0 {
            // Zero would delete every record as soon as it is written.
            return Err(at_least_one(RETENTION, days));
        }
        let body: usize = parse_var(env, BODY, Self::DEFAULT_ADMIN_MAX_BODY_BYTES)?;
        if body == 0 {
            return Err(at_least_one(BODY, body));
        }
        let hours: u32 = parse_var(env, SESSION_TTL, Self::DEFAULT_SESSION_TTL_HOURS)?;
        if hours == 0 {
            // A session that expires as it is created would make logging in impossible.
            return Err(at_least_one(SESSION_TTL, hours));
        }
        let failures: u32 = parse_var(env, LOGIN_FAILURES, Self::DEFAULT_LOGIN_MAX_FAILURES)?;
        if failures == 0 {
            // Zero would refuse every login, including the first.
            return Err(at_least_one(LOGIN_FAILURES, failures));
        }
        let window: u64 = parse_var(env, LOGIN_WINDOW, Self::DEFAULT_LOGIN_WINDOW_SECS)?;
        if window == 0 {
            return Err(at_least_one(LOGIN_WINDOW, window));
        }
        let trusted_proxies = match env.get(TRUSTED_PROXIES).filter(|v| !v.trim().is_empty()) {
            Some(list) => list.parse().map_err(|reason| ConfigError {
                variable: TRUSTED_PROXIES.to_owned(),
                value: list.clone(),
                reason,
            })?,
            None => TrustedProxies::loopback(),
        };
        Ok(Self {
            execution_log_retention: Duration::from_secs(u64::from(days) * 24 * 60 * 60),
            admin_max_body_bytes: body,
            session_ttl: Duration::from_secs(u64::from(hours) * 60 * 60),
            login_max_failures: failures,
            login_window: Duration::from_secs(window),
            trusted_proxies,
        })
    }
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            execution_log_retention: Duration::from_secs(
                u64::from(Self::DEFAULT_RETENTION_DAYS) * 24 * 60 * 60,
            ),
            admin_max_body_bytes: Self::DEFAULT_ADMIN_MAX_BODY_BYTES,
            session_ttl: Duration::from_secs(u64::from(Self::DEFAULT_SESSION_TTL_HOURS) * 60 * 60),
            login_max_failures: Self::DEFAULT_LOGIN_MAX_FAILURES,
            login_window: Duration::from_secs(Self::DEFAULT_LOGIN_WINDOW_SECS),
            trusted_proxies: TrustedProxies::loopback(),
        }
    }
}

fn at_least_one(variable: &str, value: impl ToString) -> ConfigError {
    ConfigError {
        variable: variable.to_owned(),
        value: value.to_string(),
        reason: "must be at least 1".to_owned(),
    }
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
    fn defaults_apply_when_unset_or_empty() {
        let config =
            ManagerConfig::from_env(&env(&[("PICLOUD_EXECUTION_LOG_RETENTION_DAYS", " ")]))
                .unwrap();
        assert_eq!(config, ManagerConfig::default());
        assert_eq!(
            config.execution_log_retention,
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(config.admin_max_body_bytes, 1_048_576);
        assert_eq!(config.session_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(config.login_max_failures, 5);
        assert_eq!(config.login_window, Duration::from_secs(300));
    }

    #[test]
    fn values_are_read_from_the_environment() {
        let config = ManagerConfig::from_env(&env(&[
            ("PICLOUD_EXECUTION_LOG_RETENTION_DAYS", "30"),
            ("PICLOUD_ADMIN_MAX_BODY_BYTES", "2048"),
            ("PICLOUD_SESSION_TTL_HOURS", "1"),
            ("PICLOUD_LOGIN_MAX_FAILURES", "3"),
            ("PICLOUD_LOGIN_WINDOW_SECS", "60"),
        ]))
        .unwrap();
        assert_eq!(
            config.execution_log_retention,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(config.admin_max_body_bytes, 2048);
        assert_eq!(config.session_ttl, Duration::from_secs(3600));
        assert_eq!(config.login_max_failures, 3);
        assert_eq!(config.login_window, Duration::from_secs(60));
    }

    #[test]
    fn unusable_values_name_the_variable() {
        let err = ManagerConfig::from_env(&env(&[("PICLOUD_EXECUTION_LOG_RETENTION_DAYS", "0")]))
            .unwrap_err();
        assert_eq!(err.variable, "PICLOUD_EXECUTION_LOG_RETENTION_DAYS");
        assert_eq!(err.reason, "must be at least 1");

        let err =
            ManagerConfig::from_env(&env(&[("PICLOUD_EXECUTION_LOG_RETENTION_DAYS", "week")]))
                .unwrap_err();
        assert_eq!(err.variable, "PICLOUD_EXECUTION_LOG_RETENTION_DAYS");
        assert_eq!(err.value, "week");

        let err =
            ManagerConfig::from_env(&env(&[("PICLOUD_ADMIN_MAX_BODY_BYTES", "-1")])).unwrap_err();
        assert_eq!(err.variable, "PICLOUD_ADMIN_MAX_BODY_BYTES");

        for variable in [
            "PICLOUD_SESSION_TTL_HOURS",
            "PICLOUD_LOGIN_MAX_FAILURES",
            "PICLOUD_LOGIN_WINDOW_SECS",
        ] {
            let err = ManagerConfig::from_env(&env(&[(variable, "0")])).unwrap_err();
            assert_eq!(err.variable, variable);
            assert_eq!(err.reason, "must be at least 1");
            let err = ManagerConfig::from_env(&env(&[(variable, "soon")])).unwrap_err();
            assert_eq!(err.variable, variable);
        }
    }
}
