//! The sandbox: what scripts may not do, the limits they run under, and how failures
//! are reported.

mod common;

// The run-memory limit is counted by the allocator, as in the `picloud` binary.
#[global_allocator]
static ALLOCATOR: picloud_executor_core::RunMemoryAllocator =
    picloud_executor_core::RunMemoryAllocator;

use std::time::{Duration, Instant};

use common::*;
use picloud_shared::{
    CompileError, ExecutionError, ExecutorClient, SandboxCeiling, ScriptLimits, ScriptValidator,
};

#[tokio::test]
async fn valid_source_validates() {
    let client = client();
    assert_eq!(
        client
            .validate("let x = 1;\nfn double(n) { n * 2 }\ndouble(x)")
            .await,
        Ok(())
    );
    assert_eq!(client.ceiling(), SandboxCeiling::default());
}

#[tokio::test]
async fn syntax_errors_report_their_position() {
    let err = client()
        .validate("let x = 1;\nlet y = ;")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CompileError {
            message: "Unexpected ';'".to_owned(),
            line: 2,
            column: 9,
        }
    );
    assert_eq!(err.to_string(), "Unexpected ';' (line 2, column 9)");
}

#[tokio::test]
async fn print_debug_and_eval_do_not_compile() {
    let client = client();
    for (source, keyword) in [
        (r#"print("hi")"#, "print"),
        ("debug(1)", "debug"),
        (r#"eval("40 + 2")"#, "eval"),
    ] {
        let err = client.validate(source).await.unwrap_err();
        assert!(
            err.message.contains(keyword) && err.message.contains("disabled"),
            "{source}: {err}"
        );
    }
}

#[tokio::test]
async fn disabled_keywords_cannot_be_reached_through_function_pointers() {
    for (source, keyword) in [
        (r#"call(Fn("ev" + "al"), "40 + 2")"#, "eval"),
        (r#"let f = Fn("print"); f.call("hi")"#, "print"),
    ] {
        let (message, _, _) = script_error(run(&client(), source).await);
        assert_eq!(message, format!("'{keyword}' is a reserved keyword"));
    }
}

#[tokio::test]
async fn import_is_blocked() {
    let client = client();
    let err = client
        .validate(r#"import "x" as y; y::f()"#)
        .await
        .unwrap_err();
    assert!(err.message.contains("import"), "{err}");
    assert_eq!((err.line, err.column), (1, 1));

    let (message, line, _) = script_error(run(&client, r#"import "os" as os; 1"#).await);
    assert!(message.contains("import"), "{message}");
    assert_eq!(line, Some(1));
}

#[tokio::test]
async fn log_debug_does_not_exist() {
    let err = client().validate(r#"log::debug("x")"#).await.unwrap_err();
    assert!(err.message.contains("debug"), "{err}");
}

#[tokio::test]
async fn a_lower_operation_budget_stops_a_loop_the_ceiling_allows() {
    let client = client();
    let source = "let n = 0; for i in 0..20000 { n += 1; } n";
    assert_eq!(text(&ok(run(&client, source).await)), "20000");

    let limits = ScriptLimits {
        max_operations: Some(5_000),
        ..ScriptLimits::default()
    };
    assert_eq!(
        resource_limit(run_limited(&client, source, limits).await),
        "script exceeded its limit of 5000 operations (max_operations)"
    );
}

#[tokio::test]
async fn a_string_memory_bomb_hits_the_string_limit() {
    let message = resource_limit(run(&client(), r#"let s = "x"; loop { s += s; }"#).await);
    assert_eq!(
        message,
        "string exceeds the limit of 1048576 bytes (max_string_size)"
    );
}

#[tokio::test]
async fn a_growing_array_hits_the_array_limit() {
    let message = resource_limit(run(&client(), "let a = [1]; loop { a += a; }").await);
    assert_eq!(
        message,
        "array or blob exceeds the limit of 100000 elements (max_array_size)"
    );
}

#[tokio::test]
async fn a_growing_map_hits_the_map_limit() {
    let limits = ScriptLimits {
        max_map_size: Some(100),
        ..ScriptLimits::default()
    };
    // Merged in rather than grown with `m[key] = value`: Rhai checks the size of the
    // value assigned through an index, not of the map it lands in, so that way of growing
    // a map is stopped by the memory limit instead (below).
    let source = r#"let m = #{}; let i = 0; loop { let e = #{}; e["k" + i] = i; m += e; i += 1; }"#;
    assert_eq!(
        resource_limit(run_limited(&client(), source, limits).await),
        "object map exceeds the limit of 100 entries (max_map_size)"
    );
}

const MEMORY_LIMIT_MESSAGE: &str =
    "script exceeded its limit of 33554432 bytes of memory (max_memory_bytes)";

#[test]
fn the_allocator_meters_runs_in_this_binary() {
    assert!(picloud_executor_core::allocator_installed());
}

#[tokio::test]
async fn index_assignment_into_an_array_is_stopped_by_the_memory_limit() {
    // Each element is a fresh 1 MB string, within max_string_size, and the array's 1,500
    // slots are within max_array_size; Rhai never measures the array itself.
    let source = r#"
        let s = ""; s.pad(1000000, "x");
        let a = []; a.pad(1500, ());
        for i in 0..1500 { a[i] = s + i.to_string(); }
        a.len()
    "#;
    assert_eq!(
        resource_limit(run(&client(), source).await),
        MEMORY_LIMIT_MESSAGE
    );
}

#[tokio::test]
async fn index_assignment_into_a_map_is_stopped_by_the_memory_limit() {
    let source = r#"
        let s = ""; s.pad(1000000, "x");
        let m = #{};
        for i in 0..1500 { m[`k${i}`] = s + i.to_string(); }
        m.len()
    "#;
    assert_eq!(
        resource_limit(run(&client(), source).await),
        MEMORY_LIMIT_MESSAGE
    );
}

#[tokio::test]
async fn a_script_can_lower_its_own_memory_limit() {
    let source = r#"let s = ""; s.pad(1000000, "x"); let t = s + "y"; let u = t + "z"; u.len()"#;
    assert_eq!(text(&ok(run(&client(), source).await)), "1000002");
    let limits = ScriptLimits {
        max_memory_bytes: Some(1024 * 1024),
        ..ScriptLimits::default()
    };
    assert_eq!(
        resource_limit(run_limited(&client(), source, limits).await),
        "script exceeded its limit of 1048576 bytes of memory (max_memory_bytes)"
    );
}

#[tokio::test]
async fn the_request_counts_against_the_memory_limit() {
    let limits = ScriptLimits {
        max_memory_bytes: Some(256 * 1024),
        ..ScriptLimits::default()
    };
    let big = "x".repeat(512 * 1024);
    let report = client()
        .execute(request(
            script_with_limits("ctx.request.body.len()", limits),
            Some(post("text/plain", big)),
        ))
        .await;
    assert_eq!(
        resource_limit(report),
        "script exceeded its limit of 262144 bytes of memory (max_memory_bytes)"
    );
}

#[tokio::test]
async fn a_run_that_frees_what_it_made_stays_within_the_limit() {
    // 200 MB made and dropped one megabyte at a time never holds more than a few MB.
    let source = r#"
        let s = ""; s.pad(1000000, "x");
        for i in 0..200 { let t = s + i.to_string(); }
        "done"
    "#;
    assert_eq!(text(&ok(run(&client(), source).await)), "done");
}

#[tokio::test]
async fn unbounded_recursion_hits_the_call_depth_limit() {
    let message = resource_limit(run(&client(), "fn f(n) { f(n + 1) } f(0)").await);
    assert_eq!(
        message,
        "script exceeded its limit of 64 nested function calls (max_call_depth)"
    );
}

#[tokio::test]
async fn expression_depth_is_checked_at_compile_time() {
    let client = client();
    let nested = |depth: usize| format!("{}1{}", "(".repeat(depth), ")".repeat(depth));

    let err = client.validate(&nested(100)).await.unwrap_err();
    assert_eq!(
        err.message,
        "expression nesting exceeds the limit of 64 levels (max_expr_depth)"
    );
    assert_eq!(err.line, 1);

    // Within the ceiling, but deeper than the script's own limit: refused when it runs.
    assert_eq!(client.validate(&nested(10)).await, Ok(()));
    let limits = ScriptLimits {
        max_expr_depth: Some(5),
        ..ScriptLimits::default()
    };
    let (message, line, _) = script_error(run_limited(&client, &nested(10), limits).await);
    assert_eq!(
        message,
        "expression nesting exceeds the limit of 5 levels (max_expr_depth)"
    );
    assert_eq!(line, Some(1));
}

#[tokio::test]
async fn a_lower_string_limit_fails_where_the_ceiling_passes() {
    let client = client();
    let source = r#"let s = "x"; for i in 0..8 { s += s; } s.len()"#;
    assert_eq!(text(&ok(run(&client, source).await)), "256");

    let limits = ScriptLimits {
        max_string_size: Some(100),
        ..ScriptLimits::default()
    };
    assert_eq!(
        resource_limit(run_limited(&client, source, limits).await),
        "string exceeds the limit of 100 bytes (max_string_size)"
    );
}

#[tokio::test]
async fn runtime_errors_carry_their_position() {
    let report = run(&client(), "let x = 1;\nlet y = x + missing;\ny").await;
    assert_eq!(
        failure(report),
        ExecutionError::Script {
            message: "Variable not found: missing".to_owned(),
            line: Some(2),
            column: Some(13),
        }
    );
}

#[tokio::test]
async fn errors_inside_functions_name_the_function() {
    let (message, line, column) =
        script_error(run(&client(), "fn f(x) {\n  x.nope()\n}\nf(1)").await);
    assert_eq!(message, "Function not found: nope (i64) (in function 'f')");
    assert_eq!((line, column), (Some(2), Some(5)));
}

#[tokio::test]
async fn thrown_values_are_script_errors() {
    let report = run(&client(), "let a = 1;\n  throw \"boom\";").await;
    assert_eq!(
        failure(report),
        ExecutionError::Script {
            message: "Runtime error: boom".to_owned(),
            line: Some(2),
            column: Some(3),
        }
    );

    let source = r#"let r = (); try { throw "x" } catch (e) { r = "caught " + e } r"#;
    let caught = run(&client(), source).await;
    assert_eq!(text(&ok(caught)), "caught x");
}

#[tokio::test]
async fn a_script_that_no_longer_compiles_fails_as_a_script_error() {
    let (message, line, column) = script_error(run(&client(), "let x = ;").await);
    assert_eq!(message, "Unexpected ';'");
    assert_eq!((line, column), (Some(1), Some(9)));
}

#[tokio::test]
async fn ctx_is_a_constant() {
    let (message, _, _) = script_error(run(&client(), "ctx = 1;").await);
    assert_eq!(message, "Cannot modify constant ctx");
}

#[tokio::test]
async fn a_busy_loop_is_stopped_at_its_timeout() {
    let limits = ScriptLimits {
        timeout_ms: Some(200),
        max_operations: Some(1_000_000_000_000),
        ..ScriptLimits::default()
    };
    let started = Instant::now();
    let report = run_limited(&client_without_op_ceiling(), "loop {}", limits).await;
    let elapsed = started.elapsed();
    assert_eq!(
        failure(report),
        ExecutionError::Timeout {
            limit: Duration::from_millis(200)
        }
    );
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(1),
        "stopped only after {elapsed:?}"
    );
}

#[tokio::test]
async fn sleep_cannot_outlast_the_timeout() {
    let limits = ScriptLimits {
        timeout_ms: Some(200),
        ..ScriptLimits::default()
    };
    let started = Instant::now();
    let report = run_limited(&client(), "sleep(60); 1", limits).await;
    assert_eq!(
        failure(report),
        ExecutionError::Timeout {
            limit: Duration::from_millis(200)
        }
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    let report = run_limited(&client(), "sleep(0.01); 1", limits).await;
    assert_eq!(text(&ok(report)), "1", "a short sleep is fine");
}

#[tokio::test]
async fn deeply_nested_values_do_not_overflow_the_stack() {
    // Nesting as deep as the limits allow, then walked recursively (printing, comparing,
    // dropping): the run's thread has the stack for it.
    let limits = ScriptLimits {
        max_array_size: Some(3_000),
        max_map_size: Some(100),
        ..ScriptLimits::default()
    };
    let source = "let a = []; let i = 0; while i < 2500 { a = [a]; i += 1; } \
                  let s = a.to_string(); [s.len(), a == a]";
    let response = ok(run_limited(&client(), source, limits).await);
    assert_eq!(json(&response), serde_json::json!([5002, true]));

    let report = run_limited(&client(), "let a = []; loop { a = [a]; }", limits).await;
    assert_eq!(
        resource_limit(report),
        "array or blob exceeds the limit of 3000 elements (max_array_size)"
    );
}
