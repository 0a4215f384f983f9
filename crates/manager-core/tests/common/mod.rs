//! Builders shared by the integration test targets.

#![allow(dead_code, reason = "each test target uses a different subset")]

pub mod repos;

use chrono::{DateTime, SubsecRound, Utc};
use picloud_shared::{
    AppId, ExecutionId, ExecutionRecord, ExecutionStatus, InvocationType, LogEntry, LogLevel,
    RequestId, ScriptId,
};

/// Now, at the microsecond precision PostgreSQL stores.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A successful HTTP run of `script` that started at `started_at`, with one log line.
pub fn record(script: ScriptId, app: AppId, started_at: DateTime<Utc>) -> ExecutionRecord {
    ExecutionRecord {
        id: ExecutionId::new(),
        script_id: script,
        app_id: app,
        script_version: 2,
        invocation_type: InvocationType::Http,
        trigger_id: None,
        request_id: RequestId::parse("req-1").unwrap(),
        status: ExecutionStatus::Success,
        http_status: Some(200),
        duration_ms: 12,
        logs: vec![LogEntry {
            level: LogLevel::Info,
            message: "hello from the script".to_owned(),
            at: started_at,
        }],
        error: None,
        started_at,
    }
}

/// A failed run with no HTTP status and no logs.
pub fn failed_record(script: ScriptId, app: AppId, started_at: DateTime<Utc>) -> ExecutionRecord {
    ExecutionRecord {
        status: ExecutionStatus::ScriptError,
        http_status: None,
        logs: Vec::new(),
        error: Some("variable not found: x (line 1, position 1)".to_owned()),
        ..record(script, app, started_at)
    }
}
