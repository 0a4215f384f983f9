//! [`KvService`] over PostgreSQL: the `kv_entries` table, and the outbox rows of every
//! change written in the same transaction through a [`ServiceEventEmitter`].

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::kv::{
    MAX_KV_PAGE_BYTES, authorize_kv_read, authorize_kv_write, check_kv_value, kv_event,
};
use picloud_shared::{
    CollectionInfo, CollectionName, KvEntry, KvKey, KvListOptions, KvOp, KvPage, KvService,
    ServiceContext, ServiceError, ServiceEventEmitter,
};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;

use crate::db::{Violations, corrupt_row, db_error, translate};
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
    ) -> Result<(), ServiceError> {
        authorize_kv_write(ctx)?;
        check_kv_value(key, &value)?;
        let mut change = begin(&self.pool, self.emitter.as_ref()).await?;
        sqlx::query(
            "INSERT INTO kv_entries (app_id, collection, key, value, updated_at) \
             VALUES ($1, $2, $3, $4, now()) \
             ON CONFLICT (app_id, collection, key) \
             DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
        )
        .bind(ctx.app_id.as_uuid())
        .bind(collection.as_str())
        .bind(key.as_str())
        .bind(Json(&value))
        .execute(&mut **change.tx())
        .await
        .map_err(|err| {
            let violations = Violations {
                foreign_key: Some(format!("app {}", ctx.app_id)),
                ..Violations::default()
            };
            service_error(translate(err, violations), "writing a kv entry")
        })?;
        change
            .emit(&kv_event(ctx, collection, key, KvOp::Set, Some(value)))
            .await?;
        change.commit().await
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
        let rows: Vec<(String, Json<Value>, DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT key, value, updated_at, size FROM ( \
                 SELECT key, value, updated_at, octet_length(value::text)::int8 AS size, \
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
            .map(|(key, Json(value), updated_at, size)| {
                let entry = KvEntry {
                    key: stored_key(&key, collection)?,
                    value,
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
