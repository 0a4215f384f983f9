//! The event core: how long a KV write takes to start the script its trigger names, how
//! many events PiCloud dispatches per second against the same database's raw speed at the
//! queue pattern underneath (insert, claim with `SKIP LOCKED`, delete), and how many KV
//! writes per second make it all the way to their triggered run.
//!
//! Trigger runs are found in `execution_logs` through picloud's own PostgreSQL. The
//! harness polls that table to know when a phase's runs are all there, and takes the
//! phase's end from the runs themselves (the last one's start plus its duration), so the
//! polling interval does not blur the figures; picloud itself is not polled for anything.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use picloud_manager_core::OutboxSignal;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;

use crate::http::{Call, Connection};
use crate::load::{Latency, round2};
use crate::picloud;

/// The default app every admin call of the harness works in.
pub(crate) const DEFAULT_APP: &str = "00000000-0000-0000-0000-000000000001";

/// The collection the trigger watches.
const COLLECTION: &str = "bench-events";

/// How often the harness counts the trigger runs recorded so far.
pub(crate) const COUNT_POLL: Duration = Duration::from_millis(50);

/// Longest the harness waits for the runs of one phase to be recorded.
pub(crate) const RUNS_TIMEOUT: Duration = Duration::from_secs(300);

/// Rows the raw baseline claims per `UPDATE`.
const CLAIM_BATCH: i64 = 100;

/// Rounds of the dispatch phase and the raw baseline, alternated.
const ROUNDS: usize = 3;

/// KV writes per call of the writing script.
const KEYS_PER_CALL: usize = 10;

/// The outbox row the emitter writes for a KV event, as the dispatch phase and the raw
/// baseline both insert it (the baseline into a copy of the table).
const INSERT_EVENT: &str = "(id, app_id, trigger_id, script_id, event, depth) \
                            VALUES (gen_random_uuid(), $1::uuid, $2::uuid, $3::uuid, $4, 1)";

/// The trigger script: logs the key, so a run can be matched to its write.
const TRIGGER_SCRIPT: &str = "log::info(ctx.event.key); ()";

/// The writing script: sets `count` keys from `first` on, one KV write (one transaction,
/// one event) each.
const WRITER_SCRIPT: &str = r#"let c = kv::collection("bench-events");
let first = parse_int(ctx.request.query.first);
let count = parse_int(ctx.request.query.count);
for i in first..first + count { c.set(`sc-${i}`, #{ n: i }); }
()"#;

/// How big the event measurements are.
#[derive(Debug, Clone, Copy)]
pub struct EventSpec {
    /// Events sent one at a time for the latency.
    pub latency_events: usize,
    /// Events of each throughput phase.
    pub throughput_events: usize,
    /// Connections sending them.
    pub connections: usize,
}

/// The trigger the phases fire.
pub(crate) struct Target {
    /// The trigger's id.
    pub(crate) trigger: String,
    /// The id of the script it runs.
    pub(crate) script: String,
}

/// picloud's zero-config database, reached over the cluster's unix socket.
pub(crate) async fn connect(cluster_dir: &Path) -> Result<PgPool> {
    let url = format!(
        "postgresql://picloud@localhost/picloud?host={}",
        cluster_dir.display()
    );
    // No ping before each statement: the raw baseline is the database's own speed, and
    // picloud's pool does not ping connections in steady use either.
    PgPoolOptions::new()
        .max_connections(20)
        .test_before_acquire(false)
        .connect(&url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Uploads the scripts, registers the KV trigger, then measures every figure.
pub async fn run(
    addr: SocketAddr,
    token: &str,
    cluster_dir: &Path,
    spec: EventSpec,
) -> Result<Value> {
    let pool = connect(cluster_dir).await?;
    let script = picloud::create_script(addr, token, "bench-event-trigger", TRIGGER_SCRIPT).await?;
    let writer = picloud::create_script(addr, token, "bench-event-writer", WRITER_SCRIPT).await?;
    let body = json!({
        "app_id": picloud_manager_core::DEFAULT_APP_ID,
        "script_name": "bench-event-trigger",
        "details": { "kind": "kv", "collection": COLLECTION, "ops": ["set"] },
    });
    let trigger = crate::http::json(
        addr,
        &Call::post_json("/api/admin/triggers", body.to_string()).bearer(token),
        hyper::StatusCode::CREATED,
    )
    .await
    .context("registering the KV trigger")?;
    let target = Target {
        trigger: trigger["id"]
            .as_str()
            .ok_or_else(|| anyhow!("the trigger answer has no id: {trigger}"))?
            .to_owned(),
        script,
    };

    eprintln!(
        "picloud-bench: event latency, {} events one at a time",
        spec.latency_events
    );
    let latency = start_latency(addr, token, &pool, &target.script, spec.latency_events).await?;
    // The database's speed drifts within a run (checkpoints, autovacuum, a noisy
    // neighbour): alternating the two phases and taking each one's median compares them
    // under the same conditions.
    let mut dispatched = Vec::new();
    let mut raw = Vec::new();
    for round in 1..=ROUNDS {
        eprintln!(
            "picloud-bench: dispatch throughput, {} outbox rows on {} connections ({round}/{ROUNDS})",
            spec.throughput_events, spec.connections
        );
        dispatched.push(dispatch_throughput(&pool, &target, spec).await?);
        eprintln!(
            "picloud-bench: raw queue baseline, {} rows ({round}/{ROUNDS})",
            spec.throughput_events
        );
        raw.push(raw_queue(&pool, &target, spec).await?);
    }
    let rounds = json!({
        "events_per_s": dispatched.iter().copied().map(round2).collect::<Vec<_>>(),
        "raw_rows_per_s": raw.iter().copied().map(round2).collect::<Vec<_>>(),
    });
    let (dispatched, raw) = (median(dispatched), median(raw));
    eprintln!(
        "picloud-bench: KV writes by scripts, {} events",
        spec.throughput_events
    );
    let by_scripts =
        kv_throughput(addr, &pool, &target.script, &Writes::Script(&writer), spec).await?;
    eprintln!(
        "picloud-bench: KV writes by the admin API, {} events",
        spec.throughput_events
    );
    let by_puts =
        kv_throughput(addr, &pool, &target.script, &Writes::AdminPut(token), spec).await?;
    pool.close().await;

    let vs_raw = |per_s: f64| {
        if raw > 0.0 { round2(per_s / raw) } else { 0.0 }
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
        "events_per_s": round2(dispatched),
        "raw_rows_per_s": round2(raw),
        "events_vs_raw": vs_raw(dispatched),
        "rounds": rounds,
        "kv_script_events_per_s": round2(by_scripts),
        "kv_script_vs_raw": vs_raw(by_scripts),
        "kv_put_events_per_s": round2(by_puts),
        "kv_put_vs_raw": vs_raw(by_puts),
    }))
}

fn kv_put(token: &str, key: &str, value: &Value) -> Call {
    Call::put_json(
        format!("/api/admin/apps/{DEFAULT_APP}/kv/{COLLECTION}/{key}"),
        value.to_string(),
    )
    .bearer(token)
}

/// Sends `call` and insists on a 2xx; the body.
pub(crate) async fn send_ok(connection: &mut Connection, call: &Call) -> Result<bytes::Bytes> {
    let (status, body) = connection.send(call).await?;
    if !status.is_success() {
        bail!(
            "{} {} answered {status}: {}",
            call.method,
            call.path,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body)
}

/// Trigger runs of `script` recorded so far that started at or after `since`, and when
/// the last of them ended (its start plus its duration).
async fn runs_since(
    pool: &PgPool,
    script: &str,
    since: DateTime<Utc>,
) -> Result<(i64, Option<DateTime<Utc>>)> {
    let runs = sqlx::query_as(
        "SELECT count(*), max(started_at + duration_ms * interval '1 millisecond')
         FROM execution_logs
         WHERE script_id = $1::uuid AND invocation_type = 'trigger' AND started_at >= $2",
    )
    .bind(script)
    .bind(since)
    .fetch_one(pool)
    .await?;
    Ok(runs)
}

/// Waits until `target` runs that started at or after `since` are recorded; when the last
/// of them ended.
pub(crate) async fn runs_done(
    pool: &PgPool,
    script: &str,
    since: DateTime<Utc>,
    target: usize,
) -> Result<DateTime<Utc>> {
    let target = i64::try_from(target)?;
    let deadline = Instant::now() + RUNS_TIMEOUT;
    loop {
        let (count, last_end) = runs_since(pool, script, since).await?;
        if count >= target {
            return last_end.ok_or_else(|| anyhow!("{count} runs but no end time"));
        }
        if Instant::now() >= deadline {
            bail!("{count} of {target} trigger runs recorded after {RUNS_TIMEOUT:?}");
        }
        tokio::time::sleep(COUNT_POLL).await;
    }
}

/// `count` events over `since` → `end`.
fn rate(count: usize, since: DateTime<Utc>, end: DateTime<Utc>) -> Result<f64> {
    let elapsed = (end - since)
        .to_std()
        .map_err(|_| anyhow!("the last run ended before the phase began"))?;
    Ok(per_second(count, elapsed))
}

/// KV write sent → trigger run started, per event, one event at a time.
async fn start_latency(
    addr: SocketAddr,
    token: &str,
    pool: &PgPool,
    script: &str,
    events: usize,
) -> Result<Latency> {
    let since = Utc::now();
    let mut connection = Connection::open(addr).await?;
    let mut sent: HashMap<String, DateTime<Utc>> = HashMap::new();
    for i in 0..events {
        // Fixed width: no key is a prefix of another, so a log line names one event.
        let key = format!("lat-{i:06}");
        let call = kv_put(token, &key, &json!({ "n": i }));
        let at = Utc::now();
        send_ok(&mut connection, &call).await?;
        sent.insert(key, at);
    }
    runs_done(pool, script, since, events).await?;

    let rows: Vec<(Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT logs, started_at FROM execution_logs
         WHERE script_id = $1::uuid AND invocation_type = 'trigger' AND started_at >= $2",
    )
    .bind(script)
    .bind(since)
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

/// The event of KV write `key`, as the emitter writes it.
fn kv_event(key: &str, n: usize) -> Value {
    json!({
        "kind": "kv",
        "app_id": DEFAULT_APP,
        "collection": COLLECTION,
        "key": key,
        "op": "set",
        "value": { "n": n },
        "depth": 1,
        "causation_id": null,
    })
}

/// Outbox rows per second that picloud dispatches: `connections` writers insert the rows
/// the emitter would write for as many KV events, one statement each, announcing them
/// with picloud's own [`OutboxSignal`] as another node would, while picloud claims, runs,
/// records and deletes them; from the first insert until the last run ends.
pub(crate) async fn dispatch_throughput(
    pool: &PgPool,
    target: &Target,
    spec: EventSpec,
) -> Result<f64> {
    // The writers are another node: they announce their rows with picloud's own signal.
    let announcer = OutboxSignal::spawn(pool.clone());
    let since = Utc::now();
    let writers = spawn_writers(pool, "outbox", target, spec, "dp", Some(announcer));
    for writer in writers {
        writer.await??;
    }
    let end = runs_done(pool, &target.script, since, spec.throughput_events).await?;
    rate(spec.throughput_events, since, end)
}

/// Starts `connections` writers that insert `throughput_events` event rows into `table`
/// between them, one statement each, keys named `<prefix>-<n>`; each announces its rows
/// through `announcer` when there is one.
fn spawn_writers(
    pool: &PgPool,
    table: &str,
    target: &Target,
    spec: EventSpec,
    prefix: &'static str,
    announcer: Option<OutboxSignal>,
) -> Vec<tokio::task::JoinHandle<Result<()>>> {
    let insert = format!("INSERT INTO {table} {INSERT_EVENT}");
    (0..spec.connections)
        .map(|lane| {
            let (pool, announcer, insert) = (pool.clone(), announcer.clone(), insert.clone());
            let (trigger, script) = (target.trigger.clone(), target.script.clone());
            let rows: Vec<usize> = (lane..spec.throughput_events)
                .step_by(spec.connections)
                .collect();
            tokio::spawn(async move {
                for i in rows {
                    sqlx::query(&insert)
                        .bind(DEFAULT_APP)
                        .bind(&trigger)
                        .bind(&script)
                        .bind(kv_event(&format!("{prefix}-{i:06}"), i))
                        .execute(&pool)
                        .await?;
                    if let Some(announcer) = &announcer {
                        announcer.rows_committed();
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect()
}

/// How the KV phases write.
enum Writes<'a> {
    /// `PUT /api/admin/apps/…/kv/…/{key}`, one authenticated request per event.
    AdminPut(&'a str),
    /// Calls of the writing script (this id), [`KEYS_PER_CALL`] events each.
    Script(&'a str),
}

/// KV writes per second that reach their triggered run: `connections` connections write
/// `throughput_events` keys through picloud; from the first request sent until the last
/// run ends.
async fn kv_throughput(
    addr: SocketAddr,
    pool: &PgPool,
    script: &str,
    writes: &Writes<'_>,
    spec: EventSpec,
) -> Result<f64> {
    let calls: Vec<Call> = match writes {
        Writes::AdminPut(token) => (0..spec.throughput_events)
            .map(|i| kv_put(token, &format!("tp-{i:06}"), &json!({ "n": i })))
            .collect(),
        Writes::Script(writer) => (0..spec.throughput_events.div_ceil(KEYS_PER_CALL))
            .map(|call| {
                let first = call * KEYS_PER_CALL;
                Call::get(format!(
                    "/api/execute/{writer}?first={first}&count={KEYS_PER_CALL}"
                ))
            })
            .collect(),
    };
    let events = match writes {
        Writes::AdminPut(_) => calls.len(),
        Writes::Script(_) => calls.len() * KEYS_PER_CALL,
    };
    let calls = Arc::new(calls);
    let mut connections = Vec::new();
    for _ in 0..spec.connections {
        connections.push(Connection::open(addr).await?);
    }
    let since = Utc::now();
    let mut senders = Vec::new();
    for (lane, mut connection) in connections.into_iter().enumerate() {
        let calls = Arc::clone(&calls);
        let lanes = spec.connections;
        senders.push(tokio::spawn(async move {
            for call in calls.iter().skip(lane).step_by(lanes) {
                send_ok(&mut connection, call).await?;
            }
            anyhow::Ok(())
        }));
    }
    for sender in senders {
        sender.await??;
    }
    let end = runs_done(pool, script, since, events).await?;
    rate(events, since, end)
}

/// The middle value (the mean of the middle two for an even count; 0 for none).
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[middle],
        _ => f64::midpoint(values[middle - 1], values[middle]),
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "event counts are far below 2^52"
)]
pub(crate) fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// The queue pattern in plain SQL on the same database: `connections` writers insert the
/// same rows as the dispatch phase, one statement each, into a copy of the outbox table
/// (its columns, defaults, checks, indexes and foreign keys), while one consumer claims
/// them in batches with `FOR UPDATE SKIP LOCKED` and deletes them; rows per second until
/// the last is deleted.
async fn raw_queue(pool: &PgPool, target: &Target, spec: EventSpec) -> Result<f64> {
    sqlx::query("DROP TABLE IF EXISTS bench_raw_queue")
        .execute(pool)
        .await?;
    // The same table as the outbox: `LIKE` copies its columns, defaults, checks and
    // indexes, and its foreign keys are added as the catalogue has them, so each insert
    // checks the same parent rows.
    let foreign_keys: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint
         WHERE conrelid = 'outbox'::regclass AND contype = 'f' ORDER BY conname",
    )
    .fetch_all(pool)
    .await?;
    let mut definition = vec!["LIKE outbox INCLUDING ALL".to_owned()];
    definition.extend(foreign_keys);
    sqlx::query(&format!(
        "CREATE TABLE bench_raw_queue ({})",
        definition.join(", ")
    ))
    .execute(pool)
    .await?;
    let total = spec.throughput_events;
    let started = Instant::now();
    let writers = spawn_writers(pool, "bench_raw_queue", target, spec, "raw", None);
    let consumer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut deleted = 0;
            let deadline = Instant::now() + RUNS_TIMEOUT;
            while deleted < total {
                let ids: Vec<sqlx::types::Uuid> = sqlx::query_scalar(
                    "UPDATE bench_raw_queue
                     SET claimed_until = now() + interval '1 minute', claimed_by = 'raw',
                         attempts = attempts + 1
                     WHERE id IN (SELECT id FROM bench_raw_queue
                                  WHERE due_at <= now() AND claimed_until IS NULL
                                  ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
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
