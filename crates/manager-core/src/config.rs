//! The manager's own settings, read through [`EnvLookup`] so tests pass a map and only the
//! binaries hand in the process environment.

use std::time::Duration;

use picloud_shared::config::{ConfigError, EnvLookup, parse_var};

/// Settings of the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagerConfig {
    /// How long execution records are kept (`PICLOUD_EXECUTION_LOG_RETENTION_DAYS`, in whole
    /// days, default 7).
    pub execution_log_retention: Duration,
    /// Largest admin request body accepted, in bytes (`PICLOUD_ADMIN_MAX_BODY_BYTES`, default
    /// 1 MiB); larger bodies are answered 413.
    pub admin_max_body_bytes: usize,
}

impl ManagerConfig {
    /// Default retention of execution records, in days.
    pub const DEFAULT_RETENTION_DAYS: u32 = 7;
    /// Default admin body limit: room for the largest script source plus its JSON framing.
    pub const DEFAULT_ADMIN_MAX_BODY_BYTES: usize = 1024 * 1024;

    /// Reads the manager's variables, each falling back to its default when unset or empty.
    pub fn from_env(env: &impl EnvLookup) -> Result<Self, ConfigError> {
        const RETENTION: &str = "PICLOUD_EXECUTION_LOG_RETENTION_DAYS";
        const BODY: &str = "PICLOUD_ADMIN_MAX_BODY_BYTES";
        let days: u32 = parse_var(env, RETENTION, Self::DEFAULT_RETENTION_DAYS)?;
        if days == 0 {
            // Zero would delete every record as soon as it is written.
            return Err(at_least_one(RETENTION, days));
        }
        let body: usize = parse_var(env, BODY, Self::DEFAULT_ADMIN_MAX_BODY_BYTES)?;
        if body == 0 {
            return Err(at_least_one(BODY, body));
        }
        Ok(Self {
            execution_log_retention: Duration::from_secs(u64::from(days) * 24 * 60 * 60),
            admin_max_body_bytes: body,
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
    }

    #[test]
    fn values_are_read_from_the_environment() {
        let config = ManagerConfig::from_env(&env(&[
            ("PICLOUD_EXECUTION_LOG_RETENTION_DAYS", "30"),
            ("PICLOUD_ADMIN_MAX_BODY_BYTES", "2048"),
        ]))
        .unwrap();
        assert_eq!(
            config.execution_log_retention,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(config.admin_max_body_bytes, 2048);
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
    }
}
