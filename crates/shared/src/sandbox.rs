//! Sandbox limits: the instance-wide ceiling an operator sets, the per-script limits a
//! script author may ask for, and the effective limits an execution runs under.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, EnvLookup, parse_var};

/// Concrete limits one execution runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SandboxLimits {
    /// Most Rhai operations one run may perform.
    pub max_operations: u64,
    /// Wall-clock budget of one run.
    pub timeout: Duration,
    /// Longest string, in bytes.
    pub max_string_size: usize,
    /// Most elements in one array.
    pub max_array_size: usize,
    /// Most entries in one object map.
    pub max_map_size: usize,
    /// Deepest chain of nested function calls.
    pub max_call_depth: usize,
    /// Deepest expression nesting, checked when a script compiles.
    pub max_expr_depth: usize,
    /// Most heap bytes one run may hold at once: everything its thread allocated and has
    /// not freed, `ctx` and the values SDK calls return included.
    pub max_memory_bytes: usize,
}

impl SandboxLimits {
    /// The hard ceiling on a run's wall-clock time, whatever the operator or script asks.
    pub const HARD_TIMEOUT: Duration = Duration::from_secs(300);
}

impl Default for SandboxLimits {
    /// Defaults sized for a small server: generous for request handlers, tight enough that
    /// a runaway script is stopped within seconds and within a few MiB.
    fn default() -> Self {
        Self {
            max_operations: 10_000_000,
            timeout: Duration::from_secs(30),
            max_string_size: 1024 * 1024,
            max_array_size: 100_000,
            max_map_size: 10_000,
            max_call_depth: 64,
            max_expr_depth: 64,
            max_memory_bytes: 32 * 1024 * 1024,
        }
    }
}

/// The per-script limits an author may set: each one may only lower the instance ceiling.
/// An absent field means "the ceiling's value".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScriptLimits {
    /// Most Rhai operations one run may perform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_operations: Option<u64>,
    /// Wall-clock budget of one run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Longest string, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_string_size: Option<usize>,
    /// Most elements in one array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_array_size: Option<usize>,
    /// Most entries in one object map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_map_size: Option<usize>,
    /// Deepest chain of nested function calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_call_depth: Option<usize>,
    /// Deepest expression nesting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_expr_depth: Option<usize>,
    /// Most heap bytes one run may hold at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<usize>,
}

/// A per-script limit that asks for more than the instance allows, or for nothing at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// The limit is above the instance ceiling.
    #[error("limits.{field} is {requested}, above this instance's ceiling of {ceiling}")]
    AboveCeiling {
        /// The JSON field name.
        field: &'static str,
        /// What the script asked for.
        requested: u64,
        /// What the instance allows.
        ceiling: u64,
    },
    /// The limit is zero, which would make every run fail.
    #[error("limits.{field} must be greater than 0")]
    Zero {
        /// The JSON field name.
        field: &'static str,
    },
}

/// The instance-wide sandbox ceiling, loaded from the environment. Per-script limits can
/// only go below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SandboxCeiling {
    limits: SandboxLimits,
}

impl SandboxCeiling {
    /// A ceiling with the given limits; the timeout is capped at [`SandboxLimits::HARD_TIMEOUT`].
    pub fn new(mut limits: SandboxLimits) -> Self {
        limits.timeout = limits.timeout.min(SandboxLimits::HARD_TIMEOUT);
        Self { limits }
    }

    /// Reads `PICLOUD_SANDBOX_*` variables, each defaulting to [`SandboxLimits::default`].
    pub fn from_env(env: &impl EnvLookup) -> Result<Self, ConfigError> {
        let d = SandboxLimits::default();
        let timeout_ms = parse_var(env, "PICLOUD_SANDBOX_TIMEOUT_MS", duration_ms(d.timeout))?;
        Ok(Self::new(SandboxLimits {
            max_operations: parse_var(env, "PICLOUD_SANDBOX_MAX_OPERATIONS", d.max_operations)?,
            timeout: Duration::from_millis(timeout_ms),
            max_string_size: parse_var(env, "PICLOUD_SANDBOX_MAX_STRING_SIZE", d.max_string_size)?,
            max_array_size: parse_var(env, "PICLOUD_SANDBOX_MAX_ARRAY_SIZE", d.max_array_size)?,
            max_map_size: parse_var(env, "PICLOUD_SANDBOX_MAX_MAP_SIZE", d.max_map_size)?,
            max_call_depth: parse_var(env, "PICLOUD_SANDBOX_MAX_CALL_DEPTH", d.max_call_depth)?,
            max_expr_depth: parse_var(env, "PICLOUD_SANDBOX_MAX_EXPR_DEPTH", d.max_expr_depth)?,
            max_memory_bytes: parse_var(
                env,
                "PICLOUD_SANDBOX_MAX_MEMORY_BYTES",
                d.max_memory_bytes,
            )?,
        }))
    }

    /// The ceiling's own limits (what a script with no limits of its own runs under).
    pub fn limits(&self) -> SandboxLimits {
        self.limits
    }

    /// Refuses per-script limits that are zero or above the ceiling, naming the field.
    pub fn check(&self, requested: &ScriptLimits) -> Result<(), LimitsError> {
        let c = &self.limits;
        let pairs: [(&'static str, Option<u64>, u64); 8] = [
            ("max_operations", requested.max_operations, c.max_operations),
            ("timeout_ms", requested.timeout_ms, duration_ms(c.timeout)),
            (
                "max_string_size",
                requested.max_string_size.map(as_u64),
                as_u64(c.max_string_size),
            ),
            (
                "max_array_size",
                requested.max_array_size.map(as_u64),
                as_u64(c.max_array_size),
            ),
            (
                "max_map_size",
                requested.max_map_size.map(as_u64),
                as_u64(c.max_map_size),
            ),
            (
                "max_call_depth",
                requested.max_call_depth.map(as_u64),
                as_u64(c.max_call_depth),
            ),
            (
                "max_expr_depth",
                requested.max_expr_depth.map(as_u64),
                as_u64(c.max_expr_depth),
            ),
            (
                "max_memory_bytes",
                requested.max_memory_bytes.map(as_u64),
                as_u64(c.max_memory_bytes),
            ),
        ];
        for (field, requested, ceiling) in pairs {
            match requested {
                Some(0) => return Err(LimitsError::Zero { field }),
                Some(requested) if requested > ceiling => {
                    return Err(LimitsError::AboveCeiling {
                        field,
                        requested,
                        ceiling,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The limits a script runs under: its own where lower, the ceiling's otherwise. A
    /// script stored under a higher ceiling that was since lowered is clamped, not refused.
    pub fn effective(&self, requested: &ScriptLimits) -> SandboxLimits {
        let c = &self.limits;
        let lower =
            |asked: Option<usize>, ceiling: usize| asked.map_or(ceiling, |a| a.min(ceiling));
        SandboxLimits {
            max_operations: requested
                .max_operations
                .map_or(c.max_operations, |a| a.min(c.max_operations)),
            timeout: requested
                .timeout_ms
                .map_or(c.timeout, |ms| Duration::from_millis(ms).min(c.timeout)),
            max_string_size: lower(requested.max_string_size, c.max_string_size),
            max_array_size: lower(requested.max_array_size, c.max_array_size),
            max_map_size: lower(requested.max_map_size, c.max_map_size),
            max_call_depth: lower(requested.max_call_depth, c.max_call_depth),
            max_expr_depth: lower(requested.max_expr_depth, c.max_expr_depth),
            max_memory_bytes: lower(requested.max_memory_bytes, c.max_memory_bytes),
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn ceiling_loads_from_env_with_defaults() {
        let env: HashMap<String, String> = [
            ("PICLOUD_SANDBOX_MAX_OPERATIONS", "5000"),
            ("PICLOUD_SANDBOX_TIMEOUT_MS", "999999999"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let ceiling = SandboxCeiling::from_env(&env).unwrap();
        assert_eq!(ceiling.limits().max_operations, 5000);
        assert_eq!(ceiling.limits().timeout, SandboxLimits::HARD_TIMEOUT);
        assert_eq!(
            ceiling.limits().max_map_size,
            SandboxLimits::default().max_map_size
        );
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let env: HashMap<String, String> = [(
            "PICLOUD_SANDBOX_MAX_CALL_DEPTH".to_owned(),
            "deep".to_owned(),
        )]
        .into();
        let err = SandboxCeiling::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("PICLOUD_SANDBOX_MAX_CALL_DEPTH"), "{err}");
    }

    #[test]
    fn script_limits_only_go_below_the_ceiling() {
        let ceiling = SandboxCeiling::default();
        let lower = ScriptLimits {
            max_operations: Some(100),
            timeout_ms: Some(50),
            ..Default::default()
        };
        assert_eq!(ceiling.check(&lower), Ok(()));
        let effective = ceiling.effective(&lower);
        assert_eq!(effective.max_operations, 100);
        assert_eq!(effective.timeout, Duration::from_millis(50));
        assert_eq!(effective.max_array_size, ceiling.limits().max_array_size);

        let higher = ScriptLimits {
            max_map_size: Some(usize::MAX),
            ..Default::default()
        };
        assert!(matches!(
            ceiling.check(&higher),
            Err(LimitsError::AboveCeiling {
                field: "max_map_size",
                ..
            })
        ));
        assert_eq!(
            ceiling.effective(&higher).max_map_size,
            ceiling.limits().max_map_size
        );

        let zero = ScriptLimits {
            max_call_depth: Some(0),
            ..Default::default()
        };
        assert_eq!(
            ceiling.check(&zero),
            Err(LimitsError::Zero {
                field: "max_call_depth"
            })
        );
    }

    #[test]
    fn unknown_limit_fields_are_refused() {
        let err = serde_json::from_str::<ScriptLimits>(r#"{"max_ops": 5}"#).unwrap_err();
        assert!(err.to_string().contains("max_ops"), "{err}");
    }
}
