//! The PiCloud side of the run: start-up, idle cost, memory, load on each script, the
//! first call of a freshly uploaded script, the event core, files, and the cost as the work
//! grows.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hyper::StatusCode;
use picloud_shared::ScriptId;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::http::{Call, Connection};
use crate::load::{self, Latency, round2};
use crate::picloud::{self, Launcher, Picloud};
use crate::{Options, ServerResult, events, files, growth, measure_server, procfs};

/// Pause between readiness and the idle window after start-up.
const IDLE_SETTLE: Duration = Duration::from_secs(1);

/// One MiB, for reporting memory.
const MIB: f64 = 1024.0 * 1024.0;

/// Everything measured on PiCloud.
#[derive(Debug)]
pub struct PicloudReport {
    /// Load results per script.
    pub servers: Vec<ServerResult>,
    /// Scripts that could not be measured, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Idle CPU and memory.
    pub idle: Value,
    /// Start-up times.
    pub startup: Value,
    /// First call after upload vs steady state.
    pub first_request: Value,
    /// The event core.
    pub events: Value,
    /// Files through the admin API against raw disk I/O.
    pub files: Value,
    /// The cost of four operations as the work stored grows.
    pub growth: Value,
}

/// A 1 KiB JSON document for the echo script.
pub fn one_kib_json() -> String {
    let mut items = Vec::new();
    let mut document = json!({ "items": [] }).to_string();
    let mut i = 0;
    while document.len() < 1024 {
        items.push(json!({ "id": i, "name": format!("item-{i}"), "tags": ["pi", "cloud"] }));
        document = json!({ "items": items }).to_string();
        i += 1;
    }
    document
}

/// Idle CPU over a window, and memory at its end.
async fn idle_window(pid: u32, cluster_dir: &std::path::Path, window: Duration) -> Result<Value> {
    let cpu_before = procfs::cpu_seconds(pid)?;
    let pg_before = load::database_snapshot(Some(cluster_dir));
    tokio::time::sleep(window).await;
    let cpu = procfs::cpu_seconds(pid)? - cpu_before;
    let pg_cpu = pg_before.used_until(&load::database_snapshot(Some(cluster_dir)));
    let postgres = procfs::postgres_processes(cluster_dir).unwrap_or_default();
    #[expect(
        clippy::cast_precision_loss,
        reason = "memory sizes are far below 2^52"
    )]
    Ok(json!({
        "window_s": window.as_secs_f64(),
        "picloud_cpu_s": round2(cpu.max(0.0)),
        "picloud_rss_mib": round2(procfs::rss_bytes(pid)? as f64 / MIB),
        "postgres_cpu_s": round2(pg_cpu.max(0.0)),
        "postgres_pss_mib": round2(procfs::group_pss_bytes(&postgres) as f64 / MIB),
        "postgres_processes": postgres.len(),
    }))
}

fn median_ms(samples: &[Duration]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .map_or(0.0, |d| round2(d.as_secs_f64() * 1e3))
}

fn all_ms(samples: &[Duration]) -> Vec<f64> {
    samples
        .iter()
        .map(|d| round2(d.as_secs_f64() * 1e3))
        .collect()
}

/// The event core's measurements for `options`.
fn event_spec(options: &Options) -> events::EventSpec {
    events::EventSpec {
        latency_events: options.latency_events,
        throughput_events: options.throughput_events,
        connections: options.event_connections,
    }
}

/// Only the event core, on one freshly initialised picloud.
pub async fn run_events_only(options: &Options) -> Result<Value> {
    in_scratch(options, async |launcher: &Launcher| {
        eprintln!("picloud-bench: first start of picloud (initialises its PostgreSQL)");
        let (mut server, _) = launcher.start_ready().await?;
        let token = picloud::login(server.addr).await?;
        let measured = events::run(
            server.addr,
            &token,
            &launcher.cluster_dir(),
            event_spec(options),
        )
        .await;
        server.stop()?;
        measured
    })
    .await
}

/// The files step's measurement on `server`.
fn files_spec(
    options: &Options,
    launcher: &Launcher,
    server: &Picloud,
    token: String,
) -> files::FilesSpec {
    files::FilesSpec {
        addr: server.addr,
        token,
        pid: server.pid(),
        data_dir: launcher.data_dir.clone(),
        files_dir: launcher.files_dir(),
        bytes: options.files_bytes(),
    }
}

/// Only files, on one freshly initialised picloud.
pub async fn run_files_only(options: &Options) -> Result<Value> {
    in_scratch(options, async |launcher: &Launcher| {
        eprintln!("picloud-bench: first start of picloud (initialises its PostgreSQL)");
        let (mut server, _) = launcher.start_ready().await?;
        let token = picloud::login(server.addr).await?;
        let measured = files::run(&files_spec(options, launcher, &server, token)).await;
        server.stop()?;
        measured
    })
    .await
}

/// Only the cost as the work grows, on one freshly initialised picloud.
pub async fn run_growth_only(options: &Options) -> Result<Value> {
    in_scratch(options, async |launcher: &Launcher| {
        eprintln!("picloud-bench: first start of picloud (initialises its PostgreSQL)");
        let (mut server, _) = launcher.start_ready().await?;
        let token = picloud::login(server.addr).await?;
        let measured = growth::run(
            server.addr,
            &token,
            &launcher.cluster_dir(),
            &growth::spec(options),
        )
        .await;
        server.stop()?;
        measured
    })
    .await
}

/// Runs the whole PiCloud side.
pub async fn run(options: &Options) -> Result<PicloudReport> {
    in_scratch(options, async |launcher: &Launcher| {
        run_with(options, launcher).await
    })
    .await
}

/// Runs `body` with a launcher whose data directory is a fresh scratch directory.
async fn in_scratch<T>(
    options: &Options,
    body: impl AsyncFnOnce(&Launcher) -> Result<T>,
) -> Result<T> {
    let binary = picloud::locate_binary(options.picloud.as_deref())?;
    // Under /tmp with a short name: the cluster's socket path must stay under 108 bytes,
    // and the `postgres` user (when running as root) must be able to reach it.
    let scratch = tempfile::Builder::new()
        .prefix("picloud-bench.")
        .tempdir_in("/tmp")
        .context("creating a scratch directory")?;
    let launcher = Launcher {
        binary,
        data_dir: scratch.path().join("data"),
    };
    let result = body(&launcher).await;
    if result.is_err() {
        // Keep the logs of a failed run for a look; the directory is otherwise removed.
        let kept = scratch.keep();
        eprintln!(
            "picloud-bench: picloud's data and log kept in {}",
            kept.display()
        );
    }
    result
}

async fn run_with(options: &Options, launcher: &Launcher) -> Result<PicloudReport> {
    eprintln!("picloud-bench: first start of picloud (initialises its PostgreSQL)");
    let (mut first, first_start) = launcher.start_ready().await?;
    first.stop()?;

    // Start-up with the database initialised but stopped: picloud starts its PostgreSQL.
    let mut own_postgres = Vec::new();
    let mut server: Option<Picloud> = None;
    for round in 0..options.startup_runs {
        let (mut picloud, elapsed) = launcher.start_ready().await?;
        own_postgres.push(elapsed);
        if round + 1 == options.startup_runs {
            server = Some(picloud);
        } else {
            picloud.stop()?;
        }
    }
    let Some(mut server) = server else {
        bail!("--startup-runs must be at least 1");
    };
    let addr = server.addr;
    let pid = server.pid();
    let cluster_dir = launcher.cluster_dir();

    // The window opens a moment after `/readyz` first answered: work that start-up
    // kicks off and that ends on its own (the first retention pass, the pool's
    // connections) is start-up, not idle cost. CPU time is counted in 10 ms ticks, so
    // its tail alone could show as 0.01 s.
    tokio::time::sleep(IDLE_SETTLE).await;
    eprintln!("picloud-bench: idle window after start-up");
    let idle_after_startup = idle_window(pid, &cluster_dir, options.idle).await?;

    // Start-up with PostgreSQL already running: a second picloud on the same data
    // directory reuses the running server (and leaves it running when it stops).
    let mut running_postgres = Vec::new();
    for _ in 0..options.startup_runs {
        let (mut second, elapsed) = launcher.start_ready().await?;
        running_postgres.push(elapsed);
        second.stop()?;
    }

    let token = picloud::login(addr).await?;
    let mut servers = Vec::new();
    let mut skipped = Vec::new();
    let server_pids = [pid];
    let postgres = Some(cluster_dir.as_path());

    let hello = picloud::create_script(addr, &token, "hello", r#""hello""#).await?;
    let hello_call = Call::get(format!("/api/execute/{hello}"));
    check_answer(addr, &hello_call, b"hello").await?;
    eprintln!("picloud-bench: load on picloud_hello");
    servers.push(
        measure_server(
            options,
            "picloud_hello",
            addr,
            &hello_call,
            &server_pids,
            postgres,
        )
        .await?,
    );

    let echo = picloud::create_script(addr, &token, "echo", "ctx.request.json").await?;
    let document = one_kib_json();
    let echo_call = Call::post_json(format!("/api/execute/{echo}"), document.clone());
    check_json_echo(addr, &echo_call, &document).await?;
    eprintln!("picloud-bench: load on picloud_echo_json_1k");
    servers.push(
        measure_server(
            options,
            "picloud_echo_json_1k",
            addr,
            &echo_call,
            &server_pids,
            postgres,
        )
        .await?,
    );

    // The KV scenarios one after another, so that `set` and `incr` are compared within
    // one run on one machine's mood.
    for (name, call) in kv_scenarios(addr, &token).await? {
        match call {
            Ok(call) => {
                eprintln!("picloud-bench: load on {name}");
                servers.push(
                    measure_server(options, name, addr, &call, &server_pids, postgres).await?,
                );
            }
            Err(reason) => {
                eprintln!("picloud-bench: {name} skipped: {reason}");
                skipped.push((name.to_owned(), reason));
            }
        }
    }

    // The same hello script on a second instance that logs only warnings: what the
    // per-execution info line costs. It shares the database (and so the script).
    eprintln!("picloud-bench: load on picloud_hello_log_warn");
    let (mut quiet, _) = launcher
        .start_ready_with(&[("PICLOUD_LOG", "warn")])
        .await?;
    let quiet_pids = [quiet.pid()];
    let measured = measure_server(
        options,
        "picloud_hello_log_warn",
        quiet.addr,
        &hello_call,
        &quiet_pids,
        postgres,
    )
    .await;
    quiet.stop()?;
    servers.push(measured?);

    eprintln!("picloud-bench: first call after upload");
    let first_request = first_after_upload(addr, &token, options).await?;

    #[expect(
        clippy::cast_precision_loss,
        reason = "memory sizes are far below 2^52"
    )]
    let rss_right_after_load = round2(procfs::rss_bytes(pid)? as f64 / MIB);
    eprintln!("picloud-bench: idle window after load");
    let idle_after_load = idle_window(pid, &cluster_dir, options.idle).await?;

    // Last, after the idle windows: the event core leaves a trigger behind.
    let events = events::run(addr, &token, &cluster_dir, event_spec(options)).await?;
    // It writes and reads the most bytes, and leaves a file behind.
    let files = files::run(&files_spec(options, launcher, &server, token.clone())).await?;
    // Last of all: it fills tables with rows (and leaves most of them behind).
    let growth = growth::run(addr, &token, &cluster_dir, &growth::spec(options)).await?;
    server.stop()?;

    Ok(PicloudReport {
        servers,
        skipped,
        idle: json!({
            "settle_after_startup_s": IDLE_SETTLE.as_secs_f64(),
            "after_startup": idle_after_startup,
            "after_load": idle_after_load,
            "picloud_rss_mib_right_after_load": rss_right_after_load,
        }),
        startup: json!({
            "first_start_with_initdb_ms": round2(first_start.as_secs_f64() * 1e3),
            "own_postgres_ms": median_ms(&own_postgres),
            "own_postgres_runs_ms": all_ms(&own_postgres),
            "postgres_running_ms": median_ms(&running_postgres),
            "postgres_running_runs_ms": all_ms(&running_postgres),
        }),
        first_request,
        events,
        files,
        growth,
    })
}

/// Sends `call` once and insists on a 200 with `expected` as the body.
async fn check_answer(addr: SocketAddr, call: &Call, expected: &[u8]) -> Result<()> {
    let (status, body) = Connection::open(addr).await?.send(call).await?;
    if status != StatusCode::OK || body.as_ref() != expected {
        bail!(
            "{} answered {status} {:?}, expected 200 {:?}",
            call.path,
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(expected)
        );
    }
    Ok(())
}

/// The echo script must give back the document it was sent (as JSON; key order aside).
async fn check_json_echo(addr: SocketAddr, call: &Call, document: &str) -> Result<()> {
    let (status, body) = Connection::open(addr).await?.send(call).await?;
    let sent: Value = serde_json::from_str(document)?;
    let got: Value = serde_json::from_slice(&body)
        .with_context(|| format!("echo answered {status} with non-JSON"))?;
    if status != StatusCode::OK || sent != got {
        bail!("echo answered {status} {got}, expected the document back");
    }
    Ok(())
}

/// The KV scenarios, each with its call or the reason this build cannot run it:
/// `picloud_kv_get` (a read), `picloud_kv_set` (a plain write) and `picloud_kv_incr` (an
/// atomic counter), the two writes on one key, so both wait for the same row lock.
async fn kv_scenarios(
    addr: SocketAddr,
    token: &str,
) -> Result<Vec<(&'static str, Result<Call, String>)>> {
    let get = kv_call(addr, token).await?;
    if let Err(reason) = &get {
        // No KV service: no write can run either.
        return Ok(["picloud_kv_get", "picloud_kv_set", "picloud_kv_incr"]
            .map(|name| (name, Err(reason.clone())))
            .into());
    }
    let set = kv_write_call(
        addr,
        token,
        "kv-set",
        r#"kv::collection("bench").set("k", 1)"#,
        |body| body.is_empty(),
    )
    .await?;
    // Each call answers the new count: any whole number.
    let incr = kv_write_call(
        addr,
        token,
        "kv-incr",
        r#"kv::collection("bench").incr("k")"#,
        |body| {
            std::str::from_utf8(body)
                .ok()
                .and_then(|text| text.parse::<i64>().ok())
                .is_some()
        },
    )
    .await?;
    Ok(vec![
        ("picloud_kv_get", get),
        ("picloud_kv_set", set),
        ("picloud_kv_incr", incr),
    ])
}

/// The KV-get call when this build has the KV service: a setup script stores a value and
/// the measured script reads it. `Ok(Err(reason))` when the service is not there (yet).
async fn kv_call(addr: SocketAddr, token: &str) -> Result<Result<Call, String>> {
    let setup = picloud::create_script(
        addr,
        token,
        "kv-setup",
        r#"kv::collection("bench").set("greeting", "hello"); "stored""#,
    )
    .await?;
    let (status, body) = Connection::open(addr)
        .await?
        .send(&Call::get(format!("/api/execute/{setup}")))
        .await?;
    if status != StatusCode::OK {
        return Ok(Err(format!(
            "the KV service is not available in this build ({status}: {})",
            String::from_utf8_lossy(&body)
        )));
    }
    let get = picloud::create_script(
        addr,
        token,
        "kv-get",
        r#"kv::collection("bench").get("greeting")"#,
    )
    .await?;
    let call = Call::get(format!("/api/execute/{get}"));
    check_answer(addr, &call, b"hello").await?;
    Ok(Ok(call))
}

/// The call of a KV-writing script `source`, tried once: `Ok(Err(reason))` when this build
/// refuses it (a script error: an SDK without the call), an error when it answers 200
/// with a body `expected` does not accept.
async fn kv_write_call(
    addr: SocketAddr,
    token: &str,
    name: &str,
    source: &str,
    expected: impl Fn(&[u8]) -> bool,
) -> Result<Result<Call, String>> {
    let id = picloud::create_script(addr, token, name, source).await?;
    let call = Call::get(format!("/api/execute/{id}"));
    let (status, body) = Connection::open(addr).await?.send(&call).await?;
    if status != StatusCode::OK {
        return Ok(Err(format!(
            "`{source}` does not run on this build ({status}: {})",
            String::from_utf8_lossy(&body)
        )));
    }
    if !expected(&body) {
        bail!(
            "`{source}` answered 200 {:?}, not what it should",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(Ok(call))
}

/// Latency of the first call of a newly uploaded script against the calls that follow,
/// all on one warm keep-alive connection, one request at a time.
async fn first_after_upload(addr: SocketAddr, token: &str, options: &Options) -> Result<Value> {
    let mut connection = Connection::open(addr).await?;
    let mut first = Vec::new();
    let mut steady = Vec::new();
    for round in 0..options.upload_rounds {
        let source = format!(r#""first call {round}""#);
        let id = picloud::create_script(addr, token, &format!("first-{round}"), &source).await?;
        let call = Call::get(format!("/api/execute/{id}"));
        for call_index in 0..=options.steady_calls {
            let started = Instant::now();
            let (status, _) = connection.send(&call).await?;
            let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            if status != StatusCode::OK {
                bail!("a freshly uploaded script answered {status}");
            }
            if call_index == 0 {
                first.push(nanos);
            } else {
                steady.push(nanos);
            }
        }
    }
    // What a lookup of a script the resolver has not cached costs on its own: an id
    // nobody uploaded misses the cache, asks the database, and answers 404.
    let mut unknown = Vec::new();
    for _ in 0..options.upload_rounds {
        let call = Call::get(format!("/api/execute/{}", ScriptId::new()));
        let started = Instant::now();
        let (status, _) = connection.send(&call).await?;
        unknown.push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        if status != StatusCode::NOT_FOUND {
            bail!("an unknown script id answered {status}");
        }
    }
    let first = Latency::from_nanos(first);
    let steady = Latency::from_nanos(steady);
    let unknown = Latency::from_nanos(unknown);
    let ratio = if steady.p50_us > 0.0 {
        first.p50_us / steady.p50_us
    } else {
        0.0
    };
    Ok(json!({
        "uploads": options.upload_rounds,
        "steady_calls_per_upload": options.steady_calls,
        "first_call": first.to_json(),
        "steady_state": steady.to_json(),
        "first_vs_steady_p50": round2(ratio),
        "unknown_script_404": unknown.to_json(),
    }))
}
