//! [`KvService`] over PostgreSQL: the `kv_entries` table, and the outbox rows of every
//! change written in the same transaction through a [`ServiceEventEmitter`].
//!
//! Every write takes a new version from the `kv_versions` sequence. A conditional write
//! and an increment are each one statement (the row lock orders them against any other
//! writer). An atomic batch locks every key it touches, in key order, before it checks
//! anything: an existing row with `FOR UPDATE`, a key that must be absent by inserting a
//! placeholder row (removed again unless the batch writes the key), so nothing else can
//! write any of its keys until it commits or rolls back.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

use picloud_shared::kv::{
    MAX_KV_PAGE_BYTES, authorize_kv_read, authorize_kv_write, check_kv_value, incremented, kv_event,
};
use picloud_shared::{
    CollectionInfo, CollectionName, KvAtomic, KvCondition, KvEntry, KvIncrement, KvKey,
    KvListOptions, KvMutation, KvOp, KvPage, KvService, KvVersioned, ServiceContext, ServiceError,
    ServiceEventEmitter, UnitOfWork,
};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;

use crate::db::{Violations, corrupt_row, db_error, is_deadlock, translate};
use crate::outbox::{PgTx, begin};
use crate::repository::RepoError;

/// KV entries in the `kv_entries` table. Every write and the events it emits commit or
/// roll back together.
#[derive(Clone)]
pub struct PgKvService {
    pool: PgPool,
    emitter: Arc<dyn ServiceEventEmitter<PgTx>>,
}

impl fmt::Debug for PgKvService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgKvService").finish_non_exhaustive()
    }
}

impl PgKvService {
    /// A service over `pool` whose changes emit their events through `emitter`.
    pub fn new(pool: PgPool, emitter: Arc<dyn ServiceEventEmitter<PgTx>>) -> Self {
        Self { pool, emitter }
    }
}

fn service_error(err: RepoError, doing: &str) -> ServiceError {
    err.into_service_error(doing)
}

fn db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> ServiceError {
    move |err| service_error(db_error(err), doing)
}

fn write_error(ctx: &ServiceContext) -> impl FnOnce(sqlx::Error) -> ServiceError + '_ {
    move |err| {
        let violations = Violations {
            foreign_key: Some(format!("app {}", ctx.app_id)),
            ..Violations::default()
        };
        service_error(translate(err, violations), "writing a kv entry")
    }
}

/// How many times an atomic batch that deadlocked with another is run again.
const BATCH_ATTEMPTS: u32 = 3;

const UPSERT: &str = "INSERT INTO kv_entries (app_id, collection, key, value, updated_at, version) \
     VALUES ($1, $2, $3, $4, now(), nextval('kv_versions')) \
     ON CONFLICT (app_id, collection, key) DO UPDATE SET value = EXCLUDED.value, \
         updated_at = EXCLUDED.updated_at, version = EXCLUDED.version \
     RETURNING version";

/// One statement: the sum is computed on the locked row, so concurrent increments never
/// lose one another; an absent key starts from `$4` (0 + the amount). A value that is not
/// a number matches no row.
const INCREMENT: &str = "INSERT INTO kv_entries (app_id, collection, key, value, updated_at, version) \
     VALUES ($1, $2, $3, $4, now(), nextval('kv_versions')) \
     ON CONFLICT (app_id, collection, key) DO UPDATE \
         SET value = to_jsonb((kv_entries.value #>> '{}')::numeric + $5::numeric), \
             updated_at = EXCLUDED.updated_at, version = EXCLUDED.version \
         WHERE jsonb_typeof(kv_entries.value) = 'number' \
     RETURNING value, version";

/// The amount as SQL `numeric` text, and the value an absent key takes.
fn amount(key: &KvKey, by: KvIncrement) -> Result<(String, Value), ServiceError> {
    let start = incremented(key, None, by)?;
    let text = match by {
        KvIncrement::Int(by) => by.to_string(),
        KvIncrement::Float(by) => format!("{by:?}"),
    };
    Ok((text, start))
}

/// A whole increment must leave a whole number in the 64-bit range, as the in-memory
/// service and scripts' integers require.
fn check_whole(key: &KvKey, by: KvIncrement, value: &Value) -> Result<(), ServiceError> {
    // 2^63: whole numbers from here on (either sign) are not 64-bit integers. A sum that
    // is a float with no fraction below it (`2.0`, from a float stored earlier) is fine.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    let KvIncrement::Int(by) = by else {
        return Ok(());
    };
    let out_of_range = (value.is_u64() && !value.is_i64())
        || value
            .as_f64()
            .is_some_and(|f| !value.is_i64() && f.fract() == 0.0 && f.abs() >= TWO_POW_63);
    if out_of_range {
        return Err(ServiceError::InvalidArgument(format!(
            "incrementing key '{key}' by {by} leaves the range of a 64-bit integer"
        )));
    }
    Ok(())
}

fn not_a_number(key: &KvKey) -> ServiceError {
    ServiceError::InvalidArgument(format!(
        "value for key '{key}' is not a number, so it cannot be incremented"
    ))
}

/// Why an attempt at a batch failed: a deadlock is run again, anything else is final.
enum BatchFailure {
    Deadlock,
    Failed(ServiceError),
}

impl From<ServiceError> for BatchFailure {
    fn from(err: ServiceError) -> Self {
        Self::Failed(err)
    }
}

fn batch_db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> BatchFailure {
    move |err| {
        if is_deadlock(&err) {
            BatchFailure::Deadlock
        } else {
            BatchFailure::Failed(service_error(db_error(err), doing))
        }
    }
}

/// What a batch knows of one of its keys while it runs.
struct Held {
    /// Whether the key holds a value now (as far as the batch's own changes go).
    present: bool,
    /// Whether the row is the batch's placeholder for a key that had to be absent.
    placeholder: bool,
}

fn stored_key(raw: &str, collection: &CollectionName) -> Result<KvKey, ServiceError> {
    KvKey::parse(raw).map_err(|e| {
        service_error(
            corrupt_row(format!(
                "kv collection '{collection}' has a stored key {raw:?} that is not valid: {e}"
            )),
            "reading kv entries",
        )
    })
}

#[async_trait]
impl KvService for PgKvService {
    async fn get(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
    ) -> Result<Option<Value>, ServiceError> {
        authorize_kv_read(ctx)?;
        let value: Option<Json<Value>> = sqlx::query_scalar(
            "SELECT value FROM kv_entries WHERE app_id = $1 AND collection = $2 AND key = $3",
        )
        .bind(ctx.app_id.as_uuid())
        .bind(collection.as_str())
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a kv entry"))?;
        Ok(value.map(|Json(value)| value))
    }

    #[tracing::instrument(skip_all, fields(app_id = %ctx.app_id, %collection))]
    async fn set(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
        value: Value,
    ) -> Result<i64, ServiceError> {
        authorize_kv_write(ctx)?;
        check_kv_value(key, &value)?;
        let mut change = begin(&self.pool, self.emitter.as_ref()).await?;
        let version: i64 = sqlx::query_scalar(UPSERT)
            .bind(ctx.app_id.as_uuid())
            .bind(collection.as_str())
            .bind(key.as_str())
            .bind(Json(&value))
            .fetch_one(&mut **change.tx())
            .await
            .map_err(write_error(ctx))?;
        change
            .emit(&kv_event(ctx, collection, key, KvOp::Set, Some(value)))
            .await?;
        change.commit().await?;
        Ok(version)
    }

    async fn get_entry(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
    ) -> Result<Option<KvVersioned>, ServiceError> {
        authorize_kv_read(ctx)?;
        let row: Option<(Json<Value>, i64)> = sqlx::query_as(
            "SELECT value, version FROM kv_entries \
             WHERE app_id = $1 AND collection = $2 AND key = $3",
        )
        .bind(ctx.app_id.as_uuid())
        .bind(collection.as_str())
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a kv entry"))?;
        Ok(row.map(|(Json(value), version)| KvVersioned { value, version }))
    }

    #[tracing::instrument(skip_all, fields(app_id = %ctx.app_id, %collection))]
    async fn set_if(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
        value: Value,
        condition: KvCondition,
    ) -> Result<Option<i64>, ServiceError> {
        authorize_kv_write(ctx)?;
        authorize_kv_read(ctx)?;
        check_kv_value(key, &value)?;
        let mut change = begin(&self.pool, self.emitter.as_ref()).await?;
        let query = match condition {
            KvCondition::IfVersion(version) => sqlx::query_scalar(
                "UPDATE kv_entries SET value = $4, updated_at = now(), \
                     version = nextval('kv_versions') \
                 WHERE app_id = $1 AND collection = $2 AND key = $3 AND version = $5 \
                 RETURNING version",
            )
            .bind(ctx.app_id.as_uuid())
            .bind(collection.as_str())
            .bind(key.as_str())
            .bind(Json(&value))
            .bind(version),
            KvCondition::IfAbsent => sqlx::query_scalar(
                "INSERT INTO kv_entries (app_id, collection, key, value, updated_at, version) \
                 VALUES ($1, $2, $3, $4, now(), nextval('kv_versions')) \
                 ON CONFLICT (app_id, collection, key) DO NOTHING \
                 RETURNING version",
            )
            .bind(ctx.app_id.as_uuid())
            .bind(collection.as_str())
            .bind(key.as_str())
            .bind(Json(&value)),
        };
        let version: Option<i64> = query
            .fetch_optional(&mut **change.tx())
            .await
            .map_err(write_error(ctx))?;
        let Some(version) = version else {
            // The condition did not hold: nothing changed, nothing to tell.
            return Ok(None);
        };
        change
            .emit(&kv_event(ctx, collection, key, KvOp::Set, Some(value)))
            .await?;
        change.commit().await?;
        Ok(Some(version))
    }

    #[tracing::instrument(skip_all, fields(app_id = %ctx.app_id, %collection))]
    async fn incr(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
        by: KvIncrement,
    ) -> Result<KvVersioned, ServiceError> {
        authorize_kv_write(ctx)?;
        let mut change = begin(&self.pool, self.emitter.as_ref()).await?;
        let counted = increment(change.tx(), ctx, collection, key, by).await?;
        change
            .emit(&kv_event(
                ctx,
                collection,
                key,
                KvOp::Set,
                Some(counted.value.clone()),
            ))
            .await?;
        change.commit().await?;
        Ok(counted)
    }

    #[tracing::instrument(skip_all, fields(app_id = %ctx.app_id))]
    async fn commit(&self, ctx: &ServiceContext, batch: KvAtomic) -> Result<bool, ServiceError> {
        authorize_kv_write(ctx)?;
        if !batch.checks.is_empty() {
            authorize_kv_read(ctx)?;
        }
        batch.validate()?;
        let mut attempt = 1;
        loop {
            match self.try_commit(ctx, &batch).await {
                Ok(held) => return Ok(held),
                Err(BatchFailure::Deadlock) if attempt < BATCH_ATTEMPTS => attempt += 1,
                Err(BatchFailure::Deadlock) => {
                    return Err(ServiceError::Unavailable(
                        "the atomic batch kept deadlocking with other writes; try again".to_owned(),
                    ));
                }
                Err(BatchFailure::Failed(err)) => return Err(err),
            }
        }
    }

    #[tracing::instrument(skip_all, fields(app_id = %ctx.app_id, %collection))]
    async fn delete(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
    ) -> Result<bool, ServiceError> {
        authorize_kv_write(ctx)?;
        let mut change = begin(&self.pool, self.emitter.as_ref()).await?;
        let deleted = sqlx::query(
            "DELETE FROM kv_entries WHERE app_id = $1 AND collection = $2 AND key = $3",
        )
        .bind(ctx.app_id.as_uuid())
        .bind(collection.as_str())
        .bind(key.as_str())
        .execute(&mut **change.tx())
        .await
        .map_err(db("deleting a kv entry"))?
        .rows_affected()
            > 0;
        if !deleted {
            // Nothing changed, so there is nothing to tell any trigger.
            return Ok(false);
        }
        change
            .emit(&kv_event(ctx, collection, key, KvOp::Delete, None))
            .await?;
        change.commit().await?;
        Ok(true)
    }

    async fn list(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        options: KvListOptions,
    ) -> Result<KvPage, ServiceError> {
        authorize_kv_read(ctx)?;
        let bounds = options.bounds()?;
        // One row more than the page tells whether another page follows; rows past the
        // page's byte budget are not even sent (the running total is the database's), so
        // a page of large values never arrives whole to be cut here.
        let rows: Vec<(String, Json<Value>, i64, DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT key, value, version, updated_at, size FROM ( \
                 SELECT key, value, version, updated_at, \
                        octet_length(value::text)::int8 AS size, \
                        sum(octet_length(value::text)) \
                            OVER (ORDER BY key ROWS UNBOUNDED PRECEDING) AS through \
                 FROM kv_entries \
                 WHERE app_id = $1 AND collection = $2 AND key >= $3 \
                   AND ($4::text IS NULL OR key < $4) \
                   AND ($5::text IS NULL OR key > $5) \
                 ORDER BY key LIMIT $6 \
             ) page \
             WHERE through - size <= $7 \
             ORDER BY key",
        )
        .bind(ctx.app_id.as_uuid())
        .bind(collection.as_str())
        .bind(&bounds.from)
        .bind(bounds.until.as_deref())
        .bind(bounds.after.as_deref())
        .bind(i64::from(bounds.limit) + 1)
        .bind(i64::try_from(MAX_KV_PAGE_BYTES).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing kv entries"))?;
        let entries = rows
            .into_iter()
            .map(|(key, Json(value), version, updated_at, size)| {
                let entry = KvEntry {
                    key: stored_key(&key, collection)?,
                    value,
                    version,
                    updated_at,
                };
                Ok((entry, usize::try_from(size).unwrap_or(usize::MAX)))
            })
            .collect::<Result<Vec<_>, ServiceError>>()?;
        Ok(KvPage::from_overfetch(entries, bounds.limit))
    }

    async fn collections(&self, ctx: &ServiceContext) -> Result<Vec<CollectionInfo>, ServiceError> {
        authorize_kv_read(ctx)?;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT collection, count(*) FROM kv_entries WHERE app_id = $1 \
             GROUP BY collection ORDER BY collection",
        )
        .bind(ctx.app_id.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing kv collections"))?;
        rows.into_iter()
            .map(|(name, keys)| {
                let parsed = CollectionName::parse(&name).map_err(|e| {
                    service_error(
                        corrupt_row(format!(
                            "app {} has a stored kv collection {name:?} that is not valid: {e}",
                            ctx.app_id
                        )),
                        "listing kv collections",
                    )
                })?;
                Ok(CollectionInfo {
                    name: parsed,
                    keys: u64::try_from(keys).unwrap_or(0),
                })
            })
            .collect()
    }
}

/// Adds `by` to `key` in one statement inside `tx`.
async fn increment(
    tx: &mut PgTx,
    ctx: &ServiceContext,
    collection: &CollectionName,
    key: &KvKey,
    by: KvIncrement,
) -> Result<KvVersioned, ServiceError> {
    let (by_text, start) = amount(key, by)?;
    let row: Option<(Json<Value>, i64)> = sqlx::query_as(INCREMENT)
        .bind(ctx.app_id.as_uuid())
        .bind(collection.as_str())
        .bind(key.as_str())
        .bind(Json(&start))
        .bind(&by_text)
        .fetch_optional(&mut **tx)
        .await
        .map_err(write_error(ctx))?;
    let (Json(value), version) = row.ok_or_else(|| not_a_number(key))?;
    check_whole(key, by, &value)?;
    Ok(KvVersioned { value, version })
}

impl PgKvService {
    /// One attempt at `batch`: lock every key, check, change, emit, commit.
    async fn try_commit(
        &self,
        ctx: &ServiceContext,
        batch: &KvAtomic,
    ) -> Result<bool, BatchFailure> {
        let mut change = begin(&self.pool, self.emitter.as_ref()).await?;
        // Every key the batch touches, in key order (so two batches lock alike), with the
        // versions it must hold.
        let mut keys: BTreeMap<(&CollectionName, &KvKey), Vec<Option<i64>>> = BTreeMap::new();
        for check in &batch.checks {
            keys.entry((&check.collection, &check.key))
                .or_default()
                .push(check.version);
        }
        for mutation in &batch.mutations {
            keys.entry(mutation.target()).or_default();
        }
        let mut held: BTreeMap<(&CollectionName, &KvKey), Held> = BTreeMap::new();
        for ((collection, key), wanted) in &keys {
            let must_be_absent = wanted.contains(&None);
            let current: Option<i64> = if must_be_absent {
                // A row of our own holds the key: a concurrent insert waits for us.
                let inserted: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO kv_entries (app_id, collection, key, value, updated_at, version) \
                     VALUES ($1, $2, $3, 'null', now(), nextval('kv_versions')) \
                     ON CONFLICT (app_id, collection, key) DO NOTHING RETURNING version",
                )
                .bind(ctx.app_id.as_uuid())
                .bind(collection.as_str())
                .bind(key.as_str())
                .fetch_optional(&mut **change.tx())
                .await
                .map_err(batch_db("locking a kv entry"))?;
                if inserted.is_none() {
                    return Ok(false);
                }
                None
            } else {
                sqlx::query_scalar(
                    "SELECT version FROM kv_entries \
                     WHERE app_id = $1 AND collection = $2 AND key = $3 FOR UPDATE",
                )
                .bind(ctx.app_id.as_uuid())
                .bind(collection.as_str())
                .bind(key.as_str())
                .fetch_optional(&mut **change.tx())
                .await
                .map_err(batch_db("locking a kv entry"))?
            };
            if wanted.iter().any(|version| *version != current) {
                // Dropping the unit rolls back the placeholders and the locks.
                return Ok(false);
            }
            held.insert(
                (collection, key),
                Held {
                    present: current.is_some(),
                    placeholder: must_be_absent,
                },
            );
        }
        for mutation in &batch.mutations {
            let (collection, key) = mutation.target();
            let Some(state) = held.get_mut(&(collection, key)) else {
                continue;
            };
            let event = apply(&mut change, ctx, mutation, state).await?;
            if let Some(event) = event {
                change.emit(&event).await?;
            }
        }
        // A key that had to be absent and still is loses the batch's placeholder.
        for ((collection, key), state) in &held {
            if state.placeholder && !state.present {
                sqlx::query(
                    "DELETE FROM kv_entries WHERE app_id = $1 AND collection = $2 AND key = $3",
                )
                .bind(ctx.app_id.as_uuid())
                .bind(collection.as_str())
                .bind(key.as_str())
                .execute(&mut **change.tx())
                .await
                .map_err(batch_db("writing a kv entry"))?;
            }
        }
        change.commit().await?;
        Ok(true)
    }
}

/// Applies one change of a batch to a key it holds; the event it emits, if any.
async fn apply(
    change: &mut UnitOfWork<'_, PgTx>,
    ctx: &ServiceContext,
    mutation: &KvMutation,
    state: &mut Held,
) -> Result<Option<picloud_shared::ServiceEvent>, BatchFailure> {
    Ok(match mutation {
        KvMutation::Set {
            collection,
            key,
            value,
        } => {
            set_row(change.tx(), ctx, collection, key, value).await?;
            state.present = true;
            Some(kv_event(
                ctx,
                collection,
                key,
                KvOp::Set,
                Some(value.clone()),
            ))
        }
        KvMutation::Incr {
            collection,
            key,
            by,
        } => {
            let value = if state.present || !state.placeholder {
                increment(change.tx(), ctx, collection, key, *by)
                    .await?
                    .value
            } else {
                // The key is absent, held by a placeholder the increment must not read.
                let value = incremented(key, None, *by)?;
                set_row(change.tx(), ctx, collection, key, &value).await?;
                value
            };
            state.present = true;
            Some(kv_event(ctx, collection, key, KvOp::Set, Some(value)))
        }
        KvMutation::Delete { collection, key } => {
            if !state.present && !state.placeholder {
                // Not held by a check: it may exist or not; the statement tells.
                let deleted = delete_row(change.tx(), ctx, collection, key).await?;
                deleted.then(|| kv_event(ctx, collection, key, KvOp::Delete, None))
            } else if state.present {
                delete_row(change.tx(), ctx, collection, key).await?;
                state.present = false;
                // The placeholder row went with it; nothing is left to remove at the end.
                state.placeholder = false;
                Some(kv_event(ctx, collection, key, KvOp::Delete, None))
            } else {
                None
            }
        }
    })
}

async fn set_row(
    tx: &mut PgTx,
    ctx: &ServiceContext,
    collection: &CollectionName,
    key: &KvKey,
    value: &Value,
) -> Result<i64, ServiceError> {
    sqlx::query_scalar(UPSERT)
        .bind(ctx.app_id.as_uuid())
        .bind(collection.as_str())
        .bind(key.as_str())
        .bind(Json(value))
        .fetch_one(&mut **tx)
        .await
        .map_err(write_error(ctx))
}

async fn delete_row(
    tx: &mut PgTx,
    ctx: &ServiceContext,
    collection: &CollectionName,
    key: &KvKey,
) -> Result<bool, ServiceError> {
    Ok(
        sqlx::query("DELETE FROM kv_entries WHERE app_id = $1 AND collection = $2 AND key = $3")
            .bind(ctx.app_id.as_uuid())
            .bind(collection.as_str())
            .bind(key.as_str())
            .execute(&mut **tx)
            .await
            .map_err(db("deleting a kv entry"))?
            .rows_affected()
            > 0,
    )
}
