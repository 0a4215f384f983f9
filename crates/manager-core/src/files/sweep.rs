//! The sweep: what a crash or a failed removal leaves between the `files` table and the
//! blob store, found and cleaned up (or reported), at start-up and on a schedule.
//!
//! - Temporary files of writes that stopped (no byte written for the grace period) are
//!   removed.
//! - Blobs that no row refers to (a crash between the rename and the insert, a delete or
//!   an update whose removal of the old bytes failed, a deleted app) and that are older
//!   than the grace period are removed. The grace period keeps the sweep away from a
//!   write between its rename and its commit.
//! - Rows whose blob is gone cannot be repaired: they are reported (in the log and in the
//!   admin API's `GET /api/admin/files/sweep`), and reading them fails as corrupted until
//!   someone deletes or rewrites them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use picloud_shared::{AppId, ServiceError};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::blob::{BlobError, BlobKey, BlobStore};
use crate::db::db_error;
use crate::retention::PrunerHandle;

/// Most missing files a report lists one by one (it counts them all).
pub const MAX_REPORTED_MISSING: usize = 100;

/// Rows checked per query when looking for missing bytes.
const ROWS_PER_PAGE: i64 = 1000;

/// A file whose row exists but whose bytes are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema))]
pub struct MissingFile {
    /// Its app.
    pub app_id: AppId,
    /// Its collection.
    pub collection: String,
    /// Its name.
    pub name: String,
    /// The key of the bytes that are gone.
    pub blob_key: String,
}

/// What one sweep found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema))]
pub struct SweepReport {
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Temporary files of stopped writes removed.
    pub stale_uploads_removed: u64,
    /// Blobs no file referred to, removed.
    pub orphan_blobs_removed: u64,
    /// Files whose bytes were checked for.
    pub files_checked: u64,
    /// Files whose bytes are gone.
    pub missing_total: u64,
    /// The first of them (at most 100).
    pub missing: Vec<MissingFile>,
}

/// Runs sweeps, one at a time, and keeps the last report.
#[derive(Debug)]
pub struct FileSweeper {
    pool: PgPool,
    blobs: Arc<dyn BlobStore>,
    grace: Duration,
    last: Mutex<Option<SweepReport>>,
    running: tokio::sync::Mutex<()>,
}

fn store_error(err: BlobError) -> ServiceError {
    tracing::error!(error = %err, "the file sweep could not read the blob store");
    ServiceError::Internal("sweeping the blob store".to_owned())
}

fn db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> ServiceError {
    move |err| db_error(err).into_service_error(doing)
}

impl FileSweeper {
    /// A sweeper of the `files` rows in `pool` against `blobs`, leaving alone anything
    /// written less than `grace` ago.
    pub fn new(pool: PgPool, blobs: Arc<dyn BlobStore>, grace: Duration) -> Self {
        Self {
            pool,
            blobs,
            grace,
            last: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The last sweep's report, if one ran since start-up.
    pub fn last_report(&self) -> Option<SweepReport> {
        self.last.lock().map_or(None, |last| last.clone())
    }

    /// Sweeps now (after the sweep in progress, if there is one) and returns its report.
    pub async fn sweep(&self) -> Result<SweepReport, ServiceError> {
        let _one_at_a_time = self.running.lock().await;
        let started_at = Utc::now();
        let cutoff = SystemTime::now()
            .checked_sub(self.grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let stale_uploads_removed = self
            .blobs
            .remove_stale_uploads(cutoff)
            .await
            .map_err(store_error)?;
        let orphan_blobs_removed = self.remove_orphans(cutoff).await?;
        let (files_checked, missing_total, missing) = self.find_missing().await?;
        let report = SweepReport {
            started_at,
            finished_at: Utc::now(),
            stale_uploads_removed,
            orphan_blobs_removed,
            files_checked,
            missing_total,
            missing,
        };
        if report.missing_total > 0 {
            tracing::error!(
                missing = report.missing_total,
                "files whose stored bytes are gone: reading them fails; delete or rewrite them \
                 (GET /api/admin/files/sweep lists them)"
            );
        }
        tracing::info!(
            stale_uploads_removed,
            orphan_blobs_removed,
            files_checked,
            "file sweep done"
        );
        if let Ok(mut last) = self.last.lock() {
            *last = Some(report.clone());
        }
        Ok(report)
    }

    async fn remove_orphans(&self, cutoff: SystemTime) -> Result<u64, ServiceError> {
        let mut removed = 0;
        let mut page = None;
        loop {
            let (keys, next) = self
                .blobs
                .list_older_than(page, cutoff)
                .await
                .map_err(store_error)?;
            if !keys.is_empty() {
                let raw: Vec<&str> = keys.iter().map(BlobKey::as_str).collect();
                let referenced: HashSet<String> =
                    sqlx::query_scalar("SELECT blob_key FROM files WHERE blob_key = ANY($1)")
                        .bind(&raw)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db("finding the blobs files refer to"))?
                        .into_iter()
                        .collect();
                for key in keys.iter().filter(|key| !referenced.contains(key.as_str())) {
                    match self.blobs.remove(key).await {
                        Ok(()) => removed += 1,
                        Err(err) => tracing::warn!(error = %err, "could not remove an orphan blob"),
                    }
                }
            }
            match next {
                Some(next) => page = Some(next),
                None => return Ok(removed),
            }
        }
    }

    async fn find_missing(&self) -> Result<(u64, u64, Vec<MissingFile>), ServiceError> {
        let (mut checked, mut total, mut listed) = (0_u64, 0_u64, Vec::new());
        let mut after = String::new();
        loop {
            let rows: Vec<(Uuid, String, String, String)> = sqlx::query_as(
                "SELECT app_id, collection, name, blob_key FROM files \
                 WHERE blob_key > $1 ORDER BY blob_key LIMIT $2",
            )
            .bind(&after)
            .bind(ROWS_PER_PAGE)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading files for the sweep"))?;
            let Some((_, _, _, last)) = rows.last() else {
                return Ok((checked, total, listed));
            };
            after.clone_from(last);
            for (app, collection, name, raw) in rows {
                checked += 1;
                let Some(key) = BlobKey::parse(&raw) else {
                    continue;
                };
                if self.blobs.exists(&key).await.map_err(store_error)? {
                    continue;
                }
                // Replaced or deleted since it was read: its bytes went with its row.
                let still: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM files WHERE blob_key = $1")
                        .bind(&raw)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db("reading files for the sweep"))?;
                if still.is_none() {
                    continue;
                }
                tracing::error!(app_id = %app, %collection, %name, blob = %self.blobs.locate(&key), "a file's stored bytes are missing");
                total += 1;
                if listed.len() < MAX_REPORTED_MISSING {
                    listed.push(MissingFile {
                        app_id: AppId::from_uuid(app),
                        collection,
                        name,
                        blob_key: raw,
                    });
                }
            }
        }
    }
}

/// Sweeps now and then every `interval`, sleeping in between (nothing runs while it
/// waits). Must be called inside a tokio runtime.
pub fn spawn_file_sweeper(sweeper: Arc<FileSweeper>, interval: Duration) -> PrunerHandle {
    PrunerHandle::new(tokio::spawn(async move {
        loop {
            // A failed sweep was logged; the next one retries.
            let _ = sweeper.sweep().await;
            tokio::time::sleep(interval).await;
        }
    }))
}
