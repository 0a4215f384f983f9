//! The filesystem blob store under the PostgreSQL service: the write sequence with a crash
//! injected after each step, the permissions of what it creates, corruption found on read,
//! a full disk, a reader streaming a version while it is replaced, and the sweep.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use picloud_manager_core::files::{BlobStore, FileSweeper, FsBlobStore, PgFilesService, WriteStep};
use picloud_manager_core::outbox::RecordingEmitter;
use picloud_shared::files::{corruption, read_to_vec};
use picloud_shared::{AppId, FileLimits, FilesService, ServiceError, WriteMode};
use sqlx::PgPool;

use crate::{add_app_row, body, chunked, coll, files_under, name, plain, script_ctx};

struct Fixture {
    pool: PgPool,
    root: tempfile::TempDir,
    app: AppId,
}

impl Fixture {
    async fn new(pool: PgPool) -> Self {
        let app = AppId::new();
        add_app_row(&pool, app, "shop").await;
        Self {
            pool,
            root: tempfile::tempdir().unwrap(),
            app,
        }
    }

    fn store(&self) -> FsBlobStore {
        FsBlobStore::open(self.root.path()).unwrap()
    }

    fn service_over(&self, store: FsBlobStore, limits: FileLimits) -> PgFilesService {
        PgFilesService::new(
            self.pool.clone(),
            Arc::new(RecordingEmitter::default()),
            Arc::new(store),
            limits,
        )
    }

    fn service(&self) -> PgFilesService {
        self.service_over(self.store(), FileLimits::default())
    }

    fn sweeper(&self) -> FileSweeper {
        FileSweeper::new(self.pool.clone(), Arc::new(self.store()), Duration::ZERO)
    }

    /// The file holding the bytes of the one stored version of `n`.
    async fn blob_path(&self, n: &str) -> PathBuf {
        let key: String = sqlx::query_scalar("SELECT blob_key FROM files WHERE name = $1")
            .bind(n)
            .fetch_one(&self.pool)
            .await
            .unwrap();
        self.root.path().join(&key[..2]).join(&key[2..4]).join(&key)
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn what_the_store_creates_only_its_owner_can_reach(pool: PgPool) {
    let fx = Fixture::new(pool).await;
    std::fs::set_permissions(fx.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let service = fx.service();
    service
        .write(
            &script_ctx(fx.app),
            &coll("c"),
            &name("a"),
            plain(WriteMode::Create),
            body(b"x"),
        )
        .await
        .unwrap();
    assert_eq!(mode(fx.root.path()), 0o700, "an existing root is narrowed");
    let blob = fx.blob_path("a").await;
    assert_eq!(mode(&blob), 0o600);
    assert_eq!(mode(blob.parent().unwrap()), 0o700);
    assert_eq!(mode(blob.parent().unwrap().parent().unwrap()), 0o700);
    // The name never reaches the disk: the path is the server's key.
    assert!(!blob.to_string_lossy().contains("/a/"));
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_crash_after_any_step_of_a_write_leaves_the_old_file_and_the_sweep_cleans_up(
    pool: PgPool,
) {
    let fx = Fixture::new(pool).await;
    let ctx = script_ctx(fx.app);
    fx.service()
        .write(
            &ctx,
            &coll("c"),
            &name("kept"),
            plain(WriteMode::Create),
            body(b"old bytes"),
        )
        .await
        .unwrap();
    let steps = [
        WriteStep::TempCreated,
        WriteStep::BytesWritten,
        WriteStep::Synced,
        WriteStep::Renamed,
        WriteStep::DirSynced,
    ];
    for step in steps {
        let crashing = fx.service_over(fx.store().crash_after(step), FileLimits::default());
        // A new file and an update of an existing one, each stopped at this step.
        for target in ["new", "kept"] {
            let err = crashing
                .write(
                    &ctx,
                    &coll("c"),
                    &name(target),
                    plain(WriteMode::Upsert),
                    body(b"new bytes"),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(err, ServiceError::Internal(_)),
                "{step:?}: {err:?}"
            );
        }
        let service = fx.service();
        assert_eq!(
            service.head(&ctx, &coll("c"), &name("new")).await.unwrap(),
            None,
            "{step:?}: a crashed write is invisible"
        );
        let kept = service
            .open(&ctx, &coll("c"), &name("kept"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept.info.version, 1, "{step:?}");
        assert_eq!(
            read_to_vec(kept, u64::MAX, "kept").await.unwrap(),
            b"old bytes"
        );
    }
    // Every crash left something on disk: two temporary files or blobs per step.
    assert_eq!(files_under(fx.root.path()).len(), 1 + 2 * steps.len());
    let report = fx.sweeper().sweep().await.unwrap();
    assert_eq!(
        report.stale_uploads_removed,
        2 * 3,
        "temp files of the first three steps"
    );
    assert_eq!(
        report.orphan_blobs_removed,
        2 * 2,
        "renamed blobs of the last two"
    );
    assert_eq!(report.missing_total, 0);
    assert_eq!(files_under(fx.root.path()), [fx.blob_path("kept").await]);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_refused_commit_removes_the_new_bytes_and_keeps_the_old(pool: PgPool) {
    let fx = Fixture::new(pool).await;
    let ctx = script_ctx(fx.app);
    let service = fx.service();
    service
        .write(
            &ctx,
            &coll("c"),
            &name("a"),
            plain(WriteMode::Create),
            body(b"first"),
        )
        .await
        .unwrap();
    // A create over an existing file is refused before a byte is stored.
    let blocked = service
        .write(
            &ctx,
            &coll("c"),
            &name("a"),
            plain(WriteMode::Create),
            body(b"second"),
        )
        .await
        .unwrap_err();
    assert!(matches!(blocked, ServiceError::Conflict(_)));
    // Deleting the app under a write fails its row's foreign key.
    let gone = AppId::new();
    let err = service
        .write(
            &script_ctx(gone),
            &coll("c"),
            &name("x"),
            plain(WriteMode::Create),
            body(b"orphan"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::InvalidArgument(_)), "{err:?}");
    assert_eq!(err.to_string(), format!("app {gone} not found"));
    assert_eq!(files_under(fx.root.path()), [fx.blob_path("a").await]);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_flipped_byte_on_disk_fails_reads_as_corrupted(pool: PgPool) {
    let fx = Fixture::new(pool).await;
    let ctx = script_ctx(fx.app);
    let service = fx.service();
    let small = b"small and precious".to_vec();
    let large: Vec<u8> = (0..700_000_u32).map(|i| (i % 253) as u8).collect();
    for (n, bytes) in [("small", &small), ("large", &large)] {
        service
            .write(
                &ctx,
                &coll("c"),
                &name(n),
                plain(WriteMode::Create),
                chunked(bytes, 65536),
            )
            .await
            .unwrap();
        let path = fx.blob_path(n).await;
        let mut stored = std::fs::read(&path).unwrap();
        let at = stored.len() / 2;
        stored[at] ^= 0x01;
        std::fs::write(&path, &stored).unwrap();
    }
    let download = service
        .open(&ctx, &coll("c"), &name("small"))
        .await
        .unwrap()
        .unwrap();
    let err = read_to_vec(download, u64::MAX, "small").await.unwrap_err();
    assert_eq!(
        err,
        ServiceError::Corrupted(
            "file 'small' in collection 'c' is corrupted: its stored bytes do not match their checksum"
                .to_owned()
        )
    );
    // Streamed: the chunks before the last go out, the last never does.
    let mut body = service
        .open(&ctx, &coll("c"), &name("large"))
        .await
        .unwrap()
        .unwrap()
        .body;
    let mut received = 0;
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => received += chunk.len(),
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    let failure = failure.expect("the stream ends with an error");
    assert!(corruption(&failure).is_some(), "{failure}");
    assert!(received < large.len(), "never all of a wrong file");
    assert!(body.next().await.is_none(), "nothing after the error");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn bytes_gone_from_disk_are_reported_and_read_as_corrupted(pool: PgPool) {
    let fx = Fixture::new(pool).await;
    let ctx = script_ctx(fx.app);
    let service = fx.service();
    service
        .write(
            &ctx,
            &coll("c"),
            &name("lost"),
            plain(WriteMode::Create),
            body(b"bytes"),
        )
        .await
        .unwrap();
    std::fs::remove_file(fx.blob_path("lost").await).unwrap();
    let err = service
        .open(&ctx, &coll("c"), &name("lost"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ServiceError::Corrupted(
            "file 'lost' in collection 'c' is corrupted: its stored bytes are missing".to_owned()
        )
    );
    let sweeper = fx.sweeper();
    assert_eq!(sweeper.last_report(), None);
    let report = sweeper.sweep().await.unwrap();
    assert_eq!((report.files_checked, report.missing_total), (1, 1));
    assert_eq!(report.missing[0].name, "lost");
    assert_eq!(report.missing[0].app_id, fx.app);
    assert_eq!(sweeper.last_report(), Some(report));
    // Deleting the file is how an operator clears it.
    assert!(
        service
            .delete(&ctx, &coll("c"), &name("lost"))
            .await
            .unwrap()
    );
    assert_eq!(sweeper.sweep().await.unwrap().missing_total, 0);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_reader_streaming_a_version_while_it_is_replaced_gets_all_of_it(pool: PgPool) {
    let fx = Fixture::new(pool).await;
    let ctx = script_ctx(fx.app);
    let service = fx.service();
    let old: Vec<u8> = vec![b'o'; 900_000];
    service
        .write(
            &ctx,
            &coll("c"),
            &name("f"),
            plain(WriteMode::Create),
            chunked(&old, 65536),
        )
        .await
        .unwrap();
    let mut body = service
        .open(&ctx, &coll("c"), &name("f"))
        .await
        .unwrap()
        .unwrap()
        .body;
    let mut received = body.next().await.unwrap().unwrap().to_vec();
    let new = vec![b'n'; 500_000];
    service
        .write(
            &ctx,
            &coll("c"),
            &name("f"),
            plain(WriteMode::Update),
            chunked(&new, 65536),
        )
        .await
        .unwrap();
    while let Some(chunk) = body.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(received, old, "the old version, whole and checked");
    let now = service
        .open(&ctx, &coll("c"), &name("f"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read_to_vec(now, u64::MAX, "f").await.unwrap(), new);
    assert_eq!(files_under(fx.root.path()).len(), 1, "the old blob is gone");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn concurrent_writes_never_both_fit_under_a_quota_that_holds_one(pool: PgPool) {
    let fx = Fixture::new(pool).await;
    let limits = FileLimits {
        max_file_bytes: 1024,
        app_quota_bytes: 1500,
    };
    let service = Arc::new(fx.service_over(fx.store(), limits));
    let writes = (0..8).map(|i| {
        let service = service.clone();
        let ctx = script_ctx(fx.app);
        tokio::spawn(async move {
            service
                .write(
                    &ctx,
                    &coll("c"),
                    &name(&format!("f{i}")),
                    plain(WriteMode::Create),
                    body(&[1; 1000]),
                )
                .await
        })
    });
    let outcomes = futures_util::future::join_all(writes).await;
    let written = outcomes
        .iter()
        .filter(|o| o.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(written, 1);
    for outcome in outcomes {
        if let Err(err) = outcome.unwrap() {
            assert!(matches!(err, ServiceError::QuotaExceeded(_)), "{err:?}");
        }
    }
    assert_eq!(
        files_under(fx.root.path()).len(),
        1,
        "refused bytes are removed"
    );
}

/// A 1 MiB tmpfs mounted for one test, unmounted after it.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path) -> Self {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a 1 MiB tmpfs needs root (the suite runs as root)"
        );
        Self(dir.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_full_disk_is_a_clear_error_and_leaves_nothing(pool: PgPool) {
    let fx = Fixture::new(pool).await;
    let mount = fx.root.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let _disk = SmallDisk::mount(&mount);
    let service = fx.service_over(FsBlobStore::open(&mount).unwrap(), FileLimits::default());
    let ctx = script_ctx(fx.app);
    let fits = vec![1_u8; 300 * 1024];
    service
        .write(
            &ctx,
            &coll("c"),
            &name("fits"),
            plain(WriteMode::Create),
            chunked(&fits, 65536),
        )
        .await
        .unwrap();
    let too_big = vec![2_u8; 2 * 1024 * 1024];
    let err = service
        .write(
            &ctx,
            &coll("c"),
            &name("big"),
            plain(WriteMode::Create),
            chunked(&too_big, 65536),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ServiceError::StorageFull("there is no room left to store file 'big'".to_owned())
    );
    assert_eq!(
        err.to_string(),
        "storage is full: there is no room left to store file 'big'"
    );
    assert_eq!(
        service.head(&ctx, &coll("c"), &name("big")).await.unwrap(),
        None
    );
    let left = files_under(&mount);
    assert_eq!(left.len(), 1, "only the file that fit: {left:?}");
    // The disk has room again once the failed write's bytes are gone.
    service
        .write(
            &ctx,
            &coll("c"),
            &name("after"),
            plain(WriteMode::Create),
            chunked(&fits, 65536),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_store_lists_only_finished_blobs_older_than_the_cutoff() {
    let root = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(root.path()).unwrap();
    let blob = store.put(body(b"abc"), 10).await.unwrap();
    // Something that is not the store's, which the sweep must leave alone.
    std::fs::write(root.path().join("README"), "not a blob").unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    let (keys, next) = store.list_older_than(None, later).await.unwrap();
    assert_eq!((keys, next), (vec![blob.key.clone()], None));
    let earlier = std::time::SystemTime::now() - Duration::from_secs(60);
    assert!(
        store
            .list_older_than(None, earlier)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    assert!(store.exists(&blob.key).await.unwrap());
    store.remove(&blob.key).await.unwrap();
    store.remove(&blob.key).await.unwrap();
    assert!(!store.exists(&blob.key).await.unwrap());
    let err = store.put(body(b"0123456789a"), 10).await.unwrap_err();
    assert_eq!(err.to_string(), "the body is over the limit of 10 bytes");
    assert_eq!(files_under(root.path()), [root.path().join("README")]);
}
