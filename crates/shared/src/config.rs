//! Config loading helpers. Loaders take an [`EnvLookup`] rather than reading the process
//! environment, so tests pass a map and only the binaries hand in the real environment.

use std::collections::HashMap;
use std::str::FromStr;

/// Where config values come from: the process environment in binaries, a map in tests.
pub trait EnvLookup {
    /// The value of `key`, if set.
    fn get(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvLookup for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl EnvLookup for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

/// A config variable that is set but unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?} is not valid: {reason}")]
pub struct ConfigError {
    /// The variable's name.
    pub variable: String,
    /// The value found.
    pub value: String,
    /// What was expected.
    pub reason: String,
}

/// Reads and parses `key`, falling back to `default` when it is unset or empty.
pub fn parse_var<T>(env: &impl EnvLookup, key: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match env.get(key) {
        Some(raw) if !raw.trim().is_empty() => {
            raw.trim().parse().map_err(|e: T::Err| ConfigError {
                variable: key.to_owned(),
                value: raw.clone(),
                reason: e.to_string(),
            })
        }
        _ => Ok(default),
    }
}

/// Reads `key` as text, `None` when unset or empty.
pub fn optional_var(env: &impl EnvLookup, key: &str) -> Option<String> {
    env.get(key).filter(|v| !v.trim().is_empty())
}
