//! The execution gate: bounds how many scripts run at once. Past the bound a request waits
//! a bounded time for a slot and is then refused as overloaded (503 with `Retry-After`),
//! which keeps a small server responsive instead of thrashing.

use std::sync::Arc;
use std::time::Duration;

use picloud_shared::ExecutionError;
use picloud_shared::config::{ConfigError, EnvLookup, parse_var};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Variable naming the most executions that run at once.
pub const MAX_CONCURRENT_VAR: &str = "PICLOUD_MAX_CONCURRENT_EXECUTIONS";

/// Variable naming how long, in milliseconds, a request waits for a free slot.
pub const QUEUE_TIMEOUT_VAR: &str = "PICLOUD_EXECUTION_QUEUE_TIMEOUT_MS";

/// How many executions may run at once and how long a request waits for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateConfig {
    /// Most executions running at once (at least 1).
    pub max_concurrent: usize,
    /// How long a request waits for a slot before it is refused.
    pub max_wait: Duration,
}

impl GateConfig {
    /// The default wait for a slot, in milliseconds.
    pub const DEFAULT_MAX_WAIT_MS: u64 = 5_000;

    /// The default wait for a slot.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(Self::DEFAULT_MAX_WAIT_MS);

    /// Four executions per available core (scripts often wait on services rather than
    /// compute), and never fewer than four.
    pub fn default_max_concurrent() -> usize {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .saturating_mul(4)
            .max(4)
    }

    /// Reads [`MAX_CONCURRENT_VAR`] (default [`Self::default_max_concurrent`]) and
    /// [`QUEUE_TIMEOUT_VAR`] (default 5000).
    pub fn from_env(env: &impl EnvLookup) -> Result<Self, ConfigError> {
        let max_concurrent = parse_var(env, MAX_CONCURRENT_VAR, Self::default_max_concurrent())?;
        if !(1..=Semaphore::MAX_PERMITS).contains(&max_concurrent) {
            return Err(ConfigError {
                variable: MAX_CONCURRENT_VAR.to_owned(),
                value: max_concurrent.to_string(),
                reason: format!("must be from 1 to {}", Semaphore::MAX_PERMITS),
            });
        }
        let wait_ms = parse_var(env, QUEUE_TIMEOUT_VAR, Self::DEFAULT_MAX_WAIT_MS)?;
        Ok(Self {
            max_concurrent,
            max_wait: Duration::from_millis(wait_ms),
        })
    }
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            max_concurrent: Self::default_max_concurrent(),
            max_wait: Self::DEFAULT_MAX_WAIT,
        }
    }
}

/// Bounds concurrent executions. Clones share the same slots.
#[derive(Debug, Clone)]
pub struct ExecutionGate {
    slots: Arc<Semaphore>,
    capacity: usize,
    max_wait: Duration,
}

/// A held execution slot, released when dropped.
#[derive(Debug)]
pub struct ExecutionPermit {
    _permit: OwnedSemaphorePermit,
}

impl ExecutionGate {
    /// A gate with `config.max_concurrent` slots (clamped to what a semaphore can hold).
    pub fn new(config: GateConfig) -> Self {
        let capacity = config.max_concurrent.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
            max_wait: config.max_wait,
        }
    }

    /// How many executions may run at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many slots are free right now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// Waits up to the configured time for a slot; refuses with
    /// [`ExecutionError::Overloaded`] when none frees up.
    pub async fn acquire(&self) -> Result<ExecutionPermit, ExecutionError> {
        // Most requests find a free slot; taking it directly spares them a timer.
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(ExecutionPermit { _permit: permit });
        }
        match tokio::time::timeout(self.max_wait, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(ExecutionPermit { _permit: permit }),
            // The semaphore is never closed; answer as unavailable rather than panic.
            Ok(Err(_closed)) => Err(ExecutionError::Unavailable {
                message: "execution gate closed".to_owned(),
            }),
            Err(_elapsed) => Err(ExecutionError::Overloaded {
                retry_after: self.retry_after(),
            }),
        }
    }

    /// The wait, rounded up to whole seconds and at least one: a client that waited this
    /// long without getting in should not come back sooner.
    fn retry_after(&self) -> Duration {
        let mut secs = self.max_wait.as_secs();
        if self.max_wait.subsec_nanos() > 0 {
            secs += 1;
        }
        Duration::from_secs(secs.max(1))
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
    fn config_reads_env_with_defaults() {
        let config = GateConfig::from_env(&env(&[])).unwrap();
        assert_eq!(config, GateConfig::default());
        assert!(config.max_concurrent >= 4);
        assert_eq!(config.max_wait, Duration::from_secs(5));

        let config = GateConfig::from_env(&env(&[
            (MAX_CONCURRENT_VAR, "2"),
            (QUEUE_TIMEOUT_VAR, "250"),
        ]))
        .unwrap();
        assert_eq!(config.max_concurrent, 2);
        assert_eq!(config.max_wait, Duration::from_millis(250));
    }

    #[test]
    fn bad_config_names_the_variable() {
        let err = GateConfig::from_env(&env(&[(MAX_CONCURRENT_VAR, "0")])).unwrap_err();
        assert_eq!(err.variable, MAX_CONCURRENT_VAR);
        let err = GateConfig::from_env(&env(&[(QUEUE_TIMEOUT_VAR, "soon")])).unwrap_err();
        assert_eq!(err.variable, QUEUE_TIMEOUT_VAR);
    }

    #[tokio::test]
    async fn a_full_gate_refuses_after_the_wait() {
        let gate = ExecutionGate::new(GateConfig {
            max_concurrent: 1,
            max_wait: Duration::from_millis(20),
        });
        let held = gate.acquire().await.unwrap();
        assert_eq!(gate.available(), 0);
        assert_eq!(
            gate.acquire().await.unwrap_err(),
            ExecutionError::Overloaded {
                retry_after: Duration::from_secs(1)
            }
        );
        drop(held);
        assert!(
            gate.acquire().await.is_ok(),
            "a released slot is free again"
        );
    }

    #[tokio::test]
    async fn a_waiting_request_gets_a_slot_that_frees_in_time() {
        let gate = ExecutionGate::new(GateConfig {
            max_concurrent: 1,
            max_wait: Duration::from_secs(5),
        });
        let held = gate.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire().await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }

    #[test]
    fn retry_after_rounds_the_wait_up() {
        let gate = |ms| {
            ExecutionGate::new(GateConfig {
                max_concurrent: 1,
                max_wait: Duration::from_millis(ms),
            })
        };
        assert_eq!(gate(0).retry_after(), Duration::from_secs(1));
        assert_eq!(gate(2_500).retry_after(), Duration::from_secs(3));
        assert_eq!(gate(5_000).retry_after(), Duration::from_secs(5));
    }
}
