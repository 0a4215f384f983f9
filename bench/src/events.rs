//! The event core: how long a KV write takes to start the script its trigger names, how
//! many such events PiCloud dispatches per second, and the same database's raw speed at
//! the queue pattern underneath (insert, claim with `SKIP LOCKED`, delete) for scale.
//!
//! Trigger runs are found in `execution_logs` through picloud's own PostgreSQL. The
//! harness polls that table to know when the runs are there; picloud itself is not
//! polled for anything.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;

use crate::http::{Call, Connection};
use crate::load::{Latency, round2};
use crate::picloud;

/// The default app every admin call of the harness works in.
const DEFAULT_APP: &str = "00000000-0000-0000-0000-000000000001";

/// The collection the trigger watches.
const COLLECTION: &str = "bench-events";

/// How often the harness counts the trigger runs recorded so far.
const COUNT_POLL: Duration = Duration::from_millis(50);

/// Longest the harness waits for the runs of one phase to be recorded.
const RUNS_TIMEOUT: Duration = Duration::from_secs(300);

/// Rows the raw baseline claims per `UPDATE`.
const CLAIM_BATCH: i64 = 100;

/// How big the event measurements are.
#[derive(Debug, Clone, Copy)]
pub struct EventSpec {
    /// Events sent one at a time for the latency.
    pub latency_events: usize,
    /// Events sent as fast as possible for the throughput.
    pub throughput_events: usize,
    /// Connections sending them.
    pub connections: usize,
}

/// picloud's zero-config database, reached over the cluster's unix socket.
async fn connect(cluster_dir: &Path) -> Result<PgPool> {
    let url = format!(
        "postgresql://picloud@localhost/picloud?host={}",
        cluster_dir.display()
    );
    PgPoolOptions::new()
        .max_connections(20)
        .connect(&url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Uploads the trigger script, registers its KV trigger, then measures all three figures.
pub async fn run(
    addr: SocketAddr,
    token: &str,
    cluster_dir: &Path,
    spec: EventSpec,
) -> Result<Value> {
    let pool = connect(cluster_dir).await?;
    let script = picloud::create_script(
        addr,
        token,
        "bench-event-trigger",
        "log::info(ctx.event.key); ()",
    )
    .await?;
    let body = json!({ "script": "bench-event-trigger", "collection": COLLECTION, "ops": ["set"] });
    crate::http::json(
        addr,
        &Call::post_json("/api/admin/triggers/kv", body.to_string()).bearer(token),
        hyper::StatusCode::CREATED,
    )
    .await
    .context("registering the KV trigger")?;

    eprintln!(
        "picloud-bench: event latency, {} events one at a time",
        spec.latency_events
    );
    let latency = start_latency(addr, token, &pool, &script, spec.latency_events).await?;
    eprintln!(
        "picloud-bench: event throughput, {} events on {} connections",
        spec.throughput_events, spec.connections
    );
    let events_per_s = throughput(addr, token, &pool, &script, spec).await?;
    eprintln!(
        "picloud-bench: raw queue baseline, {} rows",
        spec.throughput_events
    );
    let raw_rows_per_s = raw_queue(&pool, spec).await?;
    pool.close().await;

    let ratio = if raw_rows_per_s > 0.0 {
        events_per_s / raw_rows_per_s
    } else {
        0.0
    };
    let latency_ms = |us: f64| round2(us / 1e3);
    Ok(json!({
        "latency_events": spec.latency_events,
        "throughput_events": spec.throughput_events,
        "connections": spec.connections,
        "start_latency_ms": {
            "p50": latency_ms(latency.p50_us),
            "p90": latency_ms(latency.p90_us),
            "p99": latency_ms(latency.p99_us),
            "max": latency_ms(latency.max_us),
            "mean": latency_ms(latency.mean_us),
        },
        "events_per_s": round2(events_per_s),
        "raw_rows_per_s": round2(raw_rows_per_s),
        "events_vs_raw": round2(ratio),
    }))
}

fn kv_put(token: &str, key: &str, value: &Value) -> Call {
    Call::put_json(
        format!("/api/admin/apps/{DEFAULT_APP}/kv/{COLLECTION}/{key}"),
        value.to_string(),
    )
    .bearer(token)
}

async fn put(connection: &mut Connection, call: &Call) -> Result<()> {
    let (status, body) = connection.send(call).await?;
    if !status.is_success() {
        bail!(
            "PUT {} answered {status}: {}",
            call.path,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// Trigger runs of `script` recorded so far.
async fn trigger_runs(pool: &PgPool, script: &str) -> Result<i64> {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM execution_logs
         WHERE script_id = $1::uuid AND invocation_type = 'trigger'",
    )
    .bind(script)
    .fetch_one(pool)
    .await?;
    Ok(count)
}

/// Polls the count until it reaches `target`; the instant it was first seen there.
async fn wait_for_runs(pool: &PgPool, script: &str, target: i64) -> Result<Instant> {
    let deadline = Instant::now() + RUNS_TIMEOUT;
    loop {
        let count = trigger_runs(pool, script).await?;
        if count >= target {
            return Ok(Instant::now());
        }
        if Instant::now() >= deadline {
            bail!("{count} of {target} trigger runs recorded after {RUNS_TIMEOUT:?}");
        }
        tokio::time::sleep(COUNT_POLL).await;
    }
}

/// KV write sent → trigger run started, per event, one event at a time.
async fn start_latency(
    addr: SocketAddr,
    token: &str,
    pool: &PgPool,
    script: &str,
    events: usize,
) -> Result<Latency> {
    let before = trigger_runs(pool, script).await?;
    let mut connection = Connection::open(addr).await?;
    let mut sent: HashMap<String, DateTime<Utc>> = HashMap::new();
    for i in 0..events {
        // Fixed width: no key is a prefix of another, so a log line names one event.
        let key = format!("lat-{i:06}");
        let call = kv_put(token, &key, &json!({ "n": i }));
        let at = Utc::now();
        put(&mut connection, &call).await?;
        sent.insert(key, at);
    }
    let total = i64::try_from(events)?;
    wait_for_runs(pool, script, before + total).await?;

    let rows: Vec<(Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT logs, started_at FROM execution_logs
         WHERE script_id = $1::uuid AND invocation_type = 'trigger'",
    )
    .bind(script)
    .fetch_all(pool)
    .await?;
    let mut nanos = Vec::new();
    for (logs, started_at) in rows {
        let Some(key) = logs.as_array().into_iter().flatten().find_map(|entry| {
            entry["message"]
                .as_str()
                .filter(|message| sent.contains_key(*message))
        }) else {
            continue;
        };
        let at = sent[key];
        let elapsed = (started_at - at)
            .to_std()
            .map_err(|_| anyhow!("the run of {key} started before its write was sent"))?;
        nanos.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }
    if nanos.len() != events {
        bail!(
            "found the runs of {} of {events} events by their logged key",
            nanos.len()
        );
    }
    Ok(Latency::from_nanos(nanos))
}

/// Events per second: from the first write sent until every run is recorded.
async fn throughput(
    addr: SocketAddr,
    token: &str,
    pool: &PgPool,
    script: &str,
    spec: EventSpec,
) -> Result<f64> {
    let before = trigger_runs(pool, script).await?;
    let mut connections = Vec::new();
    for _ in 0..spec.connections {
        connections.push(Connection::open(addr).await?);
    }
    let started = Instant::now();
    let mut senders = Vec::new();
    for (lane, mut connection) in connections.into_iter().enumerate() {
        let token = token.to_owned();
        let keys: Vec<usize> = (lane..spec.throughput_events)
            .step_by(spec.connections)
            .collect();
        senders.push(tokio::spawn(async move {
            for i in keys {
                let call = kv_put(&token, &format!("tp-{i:06}"), &json!({ "n": i }));
                put(&mut connection, &call).await?;
            }
            anyhow::Ok(())
        }));
    }
    for sender in senders {
        sender.await??;
    }
    let done = wait_for_runs(
        pool,
        script,
        before + i64::try_from(spec.throughput_events)?,
    )
    .await?;
    Ok(per_second(spec.throughput_events, done - started))
}

#[expect(
    clippy::cast_precision_loss,
    reason = "event counts are far below 2^52"
)]
fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// The queue pattern in plain SQL on the same database: `connections` writers insert the
/// rows one statement each while one consumer claims them in batches with
/// `FOR UPDATE SKIP LOCKED` and deletes them; rows per second until the last is deleted.
async fn raw_queue(pool: &PgPool, spec: EventSpec) -> Result<f64> {
    sqlx::query("DROP TABLE IF EXISTS bench_raw_queue")
        .execute(pool)
        .await?;
    sqlx::query(
        "CREATE TABLE bench_raw_queue (
             id bigserial PRIMARY KEY,
             payload jsonb NOT NULL,
             claimed_at timestamptz
         )",
    )
    .execute(pool)
    .await?;

    let total = spec.throughput_events;
    let started = Instant::now();
    let mut writers = Vec::new();
    for lane in 0..spec.connections {
        let pool = pool.clone();
        let rows: Vec<usize> = (lane..total).step_by(spec.connections).collect();
        writers.push(tokio::spawn(async move {
            for i in rows {
                sqlx::query("INSERT INTO bench_raw_queue (payload) VALUES ($1)")
                    .bind(json!({ "n": i }))
                    .execute(&pool)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    let consumer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut deleted = 0;
            let deadline = Instant::now() + RUNS_TIMEOUT;
            while deleted < total {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "UPDATE bench_raw_queue SET claimed_at = now()
                     WHERE id IN (SELECT id FROM bench_raw_queue WHERE claimed_at IS NULL
                                  ORDER BY id FOR UPDATE SKIP LOCKED LIMIT $1)
                     RETURNING id",
                )
                .bind(CLAIM_BATCH)
                .fetch_all(&pool)
                .await?;
                if ids.is_empty() {
                    if Instant::now() >= deadline {
                        bail!("the raw queue drained {deleted} of {total} rows");
                    }
                    // The writers are behind; a consumer without rows yields to them.
                    tokio::task::yield_now().await;
                    continue;
                }
                let removed = sqlx::query("DELETE FROM bench_raw_queue WHERE id = ANY($1)")
                    .bind(&ids)
                    .execute(&pool)
                    .await?
                    .rows_affected();
                deleted += usize::try_from(removed)?;
            }
            anyhow::Ok(Instant::now())
        })
    };
    for writer in writers {
        writer.await??;
    }
    let done = consumer.await??;
    sqlx::query("DROP TABLE bench_raw_queue")
        .execute(pool)
        .await?;
    Ok(per_second(total, done - started))
}
