//! The `FilesService` suite, written once and run against both implementations: the
//! in-memory one always, the PostgreSQL one (with the filesystem blob store in a fresh
//! temporary directory) against a fresh database per test (from `DATABASE_URL`; the tests
//! fail when it is unset). `fs_store` covers what only the real store has: the write
//! sequence under injected crashes, permissions, corruption, a full disk and the sweep.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions fail loudly on the first surprise too"
)]

mod fs_store;
mod suite;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use picloud_manager_core::files::{FsBlobStore, InMemoryFilesService, PgFilesService};
use picloud_manager_core::outbox::RecordingEmitter;
use picloud_shared::{
    AppId, ByteStream, CollectionName, FileLimits, FileMetadata, FileName, FileWrite, FilesService,
    ServiceEvent, WriteMode,
};
use sqlx::PgPool;

pub use picloud_testkit::services::{principal, run_as, script_ctx};

/// The limits the suite runs under: small enough to reach in a test.
pub const LIMITS: FileLimits = FileLimits {
    max_file_bytes: 64 * 1024,
    app_quota_bytes: 160 * 1024,
};

/// A service under test and what it emitted.
#[expect(
    missing_debug_implementations,
    reason = "a test harness, never printed"
)]
pub struct Files {
    pub service: Arc<dyn FilesService>,
    emitter: Arc<RecordingEmitter>,
    backend: Backend,
}

enum Backend {
    Memory,
    Postgres {
        pool: PgPool,
        _root: tempfile::TempDir,
    },
}

impl Files {
    pub fn in_memory() -> Self {
        let emitter = Arc::new(RecordingEmitter::default());
        Self {
            service: Arc::new(InMemoryFilesService::new(emitter.clone(), LIMITS)),
            emitter,
            backend: Backend::Memory,
        }
    }

    pub fn postgres(pool: PgPool) -> Self {
        let emitter = Arc::new(RecordingEmitter::default());
        let root = tempfile::tempdir().unwrap();
        let blobs = Arc::new(FsBlobStore::open(root.path()).unwrap());
        Self {
            service: Arc::new(PgFilesService::new(
                pool.clone(),
                emitter.clone(),
                blobs,
                LIMITS,
            )),
            emitter,
            backend: Backend::Postgres { pool, _root: root },
        }
    }

    /// Every event emitted so far, oldest first.
    pub fn events(&self) -> Vec<ServiceEvent> {
        self.emitter.events()
    }

    /// An app to keep files in (a row in `apps` for PostgreSQL).
    pub async fn add_app(&self, slug: &str) -> AppId {
        let id = AppId::new();
        if let Backend::Postgres { pool, .. } = &self.backend {
            add_app_row(pool, id, slug).await;
        }
        id
    }
}

pub async fn add_app_row(pool: &PgPool, id: AppId, slug: &str) {
    sqlx::query("INSERT INTO apps (id, slug, name) VALUES ($1, $2, 'Test app')")
        .bind(id.as_uuid())
        .bind(slug)
        .execute(pool)
        .await
        .unwrap();
}

pub fn coll(raw: &str) -> CollectionName {
    CollectionName::parse(raw).unwrap()
}

pub fn name(raw: &str) -> FileName {
    FileName::parse(raw).unwrap()
}

/// `bytes` as one chunk.
pub fn body(bytes: &[u8]) -> ByteStream {
    let bytes = Bytes::copy_from_slice(bytes);
    Box::pin(futures_util::stream::once(async move { Ok(bytes) }))
}

/// `bytes` in chunks of `chunk` bytes.
pub fn chunked(bytes: &[u8], chunk: usize) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = bytes
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures_util::stream::iter(chunks))
}

/// A write in `mode` with no content type, metadata or announced size.
pub fn plain(mode: WriteMode) -> FileWrite {
    FileWrite {
        mode,
        content_type: None,
        metadata: FileMetadata::default(),
        expected_size: None,
    }
}

/// Every regular file under `root`, recursively.
pub fn files_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

picloud_testkit::backend_suite!(
    memory: Files::in_memory(),
    postgres(migrator = "picloud_manager_core::MIGRATOR"): |pool| Files::postgres(pool);
    suite::a_written_file_reads_back_with_its_metadata_and_a_rewrite_is_a_new_version,
    suite::modes_refuse_a_create_over_a_file_and_an_update_of_none,
    suite::delete_says_whether_the_file_existed_and_only_a_real_delete_emits,
    suite::lists_are_in_collection_and_name_order_filtered_and_paged,
    suite::the_file_limit_and_the_quota_refuse_writes_and_keep_nothing,
    suite::an_announced_size_over_a_limit_is_refused_before_a_byte_is_read,
    suite::one_apps_context_never_reaches_another_apps_files,
    suite::a_principal_needs_the_role_and_scope_for_each_call,
    suite::events_carry_metadata_never_bytes_and_the_runs_depth_plus_one,
);
