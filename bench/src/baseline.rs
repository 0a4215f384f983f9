//! The baselines PiCloud is compared with: minimal axum servers answering `hello`, run as
//! child processes of the harness (`picloud-bench serve-baseline <kind>`), each with the
//! same default multi-threaded tokio runtime as `picloud`, so they get their own CPU
//! accounting and compete with the load generator exactly as PiCloud does.
//!
//! The kinds, from the bare floor up to PiCloud's executor without the rest of PiCloud:
//! - `axum`: answers from the async handler;
//! - `spawn-blocking`: hands each request to `tokio::task::spawn_blocking`, the usual way
//!   to run a synchronous interpreter from async code;
//! - `thread-per-request`: starts an OS thread per request with the stack a script run
//!   needs at the default limits (PiCloud's executor before its worker pool);
//! - `executor`: runs a `"hello"` script through PiCloud's `LocalExecutorClient` (gate,
//!   compiled-script cache, worker hand-off, engine, response convention), no database;
//! - `inline`: runs the same compiled script directly in the async handler, on runtime
//!   threads given the stack a run needs: the executor's work without any hand-off, the
//!   floor of running scripts on the runtime's own threads.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use picloud_executor_core::{
    CompiledScript, ExecutorConfig, LocalExecutorClient, ScriptEngine, execution_stack_size,
};
use picloud_shared::{
    AppId, ExecutionError, ExecutionId, ExecutionRequest, ExecutorClient, HttpRequestData,
    InvocationType, RequestId, SandboxCeiling, SandboxLimits, Script, ScriptId, ScriptLimits,
    ScriptName, ScriptResponse,
};
use tokio::sync::oneshot;

/// Every baseline kind, in the order they are measured.
pub const KINDS: [&str; 5] = [
    "axum",
    "spawn-blocking",
    "thread-per-request",
    "executor",
    "inline",
];

/// The path every baseline answers on.
pub const PATH: &str = "/hello";

/// A running baseline server process.
#[derive(Debug)]
pub struct Baseline {
    child: Child,
    // Held open: the child exits when it reads end-of-file, so the server never outlives
    // the harness even if the harness is killed.
    _stdin: Option<ChildStdin>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Baseline {
    /// Starts `kind` as a child process of this executable.
    pub fn start(kind: &str) -> Result<Self> {
        let exe = std::env::current_exe().context("locating the harness executable")?;
        let mut child = Command::new(exe)
            .args(["serve-baseline", kind])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a baseline server")?;
        let stdout = child.stdout.take().context("baseline stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| anyhow!("baseline {kind} did not say where it listens: {line:?}"))?;
        Ok(Self {
            _stdin: child.stdin.take(),
            child,
            addr,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server.
    pub fn stop(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// `serve-baseline <kind>`: serves until standard input closes.
pub fn serve_main(args: &[String]) -> ExitCode {
    let Some(kind) = args.first() else {
        eprintln!("usage: picloud-bench serve-baseline <{}>", KINDS.join("|"));
        return ExitCode::FAILURE;
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if kind == "inline" {
        // Scripts run on these threads: they need the stack a run needs.
        builder.thread_stack_size(execution_stack_size(&SandboxLimits::default()));
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("picloud-bench: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(kind)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("picloud-bench serve-baseline {kind}: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(kind: &str) -> Result<()> {
    let router = match kind {
        "axum" => Router::new().route(PATH, get(|| async { "hello" })),
        "spawn-blocking" => Router::new().route(PATH, get(spawn_blocking_hello)),
        "thread-per-request" => Router::new().route(PATH, get(thread_hello)),
        "executor" => {
            let state = ExecutorState {
                client: LocalExecutorClient::new(ExecutorConfig::default()),
                script: Arc::new(hello_script()?),
            };
            Router::new()
                .route(PATH, get(executor_hello))
                .with_state(state)
        }
        "inline" => {
            let script = hello_script()?;
            let engine = ScriptEngine::new(SandboxCeiling::default());
            let limits = engine.effective_limits(&script.limits);
            let compiled = engine
                .compile(&script.source, limits)
                .map_err(|err| anyhow!("{err}"))?;
            let state = InlineState {
                compiled: Arc::new(compiled),
                script: Arc::new(script),
            };
            Router::new()
                .route(PATH, get(inline_hello))
                .with_state(state)
        }
        other => bail!(
            "unknown baseline {other:?} (expected one of {})",
            KINDS.join(", ")
        ),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening {addr}")?;
        stdout.flush()?;
    }
    let stdin_closed = async {
        // Blocking read on a dedicated thread: the runtime's threads stay free.
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        })
        .await;
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(stdin_closed)
        .await?;
    Ok(())
}

async fn spawn_blocking_hello() -> Response {
    match tokio::task::spawn_blocking(|| "hello").await {
        Ok(body) => body.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn thread_hello() -> Response {
    let (done, result) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .stack_size(execution_stack_size(&SandboxLimits::default()))
        .spawn(move || {
            let _ = done.send("hello");
        });
    if spawned.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    match result.await {
        Ok(body) => body.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Debug, Clone)]
struct ExecutorState {
    client: LocalExecutorClient,
    script: Arc<Script>,
}

fn get_request(script: &Arc<Script>) -> ExecutionRequest {
    ExecutionRequest {
        execution_id: ExecutionId::new(),
        script: Arc::clone(script),
        invocation_type: InvocationType::Http,
        request_id: RequestId::generate(),
        http: Some(HttpRequestData {
            method: "GET".to_owned(),
            path: "/".to_owned(),
            ..HttpRequestData::default()
        }),
        trigger: None,
        depth: 0,
        run_as: None,
        caller: None,
    }
}

fn respond(outcome: Result<ScriptResponse, ExecutionError>) -> Response {
    match outcome {
        Ok(response) => Response::new(Body::from(response.body)),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

async fn executor_hello(State(state): State<ExecutorState>) -> Response {
    let report = state.client.execute(get_request(&state.script)).await;
    respond(report.outcome)
}

#[derive(Debug, Clone)]
struct InlineState {
    compiled: Arc<CompiledScript>,
    script: Arc<Script>,
}

async fn inline_hello(State(state): State<InlineState>) -> Response {
    respond(state.compiled.run(&get_request(&state.script)).outcome)
}

fn hello_script() -> Result<Script> {
    let now = Utc::now();
    Ok(Script {
        id: ScriptId::new(),
        app_id: AppId::new(),
        name: ScriptName::parse("hello")?,
        source: r#""hello""#.to_owned(),
        limits: ScriptLimits::default(),
        version: 1,
        require_token: false,
        created_at: now,
        updated_at: now,
    })
}
