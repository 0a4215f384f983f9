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
pub mod events;
pub mod execution;
pub mod files;
pub mod ids;
pub mod kv;
pub mod log_text;
pub mod names;
pub mod outbox;
pub mod sandbox;
pub mod script;
pub mod seams;
pub mod services;
pub mod triggers;

pub use access::{
    AccessDenied, AppRole, AuthError, Authenticator, Capability, Credential, CredentialKind,
    Principal, Scope, TOKEN_MARKER, UnknownScope, bearer_token, carries_picloud_token,
    role_satisfies,
};
pub use envelope::{BodyTimedOut, ErrorBody, ErrorCode, ErrorEnvelope, retry_after_seconds};
pub use events::{EventSubject, KvOp, ServiceEvent, ServiceEventEmitter, Transaction, UnitOfWork};
pub use execution::{
    Caller, ExecutionError, ExecutionRecord, ExecutionReport, ExecutionRequest, ExecutionStatus,
    HttpRequestData, InvocationType, LogEntry, LogLevel, ScriptResponse, TriggeredBy,
};
pub use files::{
    ByteRange, ByteStream, ContentType, FileDownload, FileInfo, FileLimits, FileListOptions,
    FileMetadata, FileName, FileOp, FilePage, FileWrite, FilesService, FilesUsage, WriteMode,
};
pub use ids::{AppId, DeadLetterId, ExecutionId, RequestId, ScriptId, TokenId, TriggerId, UserId};
pub use kv::{
    CollectionInfo, CollectionName, KvAtomic, KvCheck, KvCondition, KvEntry, KvIncrement, KvKey,
    KvListOptions, KvMutation, KvNameError, KvPage, KvService, KvVersioned, MAX_KV_VALUE_BYTES,
};
pub use log_text::LogText;
pub use names::{AppSlug, NameError, ScriptName, Username, check_label, is_bidi_control};
pub use outbox::{OutboxError, OutboxItem, OutboxResult, OutboxStore, OutboxWaker};
pub use sandbox::{LimitsError, SandboxCeiling, SandboxLimits, ScriptLimits};
pub use script::Script;
pub use seams::{
    CompileError, ExecutionRecorder, ExecutorClient, ResolveError, ScriptChangeObserver,
    ScriptResolver, ScriptValidator,
};
pub use services::{ServiceContext, ServiceError, ServiceSet};
pub use triggers::{
    CollectionGlob, GlobError, LEASE_GRACE, RetryPolicy, RetryPolicyError, TriggerConfig,
    TriggerKind, UnknownTriggerKind,
};
