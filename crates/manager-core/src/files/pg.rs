//! [`FilesService`] over PostgreSQL and a [`BlobStore`]: the `files` table holds each
//! file's metadata and the key of its bytes; the row is the commit point of every write,
//! and the outbox rows of the change are written in its transaction.
//!
//! A write streams the body into a new blob first (durable before anything refers to it),
//! then, in one transaction under the app's quota lock, checks the mode and the quota
//! again, writes the row and emits the event. The blob it replaced is removed after the
//! commit; a failure anywhere removes the new blob, and what a crash leaves is the sweep's.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::files::{
    authorize_files_read, authorize_files_write, file_event, mode_refusal, sha256_hex,
};
use picloud_shared::{
    ByteStream, CollectionName, ContentType, FileDownload, FileInfo, FileLimits, FileListOptions,
    FileMetadata, FileName, FileOp, FilePage, FileWrite, FilesService, FilesUsage, ServiceContext,
    ServiceError, ServiceEventEmitter,
};
use sqlx::PgPool;
use sqlx::types::Json;

use super::blob::{BlobError, BlobKey, BlobStore, StoredBlob};
use crate::db::{Violations, corrupt_row, db_error, translate};
use crate::outbox::{PgTx, begin};

/// Files: metadata in the `files` table, bytes in a blob store.
#[derive(Clone)]
pub struct PgFilesService {
    pool: PgPool,
    emitter: Arc<dyn ServiceEventEmitter<PgTx>>,
    blobs: Arc<dyn BlobStore>,
    limits: FileLimits,
}

impl fmt::Debug for PgFilesService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgFilesService")
            .field("blobs", &self.blobs)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A `files` row as selected by [`COLUMNS`].
type Row = (
    String,
    String,
    String,
    i64,
    String,
    Vec<u8>,
    Json<BTreeMap<String, String>>,
    i64,
    DateTime<Utc>,
    DateTime<Utc>,
);

const COLUMNS: &str = "collection, name, blob_key, size, content_type, sha256, metadata, \
                       version, created_at, updated_at";

/// A file's metadata and where its bytes are.
struct Stored {
    info: FileInfo,
    key: BlobKey,
    sha256: [u8; 32],
}

fn db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> ServiceError {
    move |err| db_error(err).into_service_error(doing)
}

fn corrupt(what: String) -> ServiceError {
    corrupt_row(what).into_service_error("reading a file's row")
}

fn parse_row(row: Row) -> Result<Stored, ServiceError> {
    let (
        collection,
        name,
        key,
        size,
        content_type,
        sha256,
        Json(metadata),
        version,
        created,
        updated,
    ) = row;
    let bad = |what: &str| corrupt(format!("file {collection:?}/{name:?} has {what}"));
    let sha256: [u8; 32] = sha256
        .try_into()
        .map_err(|_| bad("a checksum that is not 32 bytes"))?;
    let info = FileInfo {
        collection: CollectionName::parse(&collection).map_err(|_| bad("an invalid collection"))?,
        name: FileName::parse(&name).map_err(|_| bad("an invalid name"))?,
        size: u64::try_from(size).map_err(|_| bad("a negative size"))?,
        content_type: ContentType::parse(&content_type)
            .map_err(|_| bad("an invalid content type"))?,
        sha256: sha256_hex(&sha256),
        metadata: FileMetadata::new(metadata).map_err(|_| bad("invalid metadata"))?,
        version,
        created_at: created,
        updated_at: updated,
    };
    let key = BlobKey::parse(&key).ok_or_else(|| bad("an invalid blob key"))?;
    Ok(Stored { info, key, sha256 })
}

fn label(collection: &CollectionName, name: &FileName) -> String {
    format!("file '{name}' in collection '{collection}'")
}

impl PgFilesService {
    /// A service over `pool` and `blobs` whose changes emit their events through
    /// `emitter`, refusing what `limits` do not allow.
    pub fn new(
        pool: PgPool,
        emitter: Arc<dyn ServiceEventEmitter<PgTx>>,
        blobs: Arc<dyn BlobStore>,
        limits: FileLimits,
    ) -> Self {
        Self {
            pool,
            emitter,
            blobs,
            limits,
        }
    }

    async fn stored(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
    ) -> Result<Option<Stored>, ServiceError> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM files WHERE app_id = $1 AND collection = $2 AND name = $3"
        ))
        .bind(ctx.app_id.as_uuid())
        .bind(collection.as_str())
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a file"))?;
        row.map(parse_row).transpose()
    }

    /// What the app holds now and what the file holds, for the checks before streaming.
    async fn footprint(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
    ) -> Result<(u64, Option<u64>), ServiceError> {
        let (used, existing): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COALESCE((SELECT sum(size) FROM files WHERE app_id = $1), 0)::int8, \
                    (SELECT size FROM files WHERE app_id = $1 AND collection = $2 AND name = $3)",
        )
        .bind(ctx.app_id.as_uuid())
        .bind(collection.as_str())
        .bind(name.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(db("reading an app's file usage"))?;
        Ok((
            u64::try_from(used).unwrap_or(0),
            existing.map(|size| u64::try_from(size).unwrap_or(0)),
        ))
    }

    fn blob_error(&self, err: BlobError, name: &FileName, budget: u64) -> ServiceError {
        match err {
            BlobError::TooLarge { limit } if limit >= self.limits.max_file_bytes => {
                ServiceError::TooLarge {
                    what: format!("file '{name}'"),
                    size: usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX),
                    limit: usize::try_from(limit).unwrap_or(usize::MAX),
                }
            }
            BlobError::TooLarge { .. } => ServiceError::QuotaExceeded(format!(
                "file '{name}' does not fit in the app's quota of {} bytes ({budget} bytes left)",
                self.limits.app_quota_bytes
            )),
            BlobError::StorageFull { path } => {
                tracing::error!(%path, file = %name, "a file write found the disk full");
                ServiceError::StorageFull(format!("there is no room left to store file '{name}'"))
            }
            BlobError::Body(err) => ServiceError::InvalidArgument(format!(
                "the bytes of file '{name}' could not be read: {err}"
            )),
            other => {
                tracing::error!(error = %other, file = %name, "a file write failed");
                ServiceError::Internal("writing a file".to_owned())
            }
        }
    }

    /// Removes a blob nothing refers to any more; a failure leaves it to the sweep.
    async fn discard(&self, key: &BlobKey) {
        if let Err(err) = self.blobs.remove(key).await {
            tracing::warn!(error = %err, blob = %self.blobs.locate(key), "could not remove an unreferenced blob; the sweep will");
        }
    }

    /// The row of a written blob, in one transaction with the quota and mode checks and
    /// the event; the key of the blob it replaced.
    async fn commit_row(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
        write: &FileWrite,
        blob: &StoredBlob,
    ) -> Result<(FileInfo, Option<BlobKey>), ServiceError> {
        let mut change = begin(&self.pool, self.emitter.as_ref()).await?;
        // One writer per app at a time from here to the commit, so two writes cannot both
        // fit under the quota that only one of them fits under.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('files:' || $1::text, 0))")
            .bind(ctx.app_id.as_uuid())
            .execute(&mut **change.tx())
            .await
            .map_err(db("locking an app's files"))?;
        let current: Option<(String, i64)> = sqlx::query_as(
            "SELECT blob_key, size FROM files \
             WHERE app_id = $1 AND collection = $2 AND name = $3 FOR UPDATE",
        )
        .bind(ctx.app_id.as_uuid())
        .bind(collection.as_str())
        .bind(name.as_str())
        .fetch_optional(&mut **change.tx())
        .await
        .map_err(db("reading a file"))?;
        if let Some(refusal) = mode_refusal(write.mode, collection, name, current.is_some()) {
            return Err(refusal);
        }
        let used: i64 =
            sqlx::query_scalar("SELECT COALESCE(sum(size), 0)::int8 FROM files WHERE app_id = $1")
                .bind(ctx.app_id.as_uuid())
                .fetch_one(&mut **change.tx())
                .await
                .map_err(db("reading an app's file usage"))?;
        let replaced = current.as_ref().map_or(0, |(_, size)| *size);
        self.limits.check(
            name,
            blob.size,
            u64::try_from(used).unwrap_or(0),
            u64::try_from(replaced).unwrap_or(0),
        )?;
        let content_type = write
            .content_type
            .clone()
            .unwrap_or_else(ContentType::octet_stream);
        let size = i64::try_from(blob.size).unwrap_or(i64::MAX);
        let row: Row = sqlx::query_as(&format!(
            "INSERT INTO files (app_id, collection, name, blob_key, size, content_type, sha256, metadata) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (app_id, collection, name) DO UPDATE SET \
                 blob_key = EXCLUDED.blob_key, size = EXCLUDED.size, \
                 content_type = EXCLUDED.content_type, sha256 = EXCLUDED.sha256, \
                 metadata = EXCLUDED.metadata, version = files.version + 1, updated_at = now() \
             RETURNING {COLUMNS}"
        ))
        .bind(ctx.app_id.as_uuid())
        .bind(collection.as_str())
        .bind(name.as_str())
        .bind(blob.key.as_str())
        .bind(size)
        .bind(content_type.as_str())
        .bind(blob.sha256.as_slice())
        .bind(Json(write.metadata.entries()))
        .fetch_one(&mut **change.tx())
        .await
        .map_err(|err| {
            let violations = Violations {
                foreign_key: Some(format!("app {}", ctx.app_id)),
                ..Violations::default()
            };
            translate(err, violations).into_service_error("writing a file's row")
        })?;
        let info = parse_row(row)?.info;
        let op = if current.is_some() {
            FileOp::Update
        } else {
            FileOp::Create
        };
        change
            .emit(&file_event(ctx, collection, name, op, Some(&info)))
            .await?;
        change.commit().await?;
        let replaced_key = current.and_then(|(key, _)| BlobKey::parse(&key));
        Ok((info, replaced_key))
    }
}

#[async_trait]
impl FilesService for PgFilesService {
    async fn head(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
    ) -> Result<Option<FileInfo>, ServiceError> {
        authorize_files_read(ctx)?;
        Ok(self
            .stored(ctx, collection, name)
            .await?
            .map(|stored| stored.info))
    }

    async fn open(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
    ) -> Result<Option<FileDownload>, ServiceError> {
        authorize_files_read(ctx)?;
        let label = label(collection, name);
        // A file replaced between reading its row and opening its blob has a new blob:
        // read the row again. Twice in a row is a file whose bytes are gone.
        let mut missing = None;
        for _ in 0..3 {
            let Some(stored) = self.stored(ctx, collection, name).await? else {
                return Ok(None);
            };
            if missing.as_ref() == Some(&stored.key) {
                break;
            }
            match self
                .blobs
                .open(&stored.key, stored.info.size, stored.sha256, &label)
                .await
            {
                Ok(body) => {
                    return Ok(Some(FileDownload {
                        info: stored.info,
                        body,
                    }));
                }
                Err(BlobError::Missing(key)) => missing = Some(key),
                Err(err) => {
                    tracing::error!(error = %err, file = %label, "opening a file failed");
                    return Err(ServiceError::Internal("reading a file".to_owned()));
                }
            }
        }
        if let Some(key) = missing {
            tracing::error!(blob = %self.blobs.locate(&key), file = %label, "a file's stored bytes are missing");
        }
        Err(ServiceError::Corrupted(format!(
            "{label} is corrupted: its stored bytes are missing"
        )))
    }

    #[tracing::instrument(skip_all, fields(app_id = %ctx.app_id, %collection))]
    async fn write(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
        write: FileWrite,
        body: ByteStream,
    ) -> Result<FileInfo, ServiceError> {
        authorize_files_write(ctx)?;
        // Everything that can be refused before a byte is read is refused here; the
        // transaction checks it all again once the bytes are down.
        let (used, existing) = self.footprint(ctx, collection, name).await?;
        if let Some(refusal) = mode_refusal(write.mode, collection, name, existing.is_some()) {
            return Err(refusal);
        }
        let replaced = existing.unwrap_or(0);
        if let Some(size) = write.expected_size {
            self.limits.check(name, size, used, replaced)?;
        }
        let budget = self.limits.write_budget(used, replaced);
        let blob = self
            .blobs
            .put(body, budget)
            .await
            .map_err(|err| self.blob_error(err, name, budget))?;
        match self.commit_row(ctx, collection, name, &write, &blob).await {
            Ok((info, replaced)) => {
                if let Some(old) = replaced {
                    self.discard(&old).await;
                }
                tracing::info!(file = %name, size = info.size, version = info.version, "file written");
                Ok(info)
            }
            Err(err) => {
                self.discard(&blob.key).await;
                Err(err)
            }
        }
    }

    #[tracing::instrument(skip_all, fields(app_id = %ctx.app_id, %collection))]
    async fn delete(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
    ) -> Result<bool, ServiceError> {
        authorize_files_write(ctx)?;
        let mut change = begin(&self.pool, self.emitter.as_ref()).await?;
        let key: Option<String> = sqlx::query_scalar(
            "DELETE FROM files WHERE app_id = $1 AND collection = $2 AND name = $3 \
             RETURNING blob_key",
        )
        .bind(ctx.app_id.as_uuid())
        .bind(collection.as_str())
        .bind(name.as_str())
        .fetch_optional(&mut **change.tx())
        .await
        .map_err(db("deleting a file"))?;
        let Some(key) = key else {
            // Nothing changed, so there is nothing to tell any trigger.
            return Ok(false);
        };
        change
            .emit(&file_event(ctx, collection, name, FileOp::Delete, None))
            .await?;
        change.commit().await?;
        // The row is gone first, so no reader can reach the bytes removed now.
        if let Some(key) = BlobKey::parse(&key) {
            self.discard(&key).await;
        }
        Ok(true)
    }

    async fn list(
        &self,
        ctx: &ServiceContext,
        options: FileListOptions,
    ) -> Result<FilePage, ServiceError> {
        authorize_files_read(ctx)?;
        let bounds = options.bounds()?;
        let (after_collection, after_name) = bounds.after.clone().unzip();
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM files \
             WHERE app_id = $1 \
               AND ($2::text IS NULL OR collection = $2) \
               AND name >= $3 AND ($4::text IS NULL OR name < $4) \
               AND ($5::text IS NULL OR (collection, name) > ($5, $6)) \
             ORDER BY collection, name LIMIT $7"
        ))
        .bind(ctx.app_id.as_uuid())
        .bind(bounds.collection.as_ref().map(CollectionName::as_str))
        .bind(&bounds.prefix)
        .bind(bounds.until.as_deref())
        .bind(after_collection.as_deref())
        .bind(after_name.as_deref())
        .bind(i64::from(bounds.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing files"))?;
        let files = rows
            .into_iter()
            .map(|row| parse_row(row).map(|stored| stored.info))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FilePage::from_overfetch(files, bounds.limit))
    }

    async fn usage(&self, ctx: &ServiceContext) -> Result<FilesUsage, ServiceError> {
        authorize_files_read(ctx)?;
        let (files, bytes): (i64, i64) = sqlx::query_as(
            "SELECT count(*), COALESCE(sum(size), 0)::int8 FROM files WHERE app_id = $1",
        )
        .bind(ctx.app_id.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(db("reading an app's file usage"))?;
        Ok(FilesUsage {
            files: u64::try_from(files).unwrap_or(0),
            bytes: u64::try_from(bytes).unwrap_or(0),
            quota_bytes: self.limits.app_quota_bytes,
        })
    }
}
