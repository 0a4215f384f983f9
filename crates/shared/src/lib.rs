//! PiCloud's shared vocabulary: ids, validated names, domain types, config loaders and the
//! trait seams every layer implements.
//!
//! This crate knows nothing of axum, sqlx or rhai. The cores depend on it; it depends on
//! none of them, which is what keeps the seams honest: the manager validates scripts
//! through [`ScriptValidator`] without linking the engine, and the orchestrator reaches the
//! executor only through [`ExecutorClient`].

pub mod access;
pub mod config;
pub mod envelope;
pub mod execution;
pub mod ids;
pub mod names;
pub mod sandbox;
pub mod script;
pub mod seams;

pub use access::{
    AccessDenied, AppRole, AuthError, Authenticator, Capability, CredentialKind, Principal, Scope,
    UnknownScope, role_satisfies,
};
pub use envelope::ErrorEnvelope;
pub use execution::{
    ExecutionError, ExecutionRecord, ExecutionReport, ExecutionRequest, ExecutionStatus,
    HttpRequestData, InvocationType, LogEntry, LogLevel, ScriptResponse,
};
pub use ids::{AppId, ExecutionId, RequestId, ScriptId, TokenId, UserId};
pub use names::{AppSlug, NameError, ScriptName, Username};
pub use sandbox::{LimitsError, SandboxCeiling, SandboxLimits, ScriptLimits};
pub use script::Script;
pub use seams::{
    CompileError, ExecutionRecorder, ExecutorClient, ResolveError, ScriptChangeObserver,
    ScriptResolver, ScriptValidator,
};
