//! The rules every change to a script goes through, whoever asks for it (the admin API, a
//! CLI, the dashboard's test run): the source's size and that it compiles, limits within
//! the instance's ceiling, the write, and then the caches of compiled code and lookups told
//! of the change. Reads go straight to the repository.

use std::sync::Arc;

use picloud_shared::{
    AppId, CompileError, LimitsError, Script, ScriptChangeObserver, ScriptId, ScriptLimits,
    ScriptValidator,
};

use super::{NewScript, ScriptRepository, ScriptUpdate};
use crate::repository::RepoError;

/// The largest script source accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 256 * 1024;

/// What is told of committed changes to scripts and apps: the caches of compiled code and
/// of lookups. Cheap to clone.
#[derive(Clone, Default)]
pub struct ScriptObservers(Arc<[Arc<dyn ScriptChangeObserver>]>);

impl std::fmt::Debug for ScriptObservers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ScriptObservers")
            .field(&self.0.len())
            .finish()
    }
}

impl ScriptObservers {
    /// Observers told of every committed change.
    pub fn new(observers: Vec<Arc<dyn ScriptChangeObserver>>) -> Self {
        Self(observers.into())
    }

    /// A script changed or went away.
    pub fn script_changed(&self, id: ScriptId) {
        for observer in self.0.iter() {
            observer.script_changed(id);
        }
    }

    /// A script was created or updated (after [`Self::script_changed`] for an update).
    pub fn script_saved(&self, script: &Script) {
        for observer in self.0.iter() {
            observer.script_saved(script);
        }
    }

    /// An app was renamed or deleted.
    pub fn app_changed(&self, id: AppId) {
        for observer in self.0.iter() {
            observer.app_changed(id);
        }
    }
}

/// Why a script change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScriptChangeError {
    /// The source is over [`MAX_SOURCE_BYTES`].
    #[error("source is {len} bytes, above the limit of {max} bytes")]
    SourceTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The source does not compile.
    #[error(transparent)]
    Compile(CompileError),
    /// The limits go past the instance's ceiling.
    #[error(transparent)]
    Limits(LimitsError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] RepoError),
}

/// Creates, updates and deletes scripts by the rules, and tells the caches.
#[derive(Clone)]
pub struct ScriptService {
    repo: Arc<dyn ScriptRepository>,
    validator: Arc<dyn ScriptValidator>,
    observers: ScriptObservers,
}

impl std::fmt::Debug for ScriptService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptService")
            .field("observers", &self.observers)
            .finish_non_exhaustive()
    }
}

impl ScriptService {
    /// A service over `repo`, validating through `validator` and telling `observers`.
    pub fn new(
        repo: Arc<dyn ScriptRepository>,
        validator: Arc<dyn ScriptValidator>,
        observers: ScriptObservers,
    ) -> Self {
        Self {
            repo,
            validator,
            observers,
        }
    }

    /// The scripts themselves, for reads.
    pub fn repo(&self) -> &dyn ScriptRepository {
        self.repo.as_ref()
    }

    /// The observers, for changes made elsewhere that concern scripts (an app's deletion).
    pub fn observers(&self) -> &ScriptObservers {
        &self.observers
    }

    async fn check_source(&self, source: &str) -> Result<(), ScriptChangeError> {
        if source.len() > MAX_SOURCE_BYTES {
            return Err(ScriptChangeError::SourceTooLarge {
                len: source.len(),
                max: MAX_SOURCE_BYTES,
            });
        }
        if let Some(nul) = nul_position(source) {
            return Err(ScriptChangeError::Compile(nul));
        }
        self.validator
            .validate(source)
            .await
            .map_err(ScriptChangeError::Compile)
    }

    fn check_limits(&self, limits: &ScriptLimits) -> Result<(), ScriptChangeError> {
        self.validator
            .ceiling()
            .check(limits)
            .map_err(ScriptChangeError::Limits)
    }

    /// Creates a script once its limits and source pass, then hands it to the caches, so
    /// even its first call needs no lookup.
    pub async fn create(&self, new: NewScript) -> Result<Script, ScriptChangeError> {
        self.check_limits(&new.limits)?;
        self.check_source(&new.source).await?;
        let created = self.repo.create(new).await?;
        self.observers.script_saved(&created);
        Ok(created)
    }

    /// Applies `update` once what it changes passes; the version grows by one.
    pub async fn update(
        &self,
        id: ScriptId,
        update: ScriptUpdate,
    ) -> Result<Script, ScriptChangeError> {
        if let Some(limits) = &update.limits {
            self.check_limits(limits)?;
        }
        if let Some(source) = &update.source {
            self.check_source(source).await?;
        }
        let updated = self.repo.update(id, update).await?;
        self.observers.script_changed(id);
        self.observers.script_saved(&updated);
        Ok(updated)
    }

    /// Deletes a script; its compiled code and lookups go with it.
    pub async fn delete(&self, id: ScriptId) -> Result<(), ScriptChangeError> {
        self.repo.delete(id).await?;
        self.observers.script_changed(id);
        Ok(())
    }
}

/// Where the first NUL character of `source` is, as a compile error: Rhai would accept one
/// inside a string literal, but PostgreSQL `text` cannot store it, so it is refused here with
/// its place rather than failing the insert.
fn nul_position(source: &str) -> Option<CompileError> {
    let offset = source.find('\0')?;
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some(CompileError {
        message: "the source holds a NUL character, which cannot be stored".to_owned(),
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
    })
}
