//! Inline runs: on a runtime made by `inline_runtime`, a compiled script runs on the
//! thread that asked for it while it is short, and moves to a script worker, with no
//! effect left behind, as soon as it is not. Every sandbox limit holds either way.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

mod common;
mod support;

// The run-memory limit is counted by the allocator, as in the `picloud` binary.
#[global_allocator]
static ALLOCATOR: picloud_executor_core::RunMemoryAllocator =
    picloud_executor_core::RunMemoryAllocator;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use picloud_executor_core::{
    ExecutorConfig, INLINE_COMPILE_MAX_SOURCE, LocalExecutorClient, ScriptEngine, inline_runtime,
};
use picloud_manager_core::kv::InMemoryKvService;
use picloud_manager_core::outbox::RecordingEmitter;
use picloud_shared::{
    CollectionName, ExecutionError, ExecutionReport, ExecutorClient, KvKey, KvService,
    SandboxCeiling, SandboxLimits, Script, ScriptLimits, ServiceSet,
};
use serde_json::json;
use support::{as_app, client_with_services};

/// Runs `test` as a task on an inline-capable runtime (the runtime's own threads have the
/// stack; the thread blocking on it does not).
fn on_inline_runtime<F>(test: impl FnOnce() -> F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = inline_runtime(&SandboxLimits::default()).unwrap();
    let task = test();
    runtime.block_on(async move { tokio::spawn(task).await.unwrap() })
}

/// Two runs of `script`: the first compiles it, the second runs it compiled.
async fn twice(client: &LocalExecutorClient, script: &Script) -> ExecutionReport {
    client.execute(request(script.clone(), Some(get()))).await;
    client.execute(request(script.clone(), Some(get()))).await
}

#[test]
fn a_compiled_short_script_runs_on_the_runtime_thread() {
    on_inline_runtime(|| async {
        let client = client();
        let report = twice(&client, &script(r#"log::info("hi"); "hello""#)).await;
        assert_eq!(text(&ok(report.clone())), "hello");
        assert_eq!(report.logs.len(), 1);
        assert_eq!(client.inline_runs(), 2, "both runs were inline");
        assert_eq!(client.worker_threads(), 0, "no worker was needed");
        assert_eq!(client.compile_count(), 1);
        assert_eq!(client.gate().available(), client.gate().capacity());
    });
}

#[test]
fn a_long_source_is_compiled_and_first_run_on_a_worker() {
    on_inline_runtime(|| async {
        let client = client();
        let padding = format!("// {}\n", "x".repeat(INLINE_COMPILE_MAX_SOURCE));
        let report = twice(&client, &script(&format!("{padding}\"hello\""))).await;
        assert_eq!(text(&ok(report)), "hello");
        assert_eq!(
            client.worker_threads(),
            1,
            "the first run compiled on a worker"
        );
        assert_eq!(client.inline_runs(), 1, "the second ran compiled, inline");
    });
}

#[test]
fn a_source_that_does_not_compile_answers_its_error_inline() {
    on_inline_runtime(|| async {
        let client = client();
        let (message, line, _) = script_error(run(&client, "let x = ;").await);
        assert_eq!((message.as_str(), line), ("Unexpected ';'", Some(1)));
        assert_eq!(client.compile_count(), 1, "compiled once");
        assert_eq!(client.worker_threads(), 0);
    });
}

#[tokio::test]
async fn a_thread_without_the_stack_never_runs_inline() {
    let client = client();
    ok(twice(&client, &script(r#""hello""#)).await);
    assert_eq!(client.inline_runs(), 0);
}

#[test]
fn a_long_run_moves_to_a_worker_and_its_later_runs_go_there_directly() {
    on_inline_runtime(|| async {
        let client = client();
        let long = script("let i = 0; while i < 300000 { i += 1; } i");
        let report = twice(&client, &long).await;
        assert_eq!(text(&ok(report)), "300000");
        // Running out of time three times marks the script; after that no attempt is
        // made (a preempted short script is forgiven twice).
        for _ in 0..4 {
            assert_eq!(
                text(&ok(client
                    .execute(request(long.clone(), Some(get())))
                    .await)),
                "300000"
            );
        }
        assert_eq!(client.inline_runs(), 0);
        assert_eq!(client.runs_moved_to_workers(), 3);
    });
}

#[test]
fn an_endless_loop_still_times_out_and_the_budget_still_binds() {
    on_inline_runtime(|| async {
        let client = client();
        let limits = ScriptLimits {
            timeout_ms: Some(200),
            ..ScriptLimits::default()
        };
        let report = twice(&client, &script_with_limits("loop {}", limits)).await;
        assert!(
            matches!(report.outcome, Err(ExecutionError::Timeout { .. })),
            "{:?}",
            report.outcome
        );

        // A budget smaller than the slice runs out inline: the same error as on a worker.
        let limits = ScriptLimits {
            max_operations: Some(10),
            ..ScriptLimits::default()
        };
        let report = twice(&client, &script_with_limits("loop {}", limits)).await;
        assert_eq!(
            resource_limit(report),
            "script exceeded its limit of 10 operations (max_operations)"
        );
    });
}

#[test]
fn holding_more_than_an_inline_run_may_moves_it_and_the_memory_limit_still_binds() {
    on_inline_runtime(|| async {
        let client = client();
        // 300 KB of text: past the inline heap, well within the run's memory limit.
        let report = twice(
            &client,
            &script(r#"let s = ""; s.pad(300000, "x"); s.len()"#),
        )
        .await;
        assert_eq!(text(&ok(report)), "300000");
        assert_eq!(client.runs_moved_to_workers(), 1);

        let limits = ScriptLimits {
            max_memory_bytes: Some(1024 * 1024),
            ..ScriptLimits::default()
        };
        let bomb = r#"let s = ""; s.pad(1000000, "x"); let t = s + "y"; let u = t + "z"; u.len()"#;
        let report = twice(&client, &script_with_limits(bomb, limits)).await;
        let message = resource_limit(report);
        assert!(message.contains("max_memory_bytes"), "{message}");
    });
}

#[test]
fn the_deepest_value_an_inline_run_can_hold_fits_its_thread() {
    on_inline_runtime(|| async {
        // No clock: only the inline heap ends the run. It nests one level per loop
        // (`take` moves the value in, where `[a]` would copy it), walking the value
        // recursively every 1,000 levels (printing it), until it holds more than an
        // inline run may; then the value is dropped, recursively, on this runtime thread.
        // Overflowing the stack would abort the test binary.
        let source = "let a = []; let n = 0; \
                      loop { a = [a.take()]; n += 1; if n % 1000 == 0 { let s = a.to_string(); } }";
        let engine = ScriptEngine::new(SandboxCeiling::default());
        let limits = engine.effective_limits(&ScriptLimits::default());
        let compiled = engine.compile(source, limits).unwrap();
        let deep = request(script(source), Some(get()));
        let output = compiled.run_inline(&deep, None, Duration::from_secs(3600));
        assert!(output.is_none(), "the inline heap ended it");
        assert!(
            !compiled.fits_inline(),
            "and the script now runs on workers"
        );
    });
}

#[test]
fn a_zero_slice_runs_everything_on_workers() {
    on_inline_runtime(|| async {
        let client = LocalExecutorClient::new(ExecutorConfig {
            inline_slice: Duration::ZERO,
            ..ExecutorConfig::default()
        });
        ok(twice(&client, &script(r#""hello""#)).await);
        assert_eq!(client.inline_runs(), 0);
        assert_eq!(client.worker_threads(), 1);
    });
}

#[test]
fn a_run_about_to_sleep_moves_before_it_logs_twice() {
    on_inline_runtime(|| async {
        let client = client();
        let report = twice(
            &client,
            &script(r#"log::info("before"); sleep(0.001); "after""#),
        )
        .await;
        assert_eq!(text(&ok(report.clone())), "after");
        let messages: Vec<&str> = report.logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(
            messages,
            ["before"],
            "the abandoned attempt's log is dropped"
        );
        assert_eq!(client.runs_moved_to_workers(), 1);
        assert_eq!(client.inline_runs(), 0);
    });
}

#[test]
fn a_service_call_happens_once_on_the_worker_never_inline() {
    on_inline_runtime(|| async {
        let kv = Arc::new(InMemoryKvService::new(
            Arc::new(RecordingEmitter::default()),
        ));
        let client = client_with_services(
            ExecutorConfig::default(),
            ServiceSet {
                kv: kv.clone(),
                ..ServiceSet::unavailable()
            },
        );
        let counter = script(r#"kv::collection("counts").incr("n")"#);
        let app = counter.app_id;
        let report = twice(&client, &counter).await;
        assert_eq!(text(&ok(report)), "2", "two runs, two increments");
        let stored = kv
            .get(
                &as_app(app),
                &CollectionName::parse("counts").unwrap(),
                &KvKey::parse("n").unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(stored, Some(json!(2)));
        assert_eq!(client.runs_moved_to_workers(), 1);
        // Once marked, the script goes straight to a worker.
        ok(client.execute(request(counter, Some(get()))).await);
        assert_eq!(client.runs_moved_to_workers(), 1);
    });
}

#[test]
fn concurrent_inline_runs_keep_their_own_logs() {
    on_inline_runtime(|| async {
        let client = client();
        let source = "log::info(`run ${ctx.request.path}`); ctx.request.path";
        let shared = script(source);
        ok(client.execute(request(shared.clone(), Some(get()))).await);
        let runs = (0..32).map(|i| {
            let client = client.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut http = get();
                http.path = format!("/{i}");
                let report = client.execute(request(shared, Some(http))).await;
                (i, report)
            })
        });
        for run in runs {
            let (i, report) = run.await.unwrap();
            assert_eq!(text(&ok(report.clone())), format!("/{i}"));
            assert_eq!(report.logs.len(), 1);
            assert_eq!(report.logs[0].message, format!("run /{i}"));
        }
        assert_eq!(client.inline_runs(), 33);
    });
}
