use picloud_shared::config::{ConfigError, EnvLookup, parse_var};

/// The data plane's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrchestratorConfig {
    /// Largest request body an execute endpoint accepts (413 past it).
    pub max_body_bytes: usize,
}

impl OrchestratorConfig {
    /// 1 MiB: ample for API payloads, small enough for a Pi's memory under load.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

    /// Reads `PICLOUD_MAX_BODY_BYTES`.
    pub fn from_env(env: &impl EnvLookup) -> Result<Self, ConfigError> {
        Ok(Self {
            max_body_bytes: parse_var(env, "PICLOUD_MAX_BODY_BYTES", Self::DEFAULT_MAX_BODY_BYTES)?,
        })
    }
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
        }
    }
}
