//! The in-process executor: compiled-code cache, concurrency gate, engine profiles, and
//! odd input that must never take the process down.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use picloud_executor_core::compiled_cache::estimated_bytes;
use picloud_executor_core::{
    ExecutorConfig, GateConfig, LocalExecutorClient, MAX_ENGINE_PROFILES, ScriptEngine,
};
use picloud_shared::{
    ExecutionError, ExecutorClient, SandboxCeiling, ScriptChangeObserver, ScriptLimits,
};

#[tokio::test]
async fn a_script_is_compiled_once_per_version() {
    let client = client();
    let mut script = script(r#""v1""#);

    for _ in 0..3 {
        let report = client.execute(request(script.clone(), Some(get()))).await;
        assert_eq!(text(&ok(report)), "v1");
    }
    assert_eq!(
        client.compile_count(),
        1,
        "the same version reuses its code"
    );

    script.version = 2;
    script.source = r#""v2""#.to_owned();
    let report = client.execute(request(script.clone(), Some(get()))).await;
    assert_eq!(text(&ok(report)), "v2");
    assert_eq!(client.compile_count(), 2, "a new version recompiles");
    assert_eq!(client.cached_scripts(), 1, "and replaces the old code");

    client.script_changed(script.id);
    assert_eq!(client.cached_scripts(), 0);
    let report = client.execute(request(script.clone(), Some(get()))).await;
    assert_eq!(text(&ok(report)), "v2");
    assert_eq!(
        client.compile_count(),
        3,
        "a change notice drops the cached code"
    );
}

#[tokio::test]
async fn compiled_code_over_the_byte_budget_evicts_the_script_run_longest_ago() {
    let source = r#""same length""#;
    let client = LocalExecutorClient::new(ExecutorConfig {
        compiled_cache_bytes: 2 * estimated_bytes(source.len()),
        ..ExecutorConfig::default()
    });
    let (a, b, c) = (script(source), script(source), script(source));
    for script in [&a, &b, &a, &c] {
        ok(client.execute(request(script.clone(), None)).await);
    }
    assert_eq!(client.compile_count(), 3);
    assert_eq!(client.cached_scripts(), 2, "two fit in the budget");
    assert_eq!(client.cached_bytes(), 2 * estimated_bytes(source.len()));

    ok(client.execute(request(a, None)).await);
    assert_eq!(client.compile_count(), 3, "`a` ran recently and stayed");
    ok(client.execute(request(b, None)).await);
    assert_eq!(
        client.compile_count(),
        4,
        "`b` ran longest ago and was evicted"
    );
}

#[tokio::test]
async fn a_stale_version_does_not_replace_newer_code() {
    let client = client();
    let mut newer = script(r#""new""#);
    newer.version = 5;
    let mut older = newer.clone();
    older.version = 4;
    older.source = r#""old""#.to_owned();

    assert_eq!(
        text(&ok(client.execute(request(newer.clone(), None)).await)),
        "new"
    );
    assert_eq!(text(&ok(client.execute(request(older, None)).await)), "old");
    assert_eq!(text(&ok(client.execute(request(newer, None)).await)), "new");
    assert_eq!(client.compile_count(), 2, "the newer version stayed cached");
}

/// A client with one slot, taken by a run of half a second (its handle answers "1"),
/// and a wait of 20 ms for a slot.
async fn client_with_a_busy_gate() -> (
    LocalExecutorClient,
    tokio::task::JoinHandle<picloud_shared::ExecutionReport>,
) {
    let client = LocalExecutorClient::new(ExecutorConfig {
        ceiling: SandboxCeiling::default(),
        gate: GateConfig {
            max_concurrent: 1,
            max_wait: Duration::from_millis(20),
        },
        ..ExecutorConfig::default()
    });
    let busy = tokio::spawn({
        let client = client.clone();
        async move { client.execute(request(script("sleep(0.5); 1"), None)).await }
    });
    tokio::time::timeout(QUICK, async {
        while client.gate().available() > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the busy run never took the slot"));
    (client, busy)
}

#[tokio::test]
async fn a_full_gate_refuses_with_retry_after() {
    let (client, busy) = client_with_a_busy_gate().await;

    let refused = client.execute(request(script("2"), None)).await;
    assert_eq!(
        failure(refused),
        ExecutionError::Overloaded {
            retry_after: Duration::from_secs(1)
        }
    );
    assert_eq!(text(&ok(busy.await.unwrap())), "1");
    assert_eq!(
        text(&ok(client.execute(request(script("3"), None)).await)),
        "3"
    );
}

#[tokio::test]
async fn the_report_carries_the_id_and_the_run_time() {
    let request = request(script("sleep(0.05); 1"), None);
    let id = request.execution_id;
    let report = client().execute(request).await;
    assert_eq!(report.execution_id, id);
    assert!(
        report.duration >= Duration::from_millis(50),
        "{:?}",
        report.duration
    );
    assert!(report.duration < QUICK);
}

#[tokio::test]
async fn concurrent_runs_keep_their_own_logs_and_budgets() {
    let client = client();
    let runs = (0..8).map(|i| {
        let client = client.clone();
        let limits = ScriptLimits {
            max_operations: Some(if i % 2 == 0 { 1_000 } else { 1_000_000 }),
            ..ScriptLimits::default()
        };
        let source =
            format!("log::info(\"run {i}\"); let n = 0; for x in 0..2000 {{ n += 1; }} {i}");
        tokio::spawn(async move { run_limited(&client, &source, limits).await })
    });
    for (i, run) in runs.enumerate() {
        let report = run.await.unwrap();
        assert_eq!(report.logs.len(), 1);
        assert_eq!(report.logs[0].message, format!("run {i}"));
        if i % 2 == 0 {
            assert!(matches!(
                report.outcome,
                Err(ExecutionError::ResourceLimit { .. })
            ));
        } else {
            assert_eq!(text(&ok(report)), i.to_string());
        }
    }
}

#[test]
fn engines_are_shared_per_structural_profile() {
    let engine = ScriptEngine::new(SandboxCeiling::default());
    let limits = |string: usize, ops: u64| {
        engine.effective_limits(&ScriptLimits {
            max_string_size: Some(string),
            max_operations: Some(ops),
            ..ScriptLimits::default()
        })
    };
    engine.compile("1", limits(1_048_576, 5)).unwrap();
    assert_eq!(
        engine.cached_profiles(),
        0,
        "the ceiling's own profile is prebuilt"
    );

    engine.compile("1", limits(100, 5)).unwrap();
    engine.compile("2", limits(100, 50)).unwrap();
    assert_eq!(
        engine.cached_profiles(),
        1,
        "the operation budget is not structural"
    );

    for size in 0..(MAX_ENGINE_PROFILES + 6) {
        engine.compile("1", limits(200 + size, 5)).unwrap();
    }
    assert_eq!(engine.cached_profiles(), MAX_ENGINE_PROFILES);
}

#[test]
fn the_timeout_never_exceeds_the_hard_ceiling() {
    let engine = ScriptEngine::new(SandboxCeiling::default());
    let limits = engine.effective_limits(&ScriptLimits {
        timeout_ms: Some(u64::MAX),
        ..ScriptLimits::default()
    });
    assert!(limits.timeout <= picloud_shared::SandboxLimits::HARD_TIMEOUT);
}

#[tokio::test]
async fn odd_scripts_get_answers_not_crashes() {
    let client = client();
    let cases: [(&str, Result<&str, &str>); 9] = [
        ("", Ok("")),
        ("   \n\t ", Ok("")),
        ("// only a comment", Ok("")),
        ("exit(5)", Ok("5")),
        (r#"return "early"; "late""#, Ok("early")),
        ("\"emoji 🦀\"", Ok("emoji 🦀")),
        ("\0", Err("Unexpected '\0'")),
        (
            "|| 1",
            Err(
                "response body cannot be sent as JSON: a value of type 'Fn' cannot be converted to JSON",
            ),
        ),
        (
            "1.0 / 0.0",
            Err("response body cannot be sent as JSON: inf cannot be represented in JSON"),
        ),
    ];
    for (source, expected) in cases {
        let report = run(&client, source).await;
        match expected {
            Ok(body) => assert_eq!(text(&ok(report)), body, "{source:?}"),
            Err(message) => assert_eq!(script_error(report).0, message, "{source:?}"),
        }
    }
}

#[tokio::test]
async fn a_huge_source_is_handled() {
    let source = format!("let x = 0;\n{}x", "x += 1;\n".repeat(50_000));
    let report = run(&client(), &source).await;
    assert_eq!(text(&ok(report)), "50000");

    let unterminated = format!("\"{}", "a".repeat(100_000));
    let (_, line, _) = script_error(run(&client(), &unterminated).await);
    assert_eq!(line, Some(1));
}

#[tokio::test]
async fn clones_share_one_cache_and_one_gate() {
    let client = client();
    let other = client.clone();
    let script = Arc::new(script("1"));
    let first = request((*script).clone(), None);
    let second = request((*script).clone(), None);
    ok(client.execute(first).await);
    ok(other.execute(second).await);
    assert_eq!(other.compile_count(), 1);
    assert_eq!(client.gate().capacity(), other.gate().capacity());
}

#[tokio::test]
async fn a_batch_runs_in_order_on_one_worker_and_reports_each_run() {
    let client = client();
    let requests = vec![
        request(script("1"), None),
        request(script(r#"throw "boom""#), None),
        request(script(r#"log::info("third"); 3"#), None),
    ];
    let ids: Vec<_> = requests.iter().map(|r| r.execution_id).collect();
    let reports: Vec<_> = client
        .execute_batch(requests, None)
        .await
        .into_iter()
        .map(Option::unwrap)
        .collect();

    assert_eq!(
        reports.iter().map(|r| r.execution_id).collect::<Vec<_>>(),
        ids
    );
    assert_eq!(text(&ok(reports[0].clone())), "1");
    assert!(
        matches!(failure(reports[1].clone()), ExecutionError::Script { ref message, .. } if message.contains("boom")),
        "a failing run fails alone"
    );
    assert_eq!(text(&ok(reports[2].clone())), "3");
    assert_eq!(reports[2].logs.len(), 1, "each run keeps its own logs");
    assert!(reports[0].logs.is_empty());
    assert!(reports[0].started_at <= reports[1].started_at);
    assert!(reports[1].started_at <= reports[2].started_at);
    assert_eq!(
        client.worker_threads(),
        1,
        "one hand-over for the whole batch"
    );
    assert_eq!(client.gate().available(), client.gate().capacity());
}

#[tokio::test]
async fn a_batch_starts_no_run_after_its_start_budget() {
    let client = client();
    let reports = client
        .execute_batch(
            vec![request(script("1"), None), request(script("2"), None)],
            Some(Duration::ZERO),
        )
        .await;
    assert!(reports.iter().all(Option::is_none), "{reports:?}");

    let soon = Duration::from_millis(100);
    let reports = client
        .execute_batch(
            vec![
                request(script("sleep(0.3); 1"), None),
                request(script("2"), None),
                request(script("3"), None),
            ],
            Some(soon),
        )
        .await;
    assert_eq!(text(&ok(reports[0].clone().unwrap())), "1");
    assert!(
        reports[1].is_none() && reports[2].is_none(),
        "the runs after the deadline were not started: {reports:?}"
    );
}

#[tokio::test]
async fn a_full_gate_refuses_a_whole_batch() {
    let (client, busy) = client_with_a_busy_gate().await;

    let reports = client
        .execute_batch(
            vec![request(script("2"), None), request(script("3"), None)],
            None,
        )
        .await;
    for report in reports {
        assert!(matches!(
            failure(report.unwrap()),
            ExecutionError::Overloaded { .. }
        ));
    }
    assert_eq!(text(&ok(busy.await.unwrap())), "1");
}
