//! Cost as the work grows: the same operation measured at a small, a middling and a large
//! amount of stored work, so a cost that follows the size of a table (a scan, a list read
//! in full, a missing index) shows up as a ratio between the largest size and the
//! smallest. Four operations, each in a table of its own:
//!
//! 1. a KV write through the admin API and its fan-out, with more and more kv triggers in
//!    the app that never match it (one does);
//! 2. claiming and dispatching outbox rows, with more and more rows waiting in the outbox,
//!    due later;
//! 3. the first call of a newly uploaded script, and the calls after it, with more and more
//!    scripts stored;
//! 4. the first page of a script's execution records, with more and more records.
//!
//! The stored work is written straight into picloud's own PostgreSQL with
//! `INSERT … SELECT … FROM generate_series` (rows shaped as picloud writes them), so a
//! million rows take seconds; what is measured always goes through picloud.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hyper::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::time::Instant;

use crate::Options;
use crate::events::{
    self, COUNT_POLL, DEFAULT_APP, EventSpec, RUNS_TIMEOUT, Target, median, per_second, send_ok,
};
use crate::http::{Call, Connection};
use crate::load::{Latency, round2};
use crate::picloud;

/// The collection the KV writes go to; one trigger watches it.
const KV_COLLECTION: &str = "bench-growth";

/// The script the matching KV trigger runs.
const KV_SCRIPT: &str = "growth-kv-trigger";

/// The collection of the trigger the dispatch rows belong to (never written).
const DISPATCH_COLLECTION: &str = "bench-growth-dispatch";

/// The script the dispatch rows run.
const DISPATCH_SCRIPT: &str = "growth-dispatch";

/// The script whose execution records are listed.
const LIST_SCRIPT: &str = "growth-list";

/// Records on the page asked for: every size fills it (but the smoke run's smallest), so
/// every page holds the same newest records.
const LIST_PAGE: usize = 10;

/// Unmeasured requests before each measured series.
const WARMUP: usize = 10;

/// Rounds of the dispatch measurement per size; the figure is their median.
const DISPATCH_ROUNDS: usize = 3;

/// Waiting outbox rows written per statement.
const WAITING_CHUNK: usize = 100_000;

/// Ids of the waiting rows: UUIDv7-shaped and in order, as the emitter's are, with a fixed
/// timestamp in 1970 that no row picloud writes can have; the row's number is the last 12
/// hex digits. Also how the rows are found again to be deleted.
const WAITING_ID_PREFIX: &str = "00000000-6700-7000-8000-";

/// Rows `$4..=$5` of the outbox rows waiting for trigger `$2` (script `$3`) in app `$1`,
/// their ids after the prefix `$6`: a KV event's row as the emitter writes it, due 30 days
/// (and `n` milliseconds) from now.
const INSERT_WAITING: &str = "
INSERT INTO outbox (id, app_id, trigger_id, script_id, event, depth, due_at)
SELECT ($6 || lpad(to_hex(n), 12, '0'))::uuid, $1::uuid, $2::uuid, $3::uuid,
       jsonb_build_object('kind', 'kv', 'app_id', $1::text,
                          'collection', 'bench-growth-waiting',
                          'key', 'wait-' || lpad(n::text, 7, '0'), 'op', 'set',
                          'value', jsonb_build_object('n', n), 'depth', 1,
                          'causation_id', NULL),
       1, now() + interval '30 days' + n * interval '1 millisecond'
FROM generate_series($4::int8, $5::int8) n";

/// Copies of trigger `$1` numbered `$2..=$3`, each watching a collection of its own that
/// no write touches (`growth-idle-<n>`): the parent rows and their kv details in one
/// statement.
const INSERT_IDLE_TRIGGERS: &str = "
WITH source AS (
    SELECT t.app_id, t.kind, t.script_id, t.enabled, t.registered_by_principal,
           t.max_attempts, t.backoff_base_ms, t.backoff_max_ms, d.ops
    FROM triggers t JOIN kv_trigger_details d ON d.trigger_id = t.id
    WHERE t.id = $1::uuid
),
fresh AS (
    SELECT gen_random_uuid() AS id, n FROM generate_series($2::int8, $3::int8) n
),
parents AS (
    INSERT INTO triggers (id, app_id, kind, script_id, enabled, registered_by_principal,
                          max_attempts, backoff_base_ms, backoff_max_ms)
    SELECT f.id, s.app_id, s.kind, s.script_id, s.enabled, s.registered_by_principal,
           s.max_attempts, s.backoff_base_ms, s.backoff_max_ms
    FROM fresh f CROSS JOIN source s
    RETURNING id
)
INSERT INTO kv_trigger_details (trigger_id, collection_glob, ops)
SELECT f.id, 'growth-idle-' || f.n, s.ops
FROM fresh f CROSS JOIN source s
WHERE f.id IN (SELECT id FROM parents)";

/// Scripts numbered from one past the scripts stored up to `$2`, in app `$1`, each a
/// string literal; names no other script of the harness has.
const INSERT_SCRIPTS: &str = "
INSERT INTO scripts (id, app_id, name, source)
SELECT gen_random_uuid(), $1::uuid, 'growth-fill-' || lpad(n::text, 6, '0'), '\"fill ' || n || '\"'
FROM generate_series((SELECT count(*) FROM scripts) + 1, $2::int8) n
ON CONFLICT DO NOTHING";

/// Execution records `$3..=$4` of script `$1` in app `$2`, as the recorder writes a
/// successful HTTP run with one log line; record `n` started `n` × 10 ms ago, so the
/// first records stay the newest.
const INSERT_RUNS: &str = "
INSERT INTO execution_logs (id, script_id, app_id, script_version, invocation_type,
                            request_id, status, http_status, duration_ms, logs, error,
                            started_at)
SELECT gen_random_uuid(), $1::uuid, $2::uuid, 1, 'http', gen_random_uuid()::text,
       'success', 200, 1,
       jsonb_build_array(jsonb_build_object(
           'level', 'info', 'message', 'run ' || n,
           'at', now() - n * interval '10 milliseconds')),
       NULL, now() - n * interval '10 milliseconds'
FROM generate_series($3::int8, $4::int8) n";

/// The sizes of each measurement, smallest first, and how much is measured at each.
#[derive(Debug, Clone)]
pub struct GrowthSpec {
    /// kv triggers in the app, the one that matches included.
    pub trigger_counts: Vec<usize>,
    /// KV writes measured at each trigger count.
    pub kv_writes: usize,
    /// Outbox rows waiting, due later.
    pub waiting_rows: Vec<usize>,
    /// Outbox rows each dispatch round inserts and times.
    pub dispatch_events: usize,
    /// Connections inserting them.
    pub connections: usize,
    /// Scripts stored in all.
    pub script_counts: Vec<usize>,
    /// Scripts uploaded and called at each size.
    pub uploads: usize,
    /// Calls after each upload's first.
    pub steady_calls: usize,
    /// Execution records of the listed script.
    pub list_rows: Vec<usize>,
    /// First-page requests timed at each size.
    pub list_requests: usize,
}

/// The sizes for `options`: tiny ones for `--smoke`, which only checks the step works.
pub fn spec(options: &Options) -> GrowthSpec {
    if options.smoke {
        GrowthSpec {
            trigger_counts: vec![1, 3],
            kv_writes: 5,
            waiting_rows: vec![0, 100],
            dispatch_events: 20,
            connections: 4,
            script_counts: vec![1, 5],
            uploads: options.upload_rounds,
            steady_calls: options.steady_calls,
            list_rows: vec![1, 20],
            list_requests: 5,
        }
    } else {
        GrowthSpec {
            trigger_counts: vec![1, 100, 10_000],
            kv_writes: 200,
            waiting_rows: vec![0, 100_000, 1_000_000],
            dispatch_events: 1_000,
            connections: options.event_connections,
            script_counts: vec![10, 1_000, 10_000],
            uploads: options.upload_rounds,
            steady_calls: options.steady_calls,
            list_rows: vec![10, 10_000, 100_000],
            list_requests: 50,
        }
    }
}

/// Every measurement of the step, in this order: scripts, execution records, triggers, the
/// outbox (last: it writes the most, and deletes it again).
pub async fn run(
    addr: SocketAddr,
    token: &str,
    cluster_dir: &Path,
    spec: &GrowthSpec,
) -> Result<Value> {
    let pool = events::connect(cluster_dir).await?;
    let first_call = first_call_growth(addr, token, &pool, spec).await?;
    let list_page = list_growth(addr, token, &pool, spec).await?;
    let kv_fan_out = kv_growth(addr, token, &pool, spec).await?;
    let dispatch = dispatch_growth(addr, token, &pool, spec).await?;
    pool.close().await;
    Ok(json!({
        "kv_fan_out": kv_fan_out,
        "dispatch": dispatch,
        "first_call": first_call,
        "list_page": list_page,
    }))
}

/// `numerator / denominator`, or `null` without a denominator.
fn ratio(numerator: f64, denominator: f64) -> Value {
    if denominator > 0.0 {
        json!(round2(numerator / denominator))
    } else {
        Value::Null
    }
}

/// The cost at the largest size over the cost at the smallest, from figures in size order:
/// `latencies` are costs themselves.
fn latency_growth(latencies: &[f64]) -> Value {
    match (latencies.first(), latencies.last()) {
        (Some(smallest), Some(largest)) => ratio(*largest, *smallest),
        _ => Value::Null,
    }
}

/// The same for rates, whose cost is their inverse: the smallest size's rate over the
/// largest's.
fn rate_growth(rates: &[f64]) -> Value {
    match (rates.first(), rates.last()) {
        (Some(smallest), Some(largest)) => ratio(*smallest, *largest),
        _ => Value::Null,
    }
}

fn nanos_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn to_i64(n: usize) -> Result<i64> {
    i64::try_from(n).context("a size too large for the database")
}

/// Registers a kv trigger for `set` in `collection` running the script named `script`;
/// its id.
async fn register_trigger(
    addr: SocketAddr,
    token: &str,
    script: &str,
    collection: &str,
) -> Result<String> {
    let body = json!({
        "app_id": picloud_manager_core::DEFAULT_APP_ID,
        "script_name": script,
        "details": { "kind": "kv", "collection": collection, "ops": ["set"] },
    });
    let trigger = crate::http::json(
        addr,
        &Call::post_json("/api/admin/triggers", body.to_string()).bearer(token),
        StatusCode::CREATED,
    )
    .await
    .with_context(|| format!("registering a kv trigger on {collection}"))?;
    trigger["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the trigger answer has no id: {trigger}"))
}

/// Waits until trigger `trigger` has no outbox rows left: its runs are done.
async fn drained(pool: &PgPool, trigger: &str) -> Result<()> {
    let deadline = Instant::now() + RUNS_TIMEOUT;
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE trigger_id = $1::uuid")
                .bind(trigger)
                .fetch_one(pool)
                .await?;
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{left} outbox rows of trigger {trigger} still there after {RUNS_TIMEOUT:?}");
        }
        tokio::time::sleep(COUNT_POLL).await;
    }
}

/// 1. KV write + fan-out: one kv trigger matches the writes; the others, added in SQL as
///    copies of it, watch collections nobody writes. At each size, [`WARMUP`] writes, then
///    `kv_writes` timed `PUT`s one at a time on one connection; then the matching
///    trigger's runs are waited out, so the next size starts with an idle dispatcher.
async fn kv_growth(
    addr: SocketAddr,
    token: &str,
    pool: &PgPool,
    spec: &GrowthSpec,
) -> Result<Value> {
    picloud::create_script(addr, token, KV_SCRIPT, "()").await?;
    let trigger = register_trigger(addr, token, KV_SCRIPT, KV_COLLECTION).await?;
    let mut connection = Connection::open(addr).await?;
    let mut idle = 0;
    let mut sizes = Vec::new();
    let (mut p50s, mut rates) = (Vec::new(), Vec::new());
    for &count in &spec.trigger_counts {
        let wanted = count.saturating_sub(1);
        if wanted > idle {
            sqlx::query(INSERT_IDLE_TRIGGERS)
                .bind(&trigger)
                .bind(to_i64(idle + 1)?)
                .bind(to_i64(wanted)?)
                .execute(pool)
                .await
                .context("adding idle kv triggers")?;
            settle(pool, "triggers, kv_trigger_details").await?;
            idle = wanted;
        }
        let enabled: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM triggers WHERE app_id = $1::uuid AND kind = 'kv' AND enabled",
        )
        .bind(DEFAULT_APP)
        .fetch_one(pool)
        .await?;
        eprintln!(
            "picloud-bench: growth, KV writes with {enabled} kv triggers in the app ({} writes)",
            spec.kv_writes
        );
        let put = |i: usize| {
            Call::put_json(
                format!("/api/admin/apps/{DEFAULT_APP}/kv/{KV_COLLECTION}/g{count}-{i:06}"),
                json!({ "n": i }).to_string(),
            )
            .bearer(token)
        };
        for i in 0..WARMUP {
            send_ok(&mut connection, &put(spec.kv_writes + i)).await?;
        }
        let calls: Vec<Call> = (0..spec.kv_writes).map(put).collect();
        let mut nanos = Vec::with_capacity(calls.len());
        let started = Instant::now();
        for call in &calls {
            let sent = Instant::now();
            send_ok(&mut connection, call).await?;
            nanos.push(nanos_since(sent));
        }
        let writes_per_s = per_second(calls.len(), started.elapsed());
        drained(pool, &trigger).await?;
        let latency = Latency::from_nanos(nanos);
        p50s.push(latency.p50_us);
        rates.push(writes_per_s);
        sizes.push(json!({
            "triggers": count,
            "enabled_kv_triggers": enabled,
            "latency": latency.to_json(),
            "writes_per_s": round2(writes_per_s),
        }));
    }
    // What follows needs no idle triggers: one statement takes them all away again.
    sqlx::query(
        "DELETE FROM triggers WHERE id IN (
             SELECT trigger_id FROM kv_trigger_details WHERE collection_glob LIKE 'growth-idle-%')",
    )
    .execute(pool)
    .await?;
    Ok(json!({
        "collection": KV_COLLECTION,
        "writes_per_size": spec.kv_writes,
        "sizes": sizes,
        "largest_vs_smallest": latency_growth(&p50s),
        "writes_per_s_smallest_vs_largest": rate_growth(&rates),
    }))
}

/// 2. Claim and dispatch: rows waiting in the outbox for a trigger of their own, due in 30
///    days, written in SQL and then vacuumed and analysed (what autovacuum does soon after
///    such an insert, done at once so the figure does not depend on whether it has run
///    yet). At each size, [`DISPATCH_ROUNDS`] rounds of the event core's dispatch phase:
///    `connections` connections insert `dispatch_events` due rows and announce them with
///    picloud's own `OutboxSignal`, and the round's events/s run from the first insert to
///    the end of the last run. The waiting rows are deleted at the end.
async fn dispatch_growth(
    addr: SocketAddr,
    token: &str,
    pool: &PgPool,
    spec: &GrowthSpec,
) -> Result<Value> {
    let script = picloud::create_script(addr, token, DISPATCH_SCRIPT, "()").await?;
    let trigger = register_trigger(addr, token, DISPATCH_SCRIPT, DISPATCH_COLLECTION).await?;
    // Each round is the event core's dispatch phase, at this step's size.
    let dispatch = EventSpec {
        latency_events: 0,
        throughput_events: spec.dispatch_events,
        connections: spec.connections.max(1),
    };
    let target = Target { trigger, script };
    let mut waiting = 0;
    let mut sizes = Vec::new();
    let mut rates = Vec::new();
    for &rows in &spec.waiting_rows {
        let mut fill = Duration::ZERO;
        if rows > waiting {
            eprintln!(
                "picloud-bench: growth, writing {} outbox rows due later ({rows} in all)",
                rows - waiting
            );
            let started = Instant::now();
            let mut from = waiting + 1;
            while from <= rows {
                let to = (from + WAITING_CHUNK - 1).min(rows);
                sqlx::query(INSERT_WAITING)
                    .bind(DEFAULT_APP)
                    .bind(&target.trigger)
                    .bind(&target.script)
                    .bind(to_i64(from)?)
                    .bind(to_i64(to)?)
                    .bind(WAITING_ID_PREFIX)
                    .execute(pool)
                    .await
                    .context("writing waiting outbox rows")?;
                from = to + 1;
            }
            settle(pool, "outbox").await?;
            fill = started.elapsed();
            waiting = rows;
        }
        let mut rounds = Vec::new();
        for round in 1..=DISPATCH_ROUNDS {
            eprintln!(
                "picloud-bench: growth, dispatch with {rows} rows waiting, {} rows on {} \
                 connections ({round}/{DISPATCH_ROUNDS})",
                spec.dispatch_events, spec.connections
            );
            rounds.push(events::dispatch_throughput(pool, &target, dispatch).await?);
        }
        let events_per_s = median(rounds.clone());
        rates.push(events_per_s);
        sizes.push(json!({
            "waiting_rows": rows,
            "events_per_s": round2(events_per_s),
            "rounds_events_per_s": rounds.into_iter().map(round2).collect::<Vec<_>>(),
            "fill_s": round2(fill.as_secs_f64()),
        }));
    }
    // Delete the waiting rows again, found by their ids (the primary key's index).
    sqlx::query("DELETE FROM outbox WHERE id BETWEEN $1::uuid AND $2::uuid")
        .bind(format!("{WAITING_ID_PREFIX}000000000000"))
        .bind(format!("{WAITING_ID_PREFIX}ffffffffffff"))
        .execute(pool)
        .await
        .context("deleting the waiting outbox rows")?;
    Ok(json!({
        "events_per_size": spec.dispatch_events,
        "rounds": DISPATCH_ROUNDS,
        "connections": spec.connections,
        "sizes": sizes,
        "largest_vs_smallest": rate_growth(&rates),
    }))
}

/// `VACUUM (ANALYZE)` of `tables` (constants of this module) after a bulk insert: what
/// autovacuum does on its own within a minute of so many new rows. Done at once, so that
/// the measurement after it neither runs beside autovacuum's catching up (the first call
/// step lasts a fraction of a second) nor is planned on the statistics of before the
/// insert, which no real instance sees for long.
async fn settle(pool: &PgPool, tables: &str) -> Result<()> {
    sqlx::raw_sql(&format!("VACUUM (ANALYZE) {tables}"))
        .execute(pool)
        .await
        .with_context(|| format!("vacuuming {tables}"))?;
    Ok(())
}

/// 3. The first call of a newly uploaded script and the calls after it: scripts are added
///    in SQL until the table holds the size (those already stored count), then, as in the
///    run's "first call after upload", `uploads` times: a script uploaded through the admin
///    API (on a connection of its own, timed too), called once, then `steady_calls` more
///    times, one request at a time on one warm connection.
async fn first_call_growth(
    addr: SocketAddr,
    token: &str,
    pool: &PgPool,
    spec: &GrowthSpec,
) -> Result<Value> {
    let mut admin = Connection::open(addr).await?;
    let mut calls = Connection::open(addr).await?;
    let mut sizes = Vec::new();
    let (mut firsts, mut steadies) = (Vec::new(), Vec::new());
    for &count in &spec.script_counts {
        sqlx::query(INSERT_SCRIPTS)
            .bind(DEFAULT_APP)
            .bind(to_i64(count)?)
            .execute(pool)
            .await
            .context("adding scripts")?;
        settle(pool, "scripts").await?;
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM scripts")
            .fetch_one(pool)
            .await?;
        eprintln!("picloud-bench: growth, first call after upload with {stored} scripts stored");
        let (mut upload, mut first, mut steady) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..spec.uploads {
            let body = json!({
                "app_id": picloud_manager_core::DEFAULT_APP_ID,
                "name": format!("growth-new-{count}-{round}"),
                "source": format!(r#""growth {count} {round}""#),
            });
            let create = Call::post_json("/api/admin/scripts", body.to_string()).bearer(token);
            let sent = Instant::now();
            let (status, answer) = admin.send(&create).await?;
            upload.push(nanos_since(sent));
            if status != StatusCode::CREATED {
                bail!(
                    "uploading a script answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
            let answer: Value = serde_json::from_slice(&answer).context("the upload's answer")?;
            let id = answer["id"]
                .as_str()
                .ok_or_else(|| anyhow!("create answer has no id: {answer}"))?;
            let call = Call::get(format!("/api/execute/{id}"));
            for index in 0..=spec.steady_calls {
                let sent = Instant::now();
                let (status, _) = calls.send(&call).await?;
                let took = nanos_since(sent);
                if status != StatusCode::OK {
                    bail!("a freshly uploaded script answered {status}");
                }
                if index == 0 {
                    first.push(took);
                } else {
                    steady.push(took);
                }
            }
        }
        let (upload, first, steady) = (
            Latency::from_nanos(upload),
            Latency::from_nanos(first),
            Latency::from_nanos(steady),
        );
        firsts.push(first.p50_us);
        steadies.push(steady.p50_us);
        sizes.push(json!({
            "scripts": count,
            "scripts_stored": stored,
            "upload": upload.to_json(),
            "first_call": first.to_json(),
            "steady_state": steady.to_json(),
        }));
    }
    Ok(json!({
        "uploads_per_size": spec.uploads,
        "steady_calls_per_upload": spec.steady_calls,
        "sizes": sizes,
        "first_call_largest_vs_smallest": latency_growth(&firsts),
        "steady_largest_vs_smallest": latency_growth(&steadies),
    }))
}

/// 4. An admin list page: `GET /api/admin/scripts/{id}/executions?limit=10`, the newest
///    runs of one script, with its execution records added in SQL up to the size. At each
///    size the page is checked once, then [`WARMUP`] requests, then `list_requests` timed
///    ones, one at a time on one connection, as the admin.
async fn list_growth(
    addr: SocketAddr,
    token: &str,
    pool: &PgPool,
    spec: &GrowthSpec,
) -> Result<Value> {
    let script = picloud::create_script(addr, token, LIST_SCRIPT, "()").await?;
    let call = Call::get(format!(
        "/api/admin/scripts/{script}/executions?limit={LIST_PAGE}"
    ))
    .bearer(token);
    let mut connection = Connection::open(addr).await?;
    let mut stored = 0;
    let mut sizes = Vec::new();
    let mut p50s = Vec::new();
    for &rows in &spec.list_rows {
        if rows > stored {
            sqlx::query(INSERT_RUNS)
                .bind(&script)
                .bind(DEFAULT_APP)
                .bind(to_i64(stored + 1)?)
                .bind(to_i64(rows)?)
                .execute(pool)
                .await
                .context("adding execution records")?;
            settle(pool, "execution_logs").await?;
            stored = rows;
        }
        eprintln!("picloud-bench: growth, first page of {rows} execution records");
        let page: Value = serde_json::from_slice(&send_ok(&mut connection, &call).await?)
            .context("the list's answer")?;
        let items = page["items"].as_array().map_or(0, Vec::len);
        if items != rows.min(LIST_PAGE) {
            bail!(
                "the first page of {rows} records holds {items}, not {}",
                rows.min(LIST_PAGE)
            );
        }
        for _ in 0..WARMUP {
            send_ok(&mut connection, &call).await?;
        }
        let mut nanos = Vec::with_capacity(spec.list_requests);
        for _ in 0..spec.list_requests {
            let sent = Instant::now();
            send_ok(&mut connection, &call).await?;
            nanos.push(nanos_since(sent));
        }
        let latency = Latency::from_nanos(nanos);
        p50s.push(latency.p50_us);
        sizes.push(json!({ "rows": rows, "latency": latency.to_json() }));
    }
    Ok(json!({
        "endpoint": "GET /api/admin/scripts/{id}/executions",
        "page_size": LIST_PAGE,
        "requests_per_size": spec.list_requests,
        "sizes": sizes,
        "largest_vs_smallest": latency_growth(&p50s),
    }))
}
