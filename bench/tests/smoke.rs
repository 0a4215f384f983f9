//! The harness end to end in a few seconds: it starts the baselines and a zero-config
//! `picloud`, loads each briefly, and writes the JSON `docs/performance.md` describes.
//! Nothing here judges a timing; the full benchmark is never run from the test suite.
#![expect(
    clippy::expect_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The debug `picloud` next to the harness binary. `cargo test --workspace` has built it
/// (its own integration tests need it); a lone `cargo test -p picloud-bench` builds it.
fn picloud_binary(bench: &Path) -> PathBuf {
    let picloud = bench.with_file_name("picloud");
    if !picloud.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "picloud"])
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building picloud for the smoke run failed"
        );
    }
    picloud
}

#[test]
fn a_smoke_run_writes_every_section_of_the_report() {
    let bench = Path::new(env!("CARGO_BIN_EXE_picloud-bench"));
    let picloud = picloud_binary(bench);
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("results.json");

    let run = Command::new(bench)
        .arg("--smoke")
        .arg("--picloud")
        .arg(&picloud)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("the harness starts");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the harness failed: {}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("| picloud_hello |"),
        "the table names PiCloud's hello script: {stdout}"
    );

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).expect("the report is JSON");
    for section in [
        "machine",
        "settings",
        "servers",
        "ratios",
        "idle",
        "startup",
        "first_request",
        "events",
        "growth",
        "goals",
    ] {
        assert!(report.get(section).is_some(), "no {section} in {report:#}");
    }
    assert_eq!(report["settings"]["smoke"], true);
    for server in [
        "baseline_axum",
        "baseline_spawn-blocking",
        "baseline_thread-per-request",
        "baseline_executor",
        "picloud_hello",
        "picloud_echo_json_1k",
    ] {
        let measured = &report["servers"][server];
        for run in ["c1", "concurrent"] {
            assert!(
                measured[run]["requests"].as_u64().unwrap() > 0,
                "{server} {run} answered nothing: {measured:#}"
            );
            assert_eq!(measured[run]["errors"], 0, "{server} {run}: {measured:#}");
            assert!(measured[run]["latency"]["p99_us"].is_number());
        }
    }
    assert!(report["ratios"]["picloud_hello"]["vs_baseline_axum"]["rps_concurrent"].is_number());
    // The harness never installs workerd (`bench/run` does): measured when it is there,
    // skipped with the reason when it is not, never a failure.
    assert!(
        report["servers"]["workerd"].is_object() || report["skipped"]["workerd"].is_string(),
        "workerd is neither measured nor skipped: {report:#}"
    );
    assert!(report["idle"]["after_startup"]["picloud_rss_mib"].is_number());
    assert!(report["startup"]["postgres_running_ms"].is_number());
    assert!(report["first_request"]["first_vs_steady_p50"].is_number());
    assert!(report["goals"]["hello_rps"]["met"].is_boolean());
    assert_eq!(report["events"]["latency_events"], 5);
    assert!(report["events"]["start_latency_ms"]["p50"].is_number());
    assert!(report["events"]["events_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["events"]["raw_rows_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["events"]["kv_script_events_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["events"]["kv_put_events_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["goals"]["event_start_p50"]["met"].is_boolean());

    // The cost as the work grows, at two tiny sizes each: every table has both rows and
    // its ratio, and each goal is judged (never on a smoke run's timing, only its shape).
    let growth = &report["growth"];
    for (table, figure) in [
        ("kv_fan_out", "/latency/p50_us"),
        ("dispatch", "/events_per_s"),
        ("first_call", "/first_call/p50_us"),
        ("first_call", "/steady_state/p50_us"),
        ("list_page", "/latency/p50_us"),
    ] {
        let sizes = growth[table]["sizes"].as_array().expect("sizes");
        assert_eq!(sizes.len(), 2, "{table}: {growth:#}");
        for size in sizes {
            let value = size.pointer(figure).and_then(Value::as_f64);
            assert!(value.is_some_and(|v| v > 0.0), "{table}{figure}: {size:#}");
        }
    }
    for ratio in [
        &growth["kv_fan_out"]["largest_vs_smallest"],
        &growth["dispatch"]["largest_vs_smallest"],
        &growth["first_call"]["first_call_largest_vs_smallest"],
        &growth["first_call"]["steady_largest_vs_smallest"],
        &growth["list_page"]["largest_vs_smallest"],
    ] {
        assert!(ratio.is_number(), "{growth:#}");
    }
    for goal in [
        "growth_kv_fan_out",
        "growth_dispatch",
        "growth_first_call",
        "growth_steady_call",
        "growth_list_page",
    ] {
        assert!(report["goals"][goal]["met"].is_boolean(), "{goal}");
    }
    assert!(
        stdout.contains("| kv triggers in the app (one matches) |"),
        "the growth tables are printed: {stdout}"
    );
}
