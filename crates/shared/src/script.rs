//! The stored script.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{AppId, ScriptId, ScriptLimits, ScriptName};

/// A script as stored: one version of its source and limits. The admin API shows it as it
/// is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Script {
    /// Stable id.
    pub id: ScriptId,
    /// The app the script belongs to.
    pub app_id: AppId,
    /// Unique within the app.
    pub name: ScriptName,
    /// Rhai source.
    pub source: String,
    /// The author's limits (each below the instance ceiling).
    pub limits: ScriptLimits,
    /// Starts at 1 and grows by one on every update; compiled code is cached per version.
    pub version: i64,
    /// When true, calling the script needs a bearer token whose principal may execute the
    /// app's scripts; when false (the default) the script is public and decides for itself.
    #[serde(default)]
    pub require_token: bool,
    /// When the script was created.
    pub created_at: DateTime<Utc>,
    /// When the script last changed.
    pub updated_at: DateTime<Utc>,
}
