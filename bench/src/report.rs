//! The report: ratios against the baselines, the goals of issue 4, of the event core, of
//! files and of the cost as the work grows checked against the figures, the machine the
//! run was on, and the markdown tables printed at the end.

use std::fmt::Write as _;
use std::process::Command;

use serde_json::{Map, Value, json};

use crate::ServerResult;
use crate::load::round2;

/// The baselines every PiCloud figure is divided by.
const BASELINES: [&str; 2] = ["baseline_axum", "baseline_spawn-blocking"];

/// Peer servers a PiCloud server is also divided by: (server, peer).
const PEERS: [(&str, &str); 1] = [("picloud_hello", "workerd")];

/// What the run was on.
pub fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or_else(String::new, |(_, model)| model.trim().to_owned());
    let memory_mib = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024);
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_owned());
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get),
        "cpu_model": model,
        "memory_mib": memory_mib,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "load_average_at_start": load_average(),
        "commit": commit,
    })
}

/// The 1, 5 and 15 minute load averages: anything else running shows up in every figure.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn ratio(numerator: f64, denominator: f64) -> Value {
    if denominator > 0.0 {
        json!(round2(numerator / denominator))
    } else {
        Value::Null
    }
}

fn compare(server: &ServerResult, base: &ServerResult) -> Value {
    json!({
        "rps_concurrent": ratio(server.concurrent.rps, base.concurrent.rps),
        "p50_c1": ratio(server.single.latency.p50_us, base.single.latency.p50_us),
        "p99_c1": ratio(server.single.latency.p99_us, base.single.latency.p99_us),
        "p50_concurrent": ratio(server.concurrent.latency.p50_us, base.concurrent.latency.p50_us),
        "p99_concurrent": ratio(server.concurrent.latency.p99_us, base.concurrent.latency.p99_us),
        "cpu_per_request": ratio(server.concurrent.total_cpu_us_per_request(), base.concurrent.total_cpu_us_per_request()),
    })
}

/// Every server against each baseline (a baseline is not compared with itself).
pub fn ratios(servers: &[ServerResult]) -> Value {
    let mut all = Map::new();
    for server in servers {
        let mut against = Map::new();
        for base_name in BASELINES {
            if server.name == base_name {
                continue;
            }
            if let Some(base) = servers.iter().find(|s| s.name == base_name) {
                against.insert(format!("vs_{base_name}"), compare(server, base));
            }
        }
        for (name, peer_name) in PEERS {
            if server.name != name {
                continue;
            }
            if let Some(peer) = servers.iter().find(|s| s.name == peer_name) {
                against.insert(format!("vs_{peer_name}"), compare(server, peer));
            }
        }
        if !against.is_empty() {
            all.insert(server.name.clone(), Value::Object(against));
        }
    }
    Value::Object(all)
}

fn goal(value: &Value, target: &str, met: Option<bool>, what: &str) -> Value {
    json!({ "what": what, "value": value, "target": target, "met": met })
}

/// `incr`'s requests per second at the concurrent load over plain `set`'s, both measured
/// in this run; `null` when either was skipped.
pub fn kv_incr_vs_set(document: &Value) -> Value {
    let rps = |server: &str| document["servers"][server]["concurrent"]["rps"].as_f64();
    match (rps("picloud_kv_incr"), rps("picloud_kv_set")) {
        (Some(incr), Some(set)) => ratio(incr, set),
        _ => Value::Null,
    }
}

/// picloud's RSS right after all its load over workerd's right after its hello load;
/// `null` when workerd was skipped.
pub fn picloud_rss_vs_workerd(document: &Value) -> Value {
    let picloud = document["idle"]["picloud_rss_mib_right_after_load"].as_f64();
    let workerd = document["workerd"]["rss_mib_right_after_load"].as_f64();
    match (picloud, workerd) {
        (Some(picloud), Some(workerd)) => ratio(picloud, workerd),
        _ => Value::Null,
    }
}

/// The goals of issue 4 (and the KV counter's of issue 13, and those against workerd),
/// each with the figure it is judged on.
pub fn goals(document: &Value) -> Value {
    let hello = &document["ratios"]["picloud_hello"]["vs_baseline_axum"];
    let workerd = &document["ratios"]["picloud_hello"]["vs_workerd"];
    let rss_vs_workerd = picloud_rss_vs_workerd(document);
    let at_most = |value: &Value, limit: f64| value.as_f64().map(|v| v <= limit);
    let at_least = |value: &Value, limit: f64| value.as_f64().map(|v| v >= limit);
    let idle = &document["idle"];
    let startup = &document["startup"];
    json!({
        "hello_rps": goal(&hello["rps_concurrent"], ">= 0.6", at_least(&hello["rps_concurrent"], 0.6),
            "hello script requests/s at the concurrent load, / bare axum"),
        "hello_p99": goal(&hello["p99_concurrent"], "<= 2.0", at_most(&hello["p99_concurrent"], 2.0),
            "hello script p99 latency at the concurrent load, / bare axum"),
        "idle_cpu_after_startup": goal(&idle["after_startup"]["picloud_cpu_s"], "0.00 s",
            at_most(&idle["after_startup"]["picloud_cpu_s"], 0.0),
            "CPU seconds picloud used in the idle window after start-up"),
        "idle_cpu_after_load": goal(&idle["after_load"]["picloud_cpu_s"], "0.00 s",
            at_most(&idle["after_load"]["picloud_cpu_s"], 0.0),
            "CPU seconds picloud used in the idle window after the load"),
        "idle_rss": goal(&idle["after_startup"]["picloud_rss_mib"], "<= 24 MiB",
            at_most(&idle["after_startup"]["picloud_rss_mib"], 24.0),
            "picloud's RSS at the end of the idle window after start-up"),
        "startup_postgres_running": goal(&startup["postgres_running_ms"], "<= 300 ms",
            at_most(&startup["postgres_running_ms"], 300.0),
            "exec to /readyz 200, PostgreSQL initialised and running"),
        "startup_own_postgres": goal(&startup["own_postgres_ms"], "<= 300 ms",
            at_most(&startup["own_postgres_ms"], 300.0),
            "exec to /readyz 200, PostgreSQL initialised but stopped (picloud starts it)"),
        "first_request": goal(&document["first_request"]["first_vs_steady_p50"], "<= 1.5",
            at_most(&document["first_request"]["first_vs_steady_p50"], 1.5),
            "median first call of a fresh upload / median steady-state call"),
        "kv_incr_vs_set": goal(&kv_incr_vs_set(document), ">= 0.8",
            at_least(&kv_incr_vs_set(document), 0.8),
            "kv incr req/s / kv set req/s at the concurrent load, one key, same run"),
        "hello_rps_vs_workerd": goal(&workerd["rps_concurrent"], ">= 3",
            at_least(&workerd["rps_concurrent"], 3.0),
            "hello script requests/s at the concurrent load, / workerd's hello"),
        "rss_vs_workerd": goal(&rss_vs_workerd, "<= 0.1", at_most(&rss_vs_workerd, 0.1),
            "picloud's RSS right after its load / workerd's right after its load"),
    })
}

/// The goals of issue 4, of the event core, of files and of the cost as the work grows
/// together.
pub fn all_goals(document: &Value) -> Value {
    let mut all = goals(document);
    if let Some(all) = all.as_object_mut() {
        for more in [
            event_goals(&document["events"]),
            files_goals(&document["files"]),
            growth_goals(&document["growth"]),
        ] {
            if let Value::Object(more) = more {
                all.extend(more);
            }
        }
    }
    all
}

fn num(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"))
}

fn whole(value: f64) -> String {
    format!("{value:.0}")
}

/// The tables `docs/performance.md` holds.
pub fn markdown(document: &Value, servers: &[ServerResult]) -> String {
    let connections = &document["settings"]["connections"];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| server | req/s @{connections} | p50 @1 (µs) | p99 @1 (µs) | p50 @{connections} (µs) | p99 @{connections} (µs) | server CPU µs/req @{connections} | PostgreSQL CPU µs/req @{connections} | errors |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for server in servers {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            server.name,
            whole(server.concurrent.rps),
            whole(server.single.latency.p50_us),
            whole(server.single.latency.p99_us),
            whole(server.concurrent.latency.p50_us),
            whole(server.concurrent.latency.p99_us),
            whole(server.concurrent.cpu_us_per_request()),
            whole(server.concurrent.database_cpu_us_per_request()),
            server.single.errors + server.concurrent.errors,
        );
    }
    if let Some(skipped) = document["skipped"].as_object() {
        for (name, reason) in skipped {
            let _ = writeln!(
                out,
                "| {name} | skipped: {} ||||||||",
                reason.as_str().unwrap_or("")
            );
        }
    }

    let _ = writeln!(
        out,
        "\n| ratio | req/s @{connections} | p50 @1 | p99 @1 | p50 @{connections} | p99 @{connections} | CPU/req |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    if let Some(ratios) = document["ratios"].as_object() {
        for (server, against) in ratios {
            let Some(against) = against.as_object() else {
                continue;
            };
            for (base, r) in against {
                let base = base.trim_start_matches("vs_");
                let _ = writeln!(
                    out,
                    "| {server} / {base} | {} | {} | {} | {} | {} | {} |",
                    num(&r["rps_concurrent"]),
                    num(&r["p50_c1"]),
                    num(&r["p99_c1"]),
                    num(&r["p50_concurrent"]),
                    num(&r["p99_concurrent"]),
                    num(&r["cpu_per_request"]),
                );
            }
        }
    }

    let idle = &document["idle"];
    let startup = &document["startup"];
    let first = &document["first_request"];
    let incr_vs_set = kv_incr_vs_set(document);
    let rss_vs_workerd = picloud_rss_vs_workerd(document);
    let _ = writeln!(out, "\n| figure | value |\n|---|---:|");
    let rows = [
        (
            "idle CPU after start-up, picloud (s)",
            &idle["after_startup"]["picloud_cpu_s"],
        ),
        (
            "idle CPU after load, picloud (s)",
            &idle["after_load"]["picloud_cpu_s"],
        ),
        (
            "RSS idle after start-up, picloud (MiB)",
            &idle["after_startup"]["picloud_rss_mib"],
        ),
        (
            "RSS right after load, picloud (MiB)",
            &idle["picloud_rss_mib_right_after_load"],
        ),
        (
            "RSS idle after load, picloud (MiB)",
            &idle["after_load"]["picloud_rss_mib"],
        ),
        (
            "RSS right after load, workerd (MiB)",
            &document["workerd"]["rss_mib_right_after_load"],
        ),
        ("RSS right after load, picloud / workerd", &rss_vs_workerd),
        (
            "idle CPU after start-up, PostgreSQL (s)",
            &idle["after_startup"]["postgres_cpu_s"],
        ),
        (
            "idle CPU after load, PostgreSQL (s)",
            &idle["after_load"]["postgres_cpu_s"],
        ),
        (
            "PSS idle after load, PostgreSQL (MiB)",
            &idle["after_load"]["postgres_pss_mib"],
        ),
        (
            "start-up, PostgreSQL running (ms, median)",
            &startup["postgres_running_ms"],
        ),
        (
            "start-up, PostgreSQL stopped (ms, median)",
            &startup["own_postgres_ms"],
        ),
        (
            "first start incl. initdb (ms)",
            &startup["first_start_with_initdb_ms"],
        ),
        (
            "first call after upload, p50 (µs)",
            &first["first_call"]["p50_us"],
        ),
        (
            "steady-state call, p50 (µs)",
            &first["steady_state"]["p50_us"],
        ),
        ("first / steady (p50)", &first["first_vs_steady_p50"]),
        (
            "unknown script id, a 404 after one database lookup, p50 (µs)",
            &first["unknown_script_404"]["p50_us"],
        ),
        (
            "kv incr req/s / kv set req/s (concurrent, one key)",
            &incr_vs_set,
        ),
    ];
    for (label, value) in rows {
        let _ = writeln!(out, "| {label} | {} |", num(value));
    }

    out.push_str(&goals_table(&document["goals"]));
    out
}

/// Each goal with its target, its figure and whether the figure meets it.
fn goals_table(goals: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n| goal | target | value | met |\n|---|---|---:|---|");
    if let Some(goals) = goals.as_object() {
        for (name, goal) in goals {
            let met = match goal["met"].as_bool() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            };
            let _ = writeln!(
                out,
                "| {name}: {} | {} | {} | {met} |",
                goal["what"].as_str().unwrap_or(""),
                goal["target"].as_str().unwrap_or(""),
                num(&goal["value"]),
            );
        }
    }
    out
}

/// The event core's targets, each with the figure it is judged on.
pub fn event_goals(events: &Value) -> Value {
    let p50 = &events["start_latency_ms"]["p50"];
    let ratio = &events["events_vs_raw"];
    json!({
        "event_start_p50": goal(p50, "<= 5 ms", p50.as_f64().map(|v| v <= 5.0),
            "KV write sent to trigger run started, median"),
        "event_throughput": goal(ratio, ">= 0.5", ratio.as_f64().map(|v| v >= 0.5),
            "events dispatched per second, / raw SQL queue rows per second"),
    })
}

/// The event core's figures and its goals (for `--events-only`).
pub fn events_markdown(document: &Value) -> String {
    let mut out = events_table(document);
    out.push_str(&goals_table(&event_goals(&document["events"])));
    out
}

/// The event core's figures.
pub fn events_table(document: &Value) -> String {
    let events = &document["events"];
    let mut out = String::new();
    let _ = writeln!(out, "| event core | value |\n|---|---:|");
    let latency = &events["start_latency_ms"];
    let rows = [
        ("KV write → trigger start, p50 (ms)", &latency["p50"]),
        ("KV write → trigger start, p90 (ms)", &latency["p90"]),
        ("KV write → trigger start, p99 (ms)", &latency["p99"]),
        ("KV write → trigger start, max (ms)", &latency["max"]),
        ("events dispatched per second", &events["events_per_s"]),
        ("raw SQL queue, rows per second", &events["raw_rows_per_s"]),
        ("events/s / raw rows/s", &events["events_vs_raw"]),
        (
            "end to end, KV writes by scripts, events per second",
            &events["kv_script_events_per_s"],
        ),
        ("  / raw rows/s", &events["kv_script_vs_raw"]),
        (
            "end to end, KV writes by admin API PUTs, events per second",
            &events["kv_put_events_per_s"],
        ),
        ("  / raw rows/s", &events["kv_put_vs_raw"]),
    ];
    for (label, value) in rows {
        let _ = writeln!(out, "| {label} | {} |", num(value));
    }
    out
}

/// The targets of files, each with the figure it is judged on (value and `met` are
/// `null` when the step was skipped).
pub fn files_goals(files: &Value) -> Value {
    let (upload, download) = (&files["upload"], &files["download"]);
    let at_least = |value: &Value, limit: f64| value.as_f64().map(|v| v >= limit);
    let at_most = |value: &Value, limit: f64| value.as_f64().map(|v| v <= limit);
    json!({
        "files_upload": goal(&upload["vs_raw_write"], ">= 0.5",
            at_least(&upload["vs_raw_write"], 0.5),
            "file upload through the admin API, MB/s / raw write + fsync MB/s"),
        "files_download": goal(&download["vs_raw_read"], ">= 0.7",
            at_least(&download["vs_raw_read"], 0.7),
            "file download through the admin API, MB/s / raw read MB/s"),
        "files_upload_rss": goal(&upload["peak_rss_growth_mib"], "<= 16 MiB",
            at_most(&upload["peak_rss_growth_mib"], 16.0),
            "picloud's peak RSS growth during the upload"),
        "files_download_rss": goal(&download["peak_rss_growth_mib"], "<= 16 MiB",
            at_most(&download["peak_rss_growth_mib"], 16.0),
            "picloud's peak RSS growth during the download"),
    })
}

/// The files figures: each side's MB/s, the ratio to raw, picloud's peak RSS growth.
pub fn files_table(document: &Value) -> String {
    let files = &document["files"];
    let mut out = String::new();
    if let Some(reason) = files["skipped"].as_str() {
        let _ = writeln!(out, "| files | value |\n|---|---|\n| skipped | {reason} |");
        return out;
    }
    let filesystem = &files["filesystem"];
    let cached = |side: &str| {
        files[side]["cached_bytes_before"].as_u64().map_or_else(
            || "unknown (no fincore)".to_owned(),
            |b| format!("{b} bytes"),
        )
    };
    let _ = writeln!(
        out,
        "files: {} MiB on {} ({}), {} KiB writes and reads, MB = 10^6 bytes; page cache \
         dropped before each read, still cached then: raw {}, picloud's blob {}\n",
        files["mib"],
        filesystem["type"]
            .as_str()
            .unwrap_or("an unknown filesystem"),
        filesystem["source"].as_str().unwrap_or("?"),
        files["chunk_bytes"].as_u64().unwrap_or(0) / 1024,
        cached("raw_read"),
        cached("download"),
    );
    let _ = writeln!(
        out,
        "| files | MB/s | / raw | peak RSS growth, picloud (MiB) |\n|---|---:|---:|---:|"
    );
    let (upload, download) = (&files["upload"], &files["download"]);
    let rows = [
        (
            "raw write + fsync",
            &files["raw_write"],
            &Value::Null,
            &Value::Null,
        ),
        (
            "upload, admin API PUT",
            upload,
            &upload["vs_raw_write"],
            &upload["peak_rss_growth_mib"],
        ),
        ("raw read", &files["raw_read"], &Value::Null, &Value::Null),
        (
            "download, admin API GET",
            download,
            &download["vs_raw_read"],
            &download["peak_rss_growth_mib"],
        ),
    ];
    let cell = |value: &Value| {
        if value.is_null() {
            String::new()
        } else {
            num(value)
        }
    };
    for (label, side, vs_raw, rss) in rows {
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} |",
            num(&side["mb_per_s"]),
            cell(vs_raw),
            cell(rss),
        );
    }
    out
}

/// The files figures and their goals (for `--files-only`).
pub fn files_markdown(document: &Value) -> String {
    let mut out = files_table(document);
    out.push_str(&goals_table(&files_goals(&document["files"])));
    out
}

/// The targets of the cost as the work grows: each operation's cost at the largest size
/// over its cost at the smallest, at most 2.
pub fn growth_goals(growth: &Value) -> Value {
    let at_most_2 = |value: &Value| value.as_f64().map(|v| v <= 2.0);
    let kv = &growth["kv_fan_out"]["largest_vs_smallest"];
    let dispatch = &growth["dispatch"]["largest_vs_smallest"];
    let first = &growth["first_call"]["first_call_largest_vs_smallest"];
    let steady = &growth["first_call"]["steady_largest_vs_smallest"];
    let list = &growth["list_page"]["largest_vs_smallest"];
    json!({
        "growth_kv_fan_out": goal(kv, "<= 2", at_most_2(kv),
            "KV write p50 with the most kv triggers in the app / with one"),
        "growth_dispatch": goal(dispatch, "<= 2", at_most_2(dispatch),
            "events dispatched per second with no outbox rows waiting / with the most"),
        "growth_first_call": goal(first, "<= 2", at_most_2(first),
            "first call after upload p50 with the most scripts stored / with the fewest"),
        "growth_steady_call": goal(steady, "<= 2", at_most_2(steady),
            "steady-state call p50 with the most scripts stored / with the fewest"),
        "growth_list_page": goal(list, "<= 2", at_most_2(list),
            "first page of a script's execution records p50 with the most records / the fewest"),
    })
}

/// One table of the cost as the work grows: a row per size (its label and figures, read
/// from each size's JSON by `cells`), then the ratio row.
fn growth_rows(
    out: &mut String,
    header: &str,
    sizes: &Value,
    cells: impl Fn(&Value) -> Vec<String>,
    ratio_row: &str,
) {
    let columns = header.matches('|').count().saturating_sub(1);
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "|---{}|", "|---:".repeat(columns.saturating_sub(1)));
    for size in sizes.as_array().into_iter().flatten() {
        let _ = writeln!(out, "| {} |", cells(size).join(" | "));
    }
    let _ = writeln!(out, "{ratio_row}\n");
}

/// The figures of the cost as the work grows: one table per operation, each with its
/// largest / smallest ratio.
pub fn growth_table(document: &Value) -> String {
    let growth = &document["growth"];
    let mut out = String::new();
    let kv = &growth["kv_fan_out"];
    growth_rows(
        &mut out,
        "| kv triggers in the app (one matches) | KV write p50 (µs) | p99 (µs) | writes/s |",
        &kv["sizes"],
        |size| {
            vec![
                size["enabled_kv_triggers"].to_string(),
                num(&size["latency"]["p50_us"]),
                num(&size["latency"]["p99_us"]),
                num(&size["writes_per_s"]),
            ]
        },
        &format!(
            "| largest / smallest | {} | | {} (smallest / largest) |",
            num(&kv["largest_vs_smallest"]),
            num(&kv["writes_per_s_smallest_vs_largest"]),
        ),
    );
    let dispatch = &growth["dispatch"];
    growth_rows(
        &mut out,
        "| outbox rows waiting, due later | events dispatched/s (median) | rounds |",
        &dispatch["sizes"],
        |size| {
            let rounds: Vec<String> = size["rounds_events_per_s"]
                .as_array()
                .into_iter()
                .flatten()
                .map(num)
                .collect();
            vec![
                size["waiting_rows"].to_string(),
                num(&size["events_per_s"]),
                rounds.join(" / "),
            ]
        },
        &format!(
            "| smallest / largest (events/s) | {} | |",
            num(&dispatch["largest_vs_smallest"])
        ),
    );
    let first = &growth["first_call"];
    growth_rows(
        &mut out,
        "| scripts stored | upload p50 (µs) | first call p50 (µs) | steady call p50 (µs) |",
        &first["sizes"],
        |size| {
            vec![
                size["scripts_stored"].to_string(),
                num(&size["upload"]["p50_us"]),
                num(&size["first_call"]["p50_us"]),
                num(&size["steady_state"]["p50_us"]),
            ]
        },
        &format!(
            "| largest / smallest | | {} | {} |",
            num(&first["first_call_largest_vs_smallest"]),
            num(&first["steady_largest_vs_smallest"]),
        ),
    );
    let list = &growth["list_page"];
    growth_rows(
        &mut out,
        "| execution records of the script | first page p50 (µs) | p99 (µs) |",
        &list["sizes"],
        |size| {
            vec![
                size["rows"].to_string(),
                num(&size["latency"]["p50_us"]),
                num(&size["latency"]["p99_us"]),
            ]
        },
        &format!(
            "| largest / smallest | {} | |",
            num(&list["largest_vs_smallest"])
        ),
    );
    out
}

/// The figures of the cost as the work grows and their goals (for `--growth-only`).
pub fn growth_markdown(document: &Value) -> String {
    let mut out = growth_table(document);
    out.push_str(&goals_table(&growth_goals(&document["growth"])));
    out
}
