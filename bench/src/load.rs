//! The load generator: `connections` keep-alive HTTP/1.1 connections, each its own task
//! sending one request after another (closed loop) for a fixed time after a warm-up.
//!
//! Every latency is kept (nanoseconds, a few MiB for a run) and the percentiles are exact.
//! Closed loop means a slow answer delays that connection's next request, so latencies
//! under overload understate what an open-loop client (fixed arrival rate) would see; the
//! comparison between targets is like for like.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use hyper::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::http::{Call, Connection};
use crate::procfs;

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The server.
    pub addr: SocketAddr,
    /// What every request is.
    pub call: Call,
    /// The status a successful answer has.
    pub expect: StatusCode,
    /// Concurrent connections.
    pub connections: usize,
    /// Time before measuring starts (connections opened, caches and pools warm).
    pub warmup: Duration,
    /// Time measured.
    pub duration: Duration,
    /// The server's processes, whose CPU time is sampled over the measured window.
    pub server: Vec<u32>,
    /// The database's cluster directory (PostgreSQL, for PiCloud): its processes are
    /// listed at both ends of the window and sampled the same way.
    pub database: Option<PathBuf>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Slowest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    /// Exact percentiles of latencies given in nanoseconds.
    pub fn from_nanos(mut samples: Vec<u64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |quantile: f64| {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "a rank within a vector that fits in memory"
            )]
            let rank = ((quantile * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            micros(samples[rank - 1])
        };
        #[expect(
            clippy::cast_precision_loss,
            reason = "sums of nanoseconds of one run are far below 2^52"
        )]
        let mean = samples.iter().sum::<u64>() as f64 / samples.len() as f64 / 1_000.0;
        Self {
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            max_us: at(1.0),
            mean_us: mean,
        }
    }

    /// As JSON.
    pub fn to_json(self) -> Value {
        json!({
            "p50_us": round2(self.p50_us),
            "p90_us": round2(self.p90_us),
            "p99_us": round2(self.p99_us),
            "max_us": round2(self.max_us),
            "mean_us": round2(self.mean_us),
        })
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "nanosecond latencies are far below 2^52"
)]
fn micros(nanos: u64) -> f64 {
    nanos as f64 / 1_000.0
}

/// Rounds to two decimals for the report.
pub fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Concurrent connections.
    pub connections: usize,
    /// Successful requests completed in the measured window.
    pub requests: u64,
    /// Failed requests (wrong status or connection errors) in the window.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Successful requests per second.
    pub rps: f64,
    /// Latency of successful requests.
    pub latency: Latency,
    /// CPU seconds the server used in the window.
    pub server_cpu_s: f64,
    /// CPU seconds the database used in the window.
    pub database_cpu_s: f64,
}

impl LoadResult {
    /// Server CPU time per successful request, in microseconds.
    pub fn cpu_us_per_request(&self) -> f64 {
        self.per_request(self.server_cpu_s)
    }

    /// Server and database CPU time per successful request, in microseconds.
    pub fn total_cpu_us_per_request(&self) -> f64 {
        self.per_request(self.server_cpu_s + self.database_cpu_s)
    }

    /// Database CPU time per successful request, in microseconds.
    pub fn database_cpu_us_per_request(&self) -> f64 {
        self.per_request(self.database_cpu_s)
    }

    fn per_request(&self, cpu_s: f64) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        #[expect(
            clippy::cast_precision_loss,
            reason = "request counts of one run are far below 2^52"
        )]
        let per_request = cpu_s * 1e6 / self.requests as f64;
        per_request
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "connections": self.connections,
            "requests": self.requests,
            "errors": self.errors,
            "first_error": self.first_error,
            "rps": round2(self.rps),
            "latency": self.latency.to_json(),
            "server_cpu_s": round2(self.server_cpu_s),
            "server_cpu_us_per_request": round2(self.cpu_us_per_request()),
            "database_cpu_s": round2(self.database_cpu_s),
            "database_cpu_us_per_request": round2(self.database_cpu_us_per_request()),
        })
    }
}

#[derive(Debug, Default)]
struct ConnectionStats {
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs the load and measures it.
pub async fn run(spec: &LoadSpec) -> Result<LoadResult> {
    let started = Instant::now();
    let measure_from = started + spec.warmup;
    let until = measure_from + spec.duration;
    let tasks: Vec<_> = (0..spec.connections)
        .map(|_| {
            let call = spec.call.clone();
            tokio::spawn(drive(spec.addr, call, spec.expect, measure_from, until))
        })
        .collect();

    tokio::time::sleep_until(measure_from).await;
    let cpu_before = procfs::group_cpu_seconds(&spec.server);
    let database_before = database_snapshot(spec.database.as_deref());
    tokio::time::sleep_until(until).await;
    let cpu_after = procfs::group_cpu_seconds(&spec.server);
    let database_after = database_snapshot(spec.database.as_deref());

    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let stats = task.await?;
        latencies.extend(stats.latencies);
        errors += stats.errors;
        first_error = first_error.or(stats.first_error);
    }
    let requests = latencies.len() as u64;
    #[expect(
        clippy::cast_precision_loss,
        reason = "request counts of one run are far below 2^52"
    )]
    let rps = requests as f64 / spec.duration.as_secs_f64();
    Ok(LoadResult {
        connections: spec.connections,
        requests,
        errors,
        first_error,
        rps,
        latency: Latency::from_nanos(latencies),
        server_cpu_s: (cpu_after - cpu_before).max(0.0),
        database_cpu_s: database_before.used_until(&database_after),
    })
}

/// The CPU time of every process of the cluster, or of nothing.
pub fn database_snapshot(cluster_dir: Option<&std::path::Path>) -> procfs::CpuSnapshot {
    let pids = cluster_dir
        .and_then(|dir| procfs::postgres_processes(dir).ok())
        .unwrap_or_default();
    procfs::CpuSnapshot::take(&pids)
}

/// One connection's loop. Requests that start inside the window and finish by its end are
/// counted; a failed connection is reopened after a short pause so a dead server does not
/// turn the loop into a busy one.
async fn drive(
    addr: SocketAddr,
    call: Call,
    expect: StatusCode,
    measure_from: Instant,
    until: Instant,
) -> ConnectionStats {
    let mut stats = ConnectionStats::default();
    let mut connection: Option<Connection> = None;
    let fail = |stats: &mut ConnectionStats, counted: bool, message: String| {
        if counted {
            stats.errors += 1;
        }
        stats.first_error.get_or_insert(message);
    };
    loop {
        let start = Instant::now();
        if start >= until {
            return stats;
        }
        let counted = start >= measure_from;
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => match Connection::open(addr).await {
                Ok(conn) => connection.insert(conn),
                Err(err) => {
                    fail(&mut stats, counted, format!("{err:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        match conn.send(&call).await {
            Ok((status, _)) if status == expect => {
                let end = Instant::now();
                if counted && end <= until {
                    let nanos = u64::try_from((end - start).as_nanos()).unwrap_or(u64::MAX);
                    stats.latencies.push(nanos);
                }
            }
            Ok((status, body)) => fail(
                &mut stats,
                counted,
                format!("status {status}: {}", String::from_utf8_lossy(&body)),
            ),
            Err(err) => {
                fail(&mut stats, counted, format!("{err:#}"));
                connection = None;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_exact_ranks() {
        let samples: Vec<u64> = (1..=100).map(|i| i * 1_000).collect();
        let latency = Latency::from_nanos(samples);
        assert_eq!(latency.p50_us, 50.0);
        assert_eq!(latency.p90_us, 90.0);
        assert_eq!(latency.p99_us, 99.0);
        assert_eq!(latency.max_us, 100.0);
        assert_eq!(latency.mean_us, 50.5);
        assert_eq!(Latency::from_nanos(Vec::new()), Latency::default());
    }
}
