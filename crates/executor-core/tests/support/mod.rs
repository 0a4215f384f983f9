//! What the suites of the SDK's service modules (`kv`, `files`) share, beside the builders
//! every suite uses (`common`): a client whose scripts reach the services under test, the
//! context of a look from outside any run, the run of a script the test built, and the runs
//! every service's suite makes (the messages a list of mistakes throws, an uncaught throw,
//! a triggered run as a user who may only view the app, as
//! `picloud_testkit::services::principal`).

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use picloud_executor_core::{ExecutorConfig, LocalExecutorClient, ScriptServices};
use picloud_shared::{
    AppId, AppRole, ExecutionReport, ExecutorClient, Scope, Script, ServiceContext, ServiceSet,
};
use picloud_testkit::services::principal;
use serde_json::Value;

use crate::common::{get, json, ok, request, run, script, script_error, text};

/// A client with `config` whose scripts reach `services`, driven on the test's runtime.
pub fn client_with_services(config: ExecutorConfig, services: ServiceSet) -> LocalExecutorClient {
    LocalExecutorClient::with_services(
        config,
        ScriptServices {
            services,
            runtime: tokio::runtime::Handle::current(),
        },
    )
}

/// A call with `app`'s own authority, to look at (or set up) what its scripts see.
pub fn as_app(app: AppId) -> ServiceContext {
    ServiceContext {
        app_id: app,
        execution_id: None,
        depth: 0,
        run_as: None,
    }
}

/// Runs `script` (in its own app) as a `GET /`.
pub async fn run_script(client: &LocalExecutorClient, script: Script) -> ExecutionReport {
    client.execute(request(script, Some(get()))).await
}

/// What each of `attempts` (Rhai expressions, evaluated after `setup`, each in a closure)
/// throws, in order: its message, or `"no error"`. They run in one run of a new app, whose
/// id comes back with them.
pub async fn thrown(
    client: &LocalExecutorClient,
    setup: &str,
    attempts: &[&str],
) -> (AppId, Value) {
    let attempts: Vec<String> = attempts.iter().map(|a| format!("|| {a}")).collect();
    let source = format!(
        "{setup}
        let attempts = [{}];
        let messages = [];
        for attempt in attempts {{
            try {{ attempt.call(); messages.push(\"no error\"); }} catch (e) {{ messages.push(e); }}
        }}
        messages",
        attempts.join(", ")
    );
    let script = script(&source);
    let app = script.app_id;
    (app, json(&ok(run_script(client, script).await)))
}

/// Runs `source`, whose throw on `line` goes uncaught: it must fail the run with a message
/// containing `expected`, the same as a caught one.
pub async fn assert_uncaught(
    client: &LocalExecutorClient,
    source: &str,
    expected: &str,
    line: u32,
) {
    let (message, at, _) = script_error(run(client, source).await);
    assert!(message.contains(expected), "{message}");
    assert_eq!(at, Some(line));
}

/// The text `source` answers in a triggered run (no HTTP request) acting as a user who may
/// only view the script's app, a new one, whose id comes back with it.
pub async fn run_as_viewer(client: &LocalExecutorClient, source: &str) -> (AppId, String) {
    let script = script(source);
    let app = script.app_id;
    let mut request = request(script, None);
    request.run_as = Some(principal(&[(app, AppRole::Viewer)], &Scope::ALL));
    (app, text(&ok(client.execute(request).await)).to_owned())
}
