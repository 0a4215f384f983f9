//! The rules every trigger change goes through, whoever asks: the target script is in the
//! trigger's app, a trigger's retry settings fall back on the instance defaults (on its
//! own settings when changed), a trigger's kind never changes, and a change changes
//! something. What a kind's details must be is the kind's own business (`kinds/`).

use std::sync::Arc;

use picloud_shared::{
    RetryPolicy, RetryPolicyError, Script, ScriptId, ScriptName, TriggerKind, UserId,
};

use super::{NewTrigger, Trigger, TriggerDetails, TriggerRepository, TriggerUpdate};
use crate::apps::App;
use crate::repository::RepoError;
use crate::scripts::ScriptRepository;

/// How a request names the script a trigger runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptRef {
    /// By id.
    Id(ScriptId),
    /// By name, in the trigger's app.
    Name(ScriptName),
}

/// Retry settings a request gives; each absent one keeps the policy it is laid over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOverrides {
    /// Attempts in all.
    pub max_attempts: Option<u32>,
    /// Delay after the first failed attempt, in milliseconds.
    pub base_delay_ms: Option<u64>,
    /// The longest delay, in milliseconds.
    pub max_delay_ms: Option<u64>,
}

impl RetryOverrides {
    fn over(self, base: RetryPolicy) -> Result<RetryPolicy, TriggerChangeError> {
        base.overridden(self.max_attempts, self.base_delay_ms, self.max_delay_ms)
            .map_err(TriggerChangeError::Retry)
    }
}

/// Why a trigger change was refused.
#[derive(Debug, thiserror::Error)]
pub enum TriggerChangeError {
    /// No such script in the trigger's app (one of another app is answered the same).
    #[error("script '{script}' not found in app '{app}'")]
    ScriptNotFound {
        /// The script as the request named it.
        script: String,
        /// The app's slug.
        app: String,
    },
    /// The new details are of another kind than the trigger.
    #[error("details: this is a {0} trigger, its kind cannot change")]
    KindChange(TriggerKind),
    /// The change names nothing to change.
    #[error("name at least one of enabled, retry, details")]
    NothingToChange,
    /// The retry settings cannot be used.
    #[error(transparent)]
    Retry(RetryPolicyError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] RepoError),
}

/// Creates and changes triggers by the rules.
#[derive(Clone)]
pub struct TriggerService {
    triggers: Arc<dyn TriggerRepository>,
    scripts: Arc<dyn ScriptRepository>,
    defaults: RetryPolicy,
}

impl std::fmt::Debug for TriggerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerService")
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

impl TriggerService {
    /// A service over `triggers`, finding targets in `scripts`, with the instance's retry
    /// `defaults` (`TriggerConfig::retry`).
    pub fn new(
        triggers: Arc<dyn TriggerRepository>,
        scripts: Arc<dyn ScriptRepository>,
        defaults: RetryPolicy,
    ) -> Self {
        Self {
            triggers,
            scripts,
            defaults,
        }
    }

    /// The triggers themselves, for reads and deletes.
    pub fn repo(&self) -> &dyn TriggerRepository {
        self.triggers.as_ref()
    }

    async fn target(&self, app: &App, script: &ScriptRef) -> Result<Script, TriggerChangeError> {
        let (found, named) = match script {
            ScriptRef::Id(id) => (self.scripts.get(*id).await?, id.to_string()),
            ScriptRef::Name(name) => (
                self.scripts.get_by_name(&app.slug, name).await?,
                name.to_string(),
            ),
        };
        found
            .filter(|s| s.app_id == app.id)
            .ok_or_else(|| TriggerChangeError::ScriptNotFound {
                script: named,
                app: app.slug.to_string(),
            })
    }

    /// Registers a trigger in `app` running `script`, as `registered_by`; enabled unless
    /// said otherwise.
    pub async fn create(
        &self,
        app: &App,
        script: ScriptRef,
        details: TriggerDetails,
        enabled: Option<bool>,
        retry: RetryOverrides,
        registered_by: UserId,
    ) -> Result<Trigger, TriggerChangeError> {
        let retry = retry.over(self.defaults)?;
        let script = self.target(app, &script).await?;
        Ok(self
            .triggers
            .create(NewTrigger {
                app_id: app.id,
                script_id: script.id,
                enabled: enabled.unwrap_or(true),
                registered_by,
                retry,
                details,
            })
            .await?)
    }

    /// Changes `current`: enabled, its retry settings (over its own), its details (of its
    /// own kind).
    pub async fn update(
        &self,
        current: &Trigger,
        enabled: Option<bool>,
        retry: Option<RetryOverrides>,
        details: Option<TriggerDetails>,
    ) -> Result<Trigger, TriggerChangeError> {
        if let Some(details) = &details
            && details.kind() != current.kind()
        {
            return Err(TriggerChangeError::KindChange(current.kind()));
        }
        let update = TriggerUpdate {
            enabled,
            retry: retry.map(|r| r.over(current.retry)).transpose()?,
            details,
        };
        if update.is_empty() {
            return Err(TriggerChangeError::NothingToChange);
        }
        Ok(self.triggers.update(current.id, update).await?)
    }
}
