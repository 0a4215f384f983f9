//! `picloud-bench`: measures PiCloud's execute path against bare axum baselines in one run
//! on one machine: requests per second and latency percentiles under load, the ratios
//! PiCloud / baseline, idle CPU and memory, start-up time, the first call of a freshly
//! uploaded script, the event core (KV write to trigger start, events per second), files
//! (upload and download through the admin API against raw disk I/O), and the cost of four
//! operations as the work stored grows, with workerd (Cloudflare's Workers runtime)
//! answering the same hello as a peer. Prints a table and writes JSON. See
//! `docs/performance.md`.

mod baseline;
mod events;
mod files;
mod growth;
mod http;
mod load;
mod picloud;
mod procfs;
mod report;
mod suite;
mod workerd;

// The in-process executor baselines run with the same metering allocator as `picloud`.
#[global_allocator]
static ALLOCATOR: picloud_executor_core::RunMemoryAllocator =
    picloud_executor_core::RunMemoryAllocator;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::http::Call;
use crate::load::{LoadResult, LoadSpec};

const USAGE: &str = "\
usage: picloud-bench [options]

  --picloud PATH        the picloud binary (default: next to this executable)
  --workerd PATH        the workerd binary (default: the one bench/run installs under
                        target/bench/workerd; skipped when there is none)
  --out PATH            where the JSON goes (default: target/bench/results.json)
  --duration SECS       measured time of each load run (default: 10)
  --warmup SECS         unmeasured time before each load run (default: 2)
  --connections N       connections of the concurrent load runs (default: 64)
  --client-threads N    load generator threads (default: 2)
  --idle SECS           each idle window (default: 30)
  --startup-runs N      start-ups timed per kind (default: 5)
  --upload-rounds N     freshly uploaded scripts timed (default: 20)
  --events N M          KV events timed one at a time, and per throughput phase (default: 500 4000)
  --events-only         only the event core: trigger start latency, events/s, raw queue
  --files-mib N         size of the file uploaded and downloaded (default: 256)
  --files-only          only files: upload and download against raw write and read, peak RSS
  --growth-only         only the cost as the work grows: KV fan-out over idle triggers,
                        dispatch over waiting outbox rows, first call over stored scripts,
                        a list page over stored execution records
  --smoke               a few seconds in all: checks that the harness works, measures nothing

       picloud-bench load ADDR PATH [--connections N] [--duration SECS]
  loads a running server (e.g. picloud under `perf record`) and prints what it measured
";

/// One MiB.
const MIB: u64 = 1024 * 1024;

/// What the run does and for how long.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `picloud` binary, when not next to this executable.
    pub picloud: Option<PathBuf>,
    /// The `workerd` binary, when not the one `bench/run` installs.
    pub workerd: Option<PathBuf>,
    /// Where the JSON goes.
    pub out: PathBuf,
    /// Measured time of each load run.
    pub duration: Duration,
    /// Unmeasured time before each load run.
    pub warmup: Duration,
    /// Connections of the concurrent load runs.
    pub connections: usize,
    /// Load generator threads.
    pub client_threads: usize,
    /// Each idle window.
    pub idle: Duration,
    /// Start-ups timed per kind.
    pub startup_runs: usize,
    /// Freshly uploaded scripts timed.
    pub upload_rounds: usize,
    /// Calls after each fresh upload that make up the steady state.
    pub steady_calls: usize,
    /// KV events sent one at a time for the trigger start latency.
    pub latency_events: usize,
    /// Events of each throughput phase (dispatch, raw queue, KV writes by scripts and by
    /// the admin API).
    pub throughput_events: usize,
    /// Connections sending the throughput events.
    pub event_connections: usize,
    /// Only the event core section.
    pub events_only: bool,
    /// Size of the file the files step moves, in MiB.
    pub files_mib: u64,
    /// Only the files section.
    pub files_only: bool,
    /// Only the section on the cost as the work grows.
    pub growth_only: bool,
    /// A quick run that only checks the harness works.
    pub smoke: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            picloud: None,
            workerd: None,
            out: PathBuf::from("target/bench/results.json"),
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            connections: 64,
            client_threads: 2,
            idle: Duration::from_secs(30),
            startup_runs: 5,
            upload_rounds: 20,
            steady_calls: 50,
            latency_events: 500,
            throughput_events: 4_000,
            event_connections: 16,
            events_only: false,
            files_mib: 256,
            files_only: false,
            growth_only: false,
            smoke: false,
        }
    }
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self::default();
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .cloned()
                    .ok_or_else(|| anyhow!("{flag} needs a value"))
            };
            let seconds = |raw: String| -> Result<Duration> {
                raw.parse::<f64>()
                    .ok()
                    .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                    .ok_or_else(|| anyhow!("{flag} takes seconds, got {raw:?}"))
            };
            let count = |raw: String| -> Result<usize> {
                raw.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| anyhow!("{flag} takes a positive number, got {raw:?}"))
            };
            match flag.as_str() {
                "--picloud" => options.picloud = Some(PathBuf::from(value()?)),
                "--workerd" => options.workerd = Some(PathBuf::from(value()?)),
                "--out" => options.out = PathBuf::from(value()?),
                "--duration" => options.duration = seconds(value()?)?,
                "--warmup" => options.warmup = seconds(value()?)?,
                "--connections" => options.connections = count(value()?)?,
                "--client-threads" => options.client_threads = count(value()?)?,
                "--idle" => options.idle = seconds(value()?)?,
                "--startup-runs" => options.startup_runs = count(value()?)?,
                "--upload-rounds" => options.upload_rounds = count(value()?)?,
                "--events" => {
                    options.latency_events = count(value()?)?;
                    options.throughput_events = count(value()?)?;
                }
                "--events-only" => options.events_only = true,
                "--files-mib" => {
                    options.files_mib = u64::try_from(count(value()?)?)?;
                    if options.files_mib.checked_mul(MIB).is_none() {
                        bail!("--files-mib {} is too large", options.files_mib);
                    }
                }
                "--files-only" => options.files_only = true,
                "--growth-only" => options.growth_only = true,
                "--smoke" => {
                    options.smoke = true;
                    options.duration = Duration::from_millis(300);
                    options.warmup = Duration::from_millis(100);
                    options.idle = Duration::from_millis(500);
                    options.startup_runs = 1;
                    options.upload_rounds = 2;
                    options.steady_calls = 5;
                    options.latency_events = 5;
                    options.throughput_events = 20;
                    options.files_mib = 4;
                }
                "-h" | "--help" => bail!("{USAGE}"),
                other => bail!("unknown option {other:?}\n\n{USAGE}"),
            }
        }
        let only = [options.events_only, options.files_only, options.growth_only];
        if only.into_iter().filter(|given| *given).count() > 1 {
            bail!("--events-only, --files-only and --growth-only exclude each other\n\n{USAGE}");
        }
        Ok(options)
    }

    /// The size of the files step's file, in bytes.
    pub fn files_bytes(&self) -> u64 {
        // `parse` refuses a size whose bytes would not fit.
        self.files_mib.saturating_mul(MIB)
    }

    fn to_json(&self) -> Value {
        json!({
            "duration_s": self.duration.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "connections": self.connections,
            "client_threads": self.client_threads,
            "idle_window_s": self.idle.as_secs_f64(),
            "startup_runs": self.startup_runs,
            "upload_rounds": self.upload_rounds,
            "steady_calls": self.steady_calls,
            "latency_events": self.latency_events,
            "throughput_events": self.throughput_events,
            "event_connections": self.event_connections,
            "events_only": self.events_only,
            "files_mib": self.files_mib,
            "files_only": self.files_only,
            "growth_only": self.growth_only,
            "smoke": self.smoke,
        })
    }
}

/// One server's load results: one connection, then many.
#[derive(Debug, Clone)]
pub struct ServerResult {
    /// Its name in the report.
    pub name: String,
    /// One connection.
    pub single: LoadResult,
    /// `--connections` connections.
    pub concurrent: LoadResult,
}

impl ServerResult {
    fn to_json(&self) -> Value {
        json!({
            "c1": self.single.to_json(),
            "concurrent": self.concurrent.to_json(),
        })
    }
}

/// Loads one server with one connection, then with `--connections`.
pub async fn measure_server(
    options: &Options,
    name: &str,
    addr: SocketAddr,
    call: &Call,
    server: &[u32],
    database: Option<&Path>,
) -> Result<ServerResult> {
    let spec = |connections| LoadSpec {
        addr,
        call: call.clone(),
        expect: StatusCode::OK,
        connections,
        warmup: options.warmup,
        duration: options.duration,
        server: server.to_vec(),
        database: database.map(Path::to_path_buf),
    };
    let single = load::run(&spec(1)).await?;
    let concurrent = load::run(&spec(options.connections)).await?;
    Ok(ServerResult {
        name: name.to_owned(),
        single,
        concurrent,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve-baseline") => return baseline::serve_main(&args[1..]),
        Some("load") => return load_main(&args[1..]),
        _ => {}
    }
    let options = match Options::parse(&args) {
        Ok(options) => options,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.client_threads)
        .enable_all()
        .build();
    let result = runtime
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(&options)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("picloud-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `load ADDR PATH [options]`: one load run against a server started by hand.
fn load_main(args: &[String]) -> ExitCode {
    let result = (|| -> Result<Value> {
        let [addr, path, rest @ ..] = args else {
            bail!("{USAGE}");
        };
        let addr: SocketAddr = addr.parse().context("ADDR is host:port")?;
        let options = Options::parse(rest)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.client_threads)
            .enable_all()
            .build()?;
        let spec = LoadSpec {
            addr,
            call: Call::get(path.clone()),
            expect: StatusCode::OK,
            connections: options.connections,
            warmup: options.warmup,
            duration: options.duration,
            server: Vec::new(),
            database: None,
        };
        Ok(runtime.block_on(load::run(&spec))?.to_json())
    })();
    match result {
        Ok(measured) => {
            println!("{measured:#}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("picloud-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the JSON document to `--out`.
fn write_json(options: &Options, document: &Value) -> Result<()> {
    if let Some(dir) = options
        .out
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(document)?;
    std::fs::write(&options.out, text + "\n")
        .with_context(|| format!("writing {}", options.out.display()))?;
    eprintln!("picloud-bench: JSON written to {}", options.out.display());
    Ok(())
}

/// `--events-only`: one picloud, the event core, nothing else.
async fn run_events_only(options: &Options) -> Result<()> {
    let mut machine = report::machine();
    let events = suite::run_events_only(options).await?;
    machine["load_average_at_end"] = Value::from(report::load_average());
    let mut document = json!({
        "generated_at": chrono::Utc::now().to_rfc3339(),
        "machine": machine,
        "settings": options.to_json(),
        "events": events,
    });
    document["goals"] = report::event_goals(&document["events"]);
    write_json(options, &document)?;
    println!("{}", report::events_markdown(&document));
    Ok(())
}

/// `--files-only`: one picloud, the files step, nothing else.
async fn run_files_only(options: &Options) -> Result<()> {
    let mut machine = report::machine();
    let files = suite::run_files_only(options).await?;
    machine["load_average_at_end"] = Value::from(report::load_average());
    let mut document = json!({
        "generated_at": chrono::Utc::now().to_rfc3339(),
        "machine": machine,
        "settings": options.to_json(),
        "files": files,
    });
    document["goals"] = report::files_goals(&document["files"]);
    write_json(options, &document)?;
    println!("{}", report::files_markdown(&document));
    Ok(())
}

/// `--growth-only`: one picloud, the step on the cost as the work grows, nothing else.
async fn run_growth_only(options: &Options) -> Result<()> {
    let mut machine = report::machine();
    let growth = suite::run_growth_only(options).await?;
    machine["load_average_at_end"] = Value::from(report::load_average());
    let mut document = json!({
        "generated_at": chrono::Utc::now().to_rfc3339(),
        "machine": machine,
        "settings": options.to_json(),
        "growth": growth,
    });
    document["goals"] = report::growth_goals(&document["growth"]);
    write_json(options, &document)?;
    println!("{}", report::growth_markdown(&document));
    Ok(())
}

async fn run(options: &Options) -> Result<()> {
    if options.events_only {
        return run_events_only(options).await;
    }
    if options.files_only {
        return run_files_only(options).await;
    }
    if options.growth_only {
        return run_growth_only(options).await;
    }
    let machine = report::machine();
    let mut servers = Vec::new();
    for kind in baseline::KINDS {
        eprintln!("picloud-bench: load on baseline_{kind}");
        let server = baseline::Baseline::start(kind)?;
        let measured = measure_server(
            options,
            &format!("baseline_{kind}"),
            server.addr,
            &Call::get(baseline::PATH),
            &[server.pid()],
            None,
        )
        .await;
        server.stop()?;
        servers.push(measured?);
    }

    // The peer: measured like the baselines when installed, skipped with the reason
    // otherwise (never a failure of the run).
    let mut skipped = Vec::new();
    eprintln!("picloud-bench: load on {}", workerd::NAME);
    let peer = match workerd::measure(options).await {
        Ok(measured) => {
            servers.push(measured.server);
            measured.details
        }
        Err(reason) => {
            eprintln!("picloud-bench: {} skipped: {reason}", workerd::NAME);
            skipped.push((workerd::NAME.to_owned(), reason));
            Value::Null
        }
    };

    let picloud = suite::run(options).await?;
    servers.extend(picloud.servers.iter().cloned());
    skipped.extend(picloud.skipped.iter().cloned());

    let mut machine = machine;
    machine["load_average_at_end"] = Value::from(report::load_average());
    let ratios = report::ratios(&servers);
    let document = json!({
        "generated_at": chrono::Utc::now().to_rfc3339(),
        "machine": machine,
        "settings": options.to_json(),
        "servers": servers
            .iter()
            .map(|server| (server.name.clone(), server.to_json()))
            .collect::<serde_json::Map<_, _>>(),
        "skipped": skipped
            .iter()
            .map(|(name, reason)| (name.clone(), Value::from(reason.clone())))
            .collect::<serde_json::Map<_, _>>(),
        "ratios": ratios,
        "idle": picloud.idle,
        "startup": picloud.startup,
        "first_request": picloud.first_request,
        "events": picloud.events,
        "files": picloud.files,
        "growth": picloud.growth,
        "workerd": peer,
    });
    let mut document = document;
    let rss_vs_workerd = report::picloud_rss_vs_workerd(&document);
    if let Some(section) = document["workerd"].as_object_mut() {
        section.insert(
            "picloud_rss_right_after_load_vs_workerd".to_owned(),
            rss_vs_workerd,
        );
    }
    let goals = report::all_goals(&document);
    document["goals"] = goals;

    write_json(options, &document)?;
    println!("{}", report::markdown(&document, &servers));
    println!("{}", report::events_table(&document));
    println!("{}", report::files_table(&document));
    println!("{}", report::growth_table(&document));
    Ok(())
}
