//! [`FilesService`] in memory, with the same validation, limits, modes, ordering, events
//! and access checks as the PostgreSQL one; a change and its events commit together
//! through the same [`UnitOfWork`] as there, over an [`InMemoryTx`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use picloud_shared::files::{
    authorize_files_read, authorize_files_write, file_event, mode_refusal, sha256_hex,
};
use picloud_shared::{
    AppId, ByteStream, CollectionName, ContentType, FileDownload, FileInfo, FileLimits,
    FileListOptions, FileName, FileOp, FilePage, FileWrite, FilesService, FilesUsage,
    ServiceContext, ServiceError, ServiceEventEmitter, UnitOfWork,
};
use sha2::{Digest, Sha256};

use crate::memory::{lock, now};
use crate::outbox::InMemoryTx;

type Files = BTreeMap<(AppId, CollectionName, FileName), (FileInfo, Bytes)>;

/// Files in memory; every change emits its event through the emitter it was given.
pub struct InMemoryFilesService {
    files: Arc<Mutex<Files>>,
    emitter: Arc<dyn ServiceEventEmitter<InMemoryTx>>,
    limits: FileLimits,
}

impl fmt::Debug for InMemoryFilesService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryFilesService")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl InMemoryFilesService {
    /// An empty store whose changes emit through `emitter`, refusing what `limits` do
    /// not allow.
    pub fn new(emitter: Arc<dyn ServiceEventEmitter<InMemoryTx>>, limits: FileLimits) -> Self {
        Self {
            files: Arc::default(),
            emitter,
            limits,
        }
    }

    fn used(&self, app: AppId) -> u64 {
        lock(&self.files)
            .iter()
            .filter(|((owner, _, _), _)| *owner == app)
            .map(|(_, (info, _))| info.size)
            .sum()
    }

    fn current(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
    ) -> Option<(FileInfo, Bytes)> {
        lock(&self.files)
            .get(&(ctx.app_id, collection.clone(), name.clone()))
            .cloned()
    }
}

/// The body, up to `budget` bytes; `None` past it.
async fn collect(mut body: ByteStream, budget: u64) -> Result<Option<Vec<u8>>, std::io::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk?);
        if bytes.len() as u64 > budget {
            return Ok(None);
        }
    }
    Ok(Some(bytes))
}

#[async_trait]
impl FilesService for InMemoryFilesService {
    async fn head(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
    ) -> Result<Option<FileInfo>, ServiceError> {
        authorize_files_read(ctx)?;
        Ok(self.current(ctx, collection, name).map(|(info, _)| info))
    }

    async fn open(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
    ) -> Result<Option<FileDownload>, ServiceError> {
        authorize_files_read(ctx)?;
        Ok(self
            .current(ctx, collection, name)
            .map(|(info, bytes)| FileDownload {
                info,
                body: Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
            }))
    }

    async fn write(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
        write: FileWrite,
        body: ByteStream,
    ) -> Result<FileInfo, ServiceError> {
        authorize_files_write(ctx)?;
        let existing = self.current(ctx, collection, name).map(|(info, _)| info);
        if let Some(refusal) = mode_refusal(write.mode, collection, name, existing.is_some()) {
            return Err(refusal);
        }
        let used = self.used(ctx.app_id);
        let replaced = existing.as_ref().map_or(0, |info| info.size);
        if let Some(size) = write.expected_size {
            self.limits.check(name, size, used, replaced)?;
        }
        let budget = self.limits.write_budget(used, replaced);
        let bytes = collect(body, budget)
            .await
            .map_err(|err| {
                ServiceError::InvalidArgument(format!(
                    "the bytes of file '{name}' could not be read: {err}"
                ))
            })?
            .ok_or_else(|| {
                // Past the budget: the same refusal the full size would get.
                match self
                    .limits
                    .check(name, budget.saturating_add(1), used, replaced)
                {
                    Err(err) => err,
                    Ok(()) => ServiceError::Internal("a write past its budget fit".to_owned()),
                }
            })?;
        let size = bytes.len() as u64;
        self.limits.check(name, size, used, replaced)?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let at = now();
        let info = FileInfo {
            collection: collection.clone(),
            name: name.clone(),
            size,
            content_type: write
                .content_type
                .clone()
                .unwrap_or_else(ContentType::octet_stream),
            sha256: sha256_hex(&digest),
            metadata: write.metadata.clone(),
            version: existing.as_ref().map_or(1, |old| old.version + 1),
            created_at: existing.as_ref().map_or(at, |old| old.created_at),
            updated_at: at,
        };
        let op = if existing.is_some() {
            FileOp::Update
        } else {
            FileOp::Create
        };
        let mut change = UnitOfWork::new(InMemoryTx::new(), self.emitter.as_ref());
        let (files, id, stored) = (
            Arc::clone(&self.files),
            (ctx.app_id, collection.clone(), name.clone()),
            (info.clone(), Bytes::from(bytes)),
        );
        change.tx().stage(move || {
            lock(&files).insert(id, stored);
        });
        change
            .emit(&file_event(ctx, collection, name, op, Some(&info)))
            .await?;
        change.commit().await?;
        Ok(info)
    }

    async fn delete(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
    ) -> Result<bool, ServiceError> {
        authorize_files_write(ctx)?;
        if self.current(ctx, collection, name).is_none() {
            return Ok(false);
        }
        let mut change = UnitOfWork::new(InMemoryTx::new(), self.emitter.as_ref());
        let (files, id) = (
            Arc::clone(&self.files),
            (ctx.app_id, collection.clone(), name.clone()),
        );
        change.tx().stage(move || {
            lock(&files).remove(&id);
        });
        change
            .emit(&file_event(ctx, collection, name, FileOp::Delete, None))
            .await?;
        change.commit().await?;
        Ok(true)
    }

    async fn list(
        &self,
        ctx: &ServiceContext,
        options: FileListOptions,
    ) -> Result<FilePage, ServiceError> {
        authorize_files_read(ctx)?;
        let bounds = options.bounds()?;
        let limit = usize::try_from(bounds.limit).unwrap_or(usize::MAX);
        let files: Vec<FileInfo> = lock(&self.files)
            .iter()
            .filter(|((app, collection, name), _)| {
                *app == ctx.app_id && bounds.contains(collection.as_str(), name.as_str())
            })
            .take(limit + 1)
            .map(|(_, (info, _))| info.clone())
            .collect();
        Ok(FilePage::from_overfetch(files, bounds.limit))
    }

    async fn usage(&self, ctx: &ServiceContext) -> Result<FilesUsage, ServiceError> {
        authorize_files_read(ctx)?;
        let files = lock(&self.files);
        let mine = files.iter().filter(|((app, _, _), _)| *app == ctx.app_id);
        let (count, bytes) = mine.fold((0_u64, 0_u64), |(count, bytes), (_, (info, _))| {
            (count + 1, bytes + info.size)
        });
        Ok(FilesUsage {
            files: count,
            bytes,
            quota_bytes: self.limits.app_quota_bytes,
        })
    }
}
