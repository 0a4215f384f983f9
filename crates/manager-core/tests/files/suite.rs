//! The suite every `FilesService` implementation passes.

use std::collections::BTreeMap;

use picloud_shared::files::{read_to_vec, sha256_hex};
use picloud_shared::{
    AppRole, ContentType, EventSubject, FileListOptions, FileMetadata, FileOp, FileWrite, Scope,
    ServiceError, ServiceEvent, WriteMode,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Files, LIMITS, body, chunked, coll, name, plain, principal, run_as, script_ctx};

/// `(op, collection, name, file)` of each event.
fn changes(events: &[ServiceEvent]) -> Vec<(FileOp, String, String, Option<Value>)> {
    events
        .iter()
        .map(|e| {
            let EventSubject::Files {
                collection,
                name,
                op,
                file,
            } = &e.subject
            else {
                panic!("the files service emitted a {} event", e.subject.kind());
            };
            (*op, collection.clone(), name.clone(), file.clone())
        })
        .collect()
}

async fn read(
    files: &Files,
    ctx: &picloud_shared::ServiceContext,
    c: &str,
    n: &str,
) -> Option<Vec<u8>> {
    let download = files.service.open(ctx, &coll(c), &name(n)).await.unwrap()?;
    Some(read_to_vec(download, u64::MAX, "a file").await.unwrap())
}

fn names(page: &picloud_shared::FilePage) -> Vec<String> {
    page.files
        .iter()
        .map(|f| format!("{}/{}", f.collection, f.name))
        .collect()
}

pub async fn a_written_file_reads_back_with_its_metadata_and_a_rewrite_is_a_new_version(
    files: Files,
) {
    let app = files.add_app("shop").await;
    let ctx = script_ctx(app);
    let avatars = coll("avatars");
    assert_eq!(
        files
            .service
            .head(&ctx, &avatars, &name("ada.png"))
            .await
            .unwrap(),
        None
    );
    let bytes: Vec<u8> = (0..40_000_u32).map(|i| (i % 251) as u8).collect();
    let write = FileWrite {
        mode: WriteMode::Create,
        content_type: Some(ContentType::parse("image/png").unwrap()),
        metadata: FileMetadata::new(BTreeMap::from([("owner".to_owned(), "ada".to_owned())]))
            .unwrap(),
        expected_size: Some(bytes.len() as u64),
    };
    let created = files
        .service
        .write(
            &ctx,
            &avatars,
            &name("ada.png"),
            write,
            chunked(&bytes, 7000),
        )
        .await
        .unwrap();
    assert_eq!(created.size, 40_000);
    assert_eq!(created.version, 1);
    assert_eq!(created.content_type.as_str(), "image/png");
    assert_eq!(created.sha256, sha256_hex(&Sha256::digest(&bytes).into()));
    assert_eq!(created.metadata.entries()["owner"], "ada");
    assert_eq!(
        files
            .service
            .head(&ctx, &avatars, &name("ada.png"))
            .await
            .unwrap(),
        Some(created.clone())
    );
    assert_eq!(read(&files, &ctx, "avatars", "ada.png").await, Some(bytes));

    let replaced = files
        .service
        .write(
            &ctx,
            &avatars,
            &name("ada.png"),
            plain(WriteMode::Upsert),
            body(b"tiny"),
        )
        .await
        .unwrap();
    assert_eq!(replaced.version, 2);
    assert_eq!(replaced.created_at, created.created_at);
    assert!(replaced.updated_at >= created.updated_at);
    assert_eq!(replaced.content_type.as_str(), "application/octet-stream");
    assert!(
        replaced.metadata.entries().is_empty(),
        "a rewrite replaces the metadata"
    );
    assert_eq!(
        read(&files, &ctx, "avatars", "ada.png").await,
        Some(b"tiny".to_vec())
    );
    let empty = files
        .service
        .write(
            &ctx,
            &avatars,
            &name("empty"),
            plain(WriteMode::Create),
            body(b""),
        )
        .await
        .unwrap();
    assert_eq!(empty.size, 0);
    assert_eq!(
        read(&files, &ctx, "avatars", "empty").await,
        Some(Vec::new())
    );
}

pub async fn modes_refuse_a_create_over_a_file_and_an_update_of_none(files: Files) {
    let app = files.add_app("shop").await;
    let ctx = script_ctx(app);
    let docs = coll("docs");
    let err = files
        .service
        .write(
            &ctx,
            &docs,
            &name("a"),
            plain(WriteMode::Update),
            body(b"x"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ServiceError::NotFound("file 'a' not found in collection 'docs'".to_owned())
    );
    files
        .service
        .write(
            &ctx,
            &docs,
            &name("a"),
            plain(WriteMode::Create),
            body(b"first"),
        )
        .await
        .unwrap();
    let err = files
        .service
        .write(
            &ctx,
            &docs,
            &name("a"),
            plain(WriteMode::Create),
            body(b"second"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ServiceError::Conflict("file 'a' already exists in collection 'docs'".to_owned())
    );
    assert_eq!(
        read(&files, &ctx, "docs", "a").await,
        Some(b"first".to_vec())
    );
    let updated = files
        .service
        .write(
            &ctx,
            &docs,
            &name("a"),
            plain(WriteMode::Update),
            body(b"third"),
        )
        .await
        .unwrap();
    assert_eq!(updated.version, 2);
    let ops: Vec<FileOp> = changes(&files.events()).into_iter().map(|c| c.0).collect();
    assert_eq!(
        ops,
        [FileOp::Create, FileOp::Update],
        "refused writes emit nothing"
    );
}

pub async fn delete_says_whether_the_file_existed_and_only_a_real_delete_emits(files: Files) {
    let app = files.add_app("shop").await;
    let ctx = script_ctx(app);
    let docs = coll("docs");
    assert!(!files.service.delete(&ctx, &docs, &name("a")).await.unwrap());
    assert!(files.events().is_empty());
    files
        .service
        .write(
            &ctx,
            &docs,
            &name("a"),
            plain(WriteMode::Create),
            body(b"x"),
        )
        .await
        .unwrap();
    assert!(files.service.delete(&ctx, &docs, &name("a")).await.unwrap());
    assert!(!files.service.delete(&ctx, &docs, &name("a")).await.unwrap());
    assert_eq!(
        files.service.head(&ctx, &docs, &name("a")).await.unwrap(),
        None
    );
    assert!(
        files
            .service
            .open(&ctx, &docs, &name("a"))
            .await
            .unwrap()
            .is_none()
    );
    let changes = changes(&files.events());
    assert_eq!(changes.len(), 2);
    assert_eq!(
        changes[1],
        (FileOp::Delete, "docs".into(), "a".into(), None)
    );
    assert_eq!(files.service.usage(&ctx).await.unwrap().files, 0);
}

pub async fn lists_are_in_collection_and_name_order_filtered_and_paged(files: Files) {
    let app = files.add_app("shop").await;
    let ctx = script_ctx(app);
    for (c, n) in [
        ("b", "x"),
        ("a", "z/1"),
        ("a", "y"),
        ("a", "z/2"),
        ("c", "z/3"),
    ] {
        files
            .service
            .write(
                &ctx,
                &coll(c),
                &name(n),
                plain(WriteMode::Create),
                body(b"."),
            )
            .await
            .unwrap();
    }
    let all = files
        .service
        .list(&ctx, FileListOptions::default())
        .await
        .unwrap();
    assert_eq!(names(&all), ["a/y", "a/z/1", "a/z/2", "b/x", "c/z/3"]);
    assert_eq!(all.next_cursor, None);
    let only_a = FileListOptions {
        collection: Some(coll("a")),
        prefix: Some("z/".to_owned()),
        ..FileListOptions::default()
    };
    assert_eq!(
        names(&files.service.list(&ctx, only_a).await.unwrap()),
        ["a/z/1", "a/z/2"]
    );
    let prefixed = FileListOptions {
        prefix: Some("z".to_owned()),
        ..FileListOptions::default()
    };
    assert_eq!(
        names(&files.service.list(&ctx, prefixed).await.unwrap()),
        ["a/z/1", "a/z/2", "c/z/3"]
    );
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = files
            .service
            .list(
                &ctx,
                FileListOptions {
                    limit: 2,
                    cursor: cursor.clone(),
                    ..FileListOptions::default()
                },
            )
            .await
            .unwrap();
        assert!(page.files.len() <= 2);
        seen.extend(names(&page));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, names(&all));
    let err = files
        .service
        .list(
            &ctx,
            FileListOptions {
                limit: 0,
                ..FileListOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "limit must be between 1 and 1000, not 0");
}

pub async fn the_file_limit_and_the_quota_refuse_writes_and_keep_nothing(files: Files) {
    let app = files.add_app("shop").await;
    let ctx = script_ctx(app);
    let docs = coll("docs");
    let max = usize::try_from(LIMITS.max_file_bytes).unwrap();
    let fits = vec![7_u8; max];
    files
        .service
        .write(
            &ctx,
            &docs,
            &name("full"),
            plain(WriteMode::Create),
            chunked(&fits, 5000),
        )
        .await
        .unwrap();
    let over = vec![7_u8; max + 1];
    let err = files
        .service
        .write(
            &ctx,
            &docs,
            &name("over"),
            plain(WriteMode::Create),
            chunked(&over, 5000),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::TooLarge { limit, .. } if limit == max),
        "{err:?}"
    );
    assert_eq!(
        files
            .service
            .head(&ctx, &docs, &name("over"))
            .await
            .unwrap(),
        None
    );

    // 64 KiB used of 160: a second full file fits, a third does not.
    files
        .service
        .write(
            &ctx,
            &docs,
            &name("second"),
            plain(WriteMode::Create),
            body(&fits),
        )
        .await
        .unwrap();
    let err = files
        .service
        .write(
            &ctx,
            &docs,
            &name("third"),
            plain(WriteMode::Create),
            chunked(&fits, 5000),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::QuotaExceeded(_)), "{err:?}");
    assert_eq!(
        files
            .service
            .head(&ctx, &docs, &name("third"))
            .await
            .unwrap(),
        None
    );
    let usage = files.service.usage(&ctx).await.unwrap();
    assert_eq!((usage.files, usage.bytes), (2, 2 * LIMITS.max_file_bytes));
    assert_eq!(usage.quota_bytes, LIMITS.app_quota_bytes);

    // Replacing a file frees its bytes first: a rewrite of the same size fits.
    files
        .service
        .write(
            &ctx,
            &docs,
            &name("second"),
            plain(WriteMode::Update),
            body(&fits),
        )
        .await
        .unwrap();
    let ops = changes(&files.events()).len();
    assert_eq!(ops, 3, "refused writes emit nothing");
}

/// A body that must never be read.
fn unread() -> picloud_shared::ByteStream {
    Box::pin(futures_util::stream::poll_fn(|_| {
        panic!("a body announced over its limit was read")
    }))
}

pub async fn an_announced_size_over_a_limit_is_refused_before_a_byte_is_read(files: Files) {
    let app = files.add_app("shop").await;
    let ctx = script_ctx(app);
    let announced = |size: u64| FileWrite {
        expected_size: Some(size),
        ..plain(WriteMode::Upsert)
    };
    let err = files
        .service
        .write(
            &ctx,
            &coll("c"),
            &name("big"),
            announced(LIMITS.max_file_bytes + 1),
            unread(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::TooLarge { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "file 'big' is 65537 bytes, over the limit of 65536 bytes"
    );
    for n in ["a", "b"] {
        files
            .service
            .write(
                &ctx,
                &coll("c"),
                &name(n),
                plain(WriteMode::Create),
                body(&[0; 65536]),
            )
            .await
            .unwrap();
    }
    let err = files
        .service
        .write(
            &ctx,
            &coll("c"),
            &name("d"),
            announced(32 * 1024 + 1),
            unread(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::QuotaExceeded(_)), "{err:?}");
}

pub async fn one_apps_context_never_reaches_another_apps_files(files: Files) {
    let shop = files.add_app("shop").await;
    let blog = files.add_app("blog").await;
    let (shop_ctx, blog_ctx) = (script_ctx(shop), script_ctx(blog));
    let docs = coll("docs");
    files
        .service
        .write(
            &shop_ctx,
            &docs,
            &name("secret"),
            plain(WriteMode::Create),
            body(b"shop's"),
        )
        .await
        .unwrap();
    assert_eq!(
        files
            .service
            .head(&blog_ctx, &docs, &name("secret"))
            .await
            .unwrap(),
        None
    );
    assert!(
        files
            .service
            .open(&blog_ctx, &docs, &name("secret"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        files
            .service
            .list(&blog_ctx, FileListOptions::default())
            .await
            .unwrap()
            .files
            .is_empty()
    );
    assert!(
        !files
            .service
            .delete(&blog_ctx, &docs, &name("secret"))
            .await
            .unwrap()
    );
    let err = files
        .service
        .write(
            &blog_ctx,
            &docs,
            &name("secret"),
            plain(WriteMode::Update),
            body(b"blog's"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::NotFound(_)));
    // Writing the same name in the other app makes that app's own file.
    let blogs = files
        .service
        .write(
            &blog_ctx,
            &docs,
            &name("secret"),
            plain(WriteMode::Create),
            body(b"blog's"),
        )
        .await
        .unwrap();
    assert_eq!(blogs.version, 1);
    assert_eq!(
        read(&files, &shop_ctx, "docs", "secret").await,
        Some(b"shop's".to_vec())
    );
    assert_eq!(files.service.usage(&blog_ctx).await.unwrap().bytes, 6);
    // A context of one app naming another's capability is refused outright.
    let mut forged = shop_ctx.clone();
    forged.run_as = Some(principal(&[(blog, AppRole::Owner)], &Scope::ALL));
    let err = files
        .service
        .head(&forged, &docs, &name("secret"))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Forbidden(_)), "{err:?}");
}

pub async fn a_principal_needs_the_role_and_scope_for_each_call(files: Files) {
    let app = files.add_app("shop").await;
    let docs = coll("docs");
    files
        .service
        .write(
            &script_ctx(app),
            &docs,
            &name("a"),
            plain(WriteMode::Create),
            body(b"x"),
        )
        .await
        .unwrap();
    let viewer = run_as(app, principal(&[(app, AppRole::Viewer)], &Scope::ALL));
    assert!(
        files
            .service
            .head(&viewer, &docs, &name("a"))
            .await
            .unwrap()
            .is_some()
    );
    let err = files
        .service
        .write(
            &viewer,
            &docs,
            &name("a"),
            plain(WriteMode::Upsert),
            body(b"y"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Forbidden(_)), "{err:?}");
    assert!(
        files
            .service
            .delete(&viewer, &docs, &name("a"))
            .await
            .is_err()
    );
    let no_read = run_as(
        app,
        principal(&[(app, AppRole::Owner)], &[Scope::DataWrite]),
    );
    assert!(
        files
            .service
            .list(&no_read, FileListOptions::default())
            .await
            .is_err()
    );
    let writer = run_as(
        app,
        principal(&[(app, AppRole::Developer)], &[Scope::DataWrite]),
    );
    files
        .service
        .write(
            &writer,
            &docs,
            &name("a"),
            plain(WriteMode::Update),
            body(b"z"),
        )
        .await
        .unwrap();
}

pub async fn events_carry_metadata_never_bytes_and_the_runs_depth_plus_one(files: Files) {
    let app = files.add_app("shop").await;
    let owner = principal(&[(app, AppRole::Owner)], &Scope::ALL);
    let ctx = run_as(app, owner);
    let secret = b"the bytes themselves";
    let info = files
        .service
        .write(
            &ctx,
            &coll("docs"),
            &name("a.txt"),
            plain(WriteMode::Create),
            body(secret),
        )
        .await
        .unwrap();
    let events = files.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].depth, 3);
    assert_eq!(events[0].causation_id, ctx.execution_id);
    let payload = events[0].payload();
    assert_eq!(payload["kind"], "files");
    assert_eq!(payload["op"], "create");
    assert_eq!(payload["file"]["size"], json!(secret.len()));
    assert_eq!(payload["file"]["sha256"], json!(info.sha256));
    assert_eq!(payload["file"]["version"], 1);
    assert!(
        !payload.to_string().contains("the bytes themselves"),
        "an event carries no bytes: {payload}"
    );
}
