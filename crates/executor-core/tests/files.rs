//! The `files` SDK module over the manager's in-memory `FilesService` (a dev-dependency
//! only: the manager never depends on the executor): the script's view of create, head,
//! get, update, delete and list, the events its changes emit, its thrown errors, the
//! memory a read may take, and the app every call is keyed on.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

mod common;
mod support;

// The run-memory limit is counted by the allocator, as in the `picloud` binary.
#[global_allocator]
static ALLOCATOR: picloud_executor_core::RunMemoryAllocator =
    picloud_executor_core::RunMemoryAllocator;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use picloud_executor_core::{ExecutorConfig, LocalExecutorClient};
use picloud_manager_core::files::InMemoryFilesService;
use picloud_manager_core::outbox::RecordingEmitter;
use picloud_shared::files::read_to_vec;
use picloud_shared::{
    AppId, CollectionName, EventSubject, ExecutorClient, FileInfo, FileLimits, FileMetadata,
    FileName, FileOp, FileWrite, FilesService, SandboxCeiling, SandboxLimits, ScriptLimits,
    ServiceSet, WriteMode,
};
use serde_json::{Value, json};
use support::{as_app, assert_uncaught, client_with_services, run_as_viewer, run_script, thrown};

/// Room for a blob of a few hundred KiB, so a read is bounded by memory, not blob size.
const MAX_BLOB: usize = 1024 * 1024;

/// The manager's in-memory files service, and the events its changes emit.
fn files() -> (Arc<InMemoryFilesService>, Arc<RecordingEmitter>) {
    let events = Arc::new(RecordingEmitter::default());
    let files = InMemoryFilesService::new(events.clone(), FileLimits::default());
    (Arc::new(files), events)
}

fn client_with(files: Arc<dyn FilesService>) -> LocalExecutorClient {
    let config = ExecutorConfig {
        ceiling: SandboxCeiling::new(SandboxLimits {
            max_array_size: MAX_BLOB,
            ..SandboxLimits::default()
        }),
        ..ExecutorConfig::default()
    };
    let services = ServiceSet {
        files,
        ..ServiceSet::unavailable()
    };
    client_with_services(config, services)
}

fn names(collection: &str, name: &str) -> (CollectionName, FileName) {
    (
        CollectionName::parse(collection).unwrap(),
        FileName::parse(name).unwrap(),
    )
}

/// What `app` holds as `collection`/`name`: its metadata and its bytes.
async fn stored(
    files: &InMemoryFilesService,
    app: AppId,
    collection: &str,
    name: &str,
) -> Option<(FileInfo, Vec<u8>)> {
    let (collection, name) = names(collection, name);
    let download = files
        .open(&as_app(app), &collection, &name)
        .await
        .unwrap()?;
    let info = download.info.clone();
    Some((info, read_to_vec(download, u64::MAX, "file").await.unwrap()))
}

/// Stores `bytes` as `app`'s `collection`/`name`, from outside any run.
async fn put(
    files: &InMemoryFilesService,
    app: AppId,
    collection: &str,
    name: &str,
    bytes: Vec<u8>,
) {
    let (collection, name) = names(collection, name);
    let write = FileWrite {
        mode: WriteMode::Create,
        content_type: None,
        metadata: FileMetadata::default(),
        expected_size: Some(bytes.len() as u64),
    };
    let body = Box::pin(futures_util::stream::once(
        async move { Ok(Bytes::from(bytes)) },
    ));
    files
        .write(&as_app(app), &collection, &name, write, body)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn create_head_get_update_and_delete_round_trip_blobs_and_strings() {
    let (files, _) = files();
    let client = client_with(files.clone());
    let source = r#"
        let f = files::collection("avatars");
        let before = f.head("ada.png");
        let created = f.create("ada.png", blob(3, 255),
            #{ content_type: "image/png", metadata: #{ owner: "ada" } });
        let notes = f.create("notes.txt", "some text");
        let head = f.head("ada.png");
        let bytes = f.get("ada.png");
        let updated = f.update("ada.png", blob(2, 0));
        #{ before: before, created: created, notes: notes, head: head, bytes: bytes,
           updated: updated, after: f.get("ada.png"), text: f.get("notes.txt").as_string(),
           missing: f.get("nobody.png"), name: f.name, shown: `${f}` }
    "#;
    let script = script(source);
    let app = script.app_id;
    let body = json(&ok(run_script(&client, script).await));

    let (ada, ada_bytes) = stored(&files, app, "avatars", "ada.png").await.unwrap();
    let (notes, notes_bytes) = stored(&files, app, "avatars", "notes.txt").await.unwrap();
    assert_eq!(ada_bytes, [0, 0]);
    assert_eq!(notes_bytes, b"some text");
    assert_eq!(
        body["updated"],
        ada.to_json(),
        "update answers what is stored"
    );
    assert_eq!(body["notes"], notes.to_json());
    assert_eq!(
        body["created"], body["head"],
        "head answers what create stored"
    );
    let created = &body["created"];
    let keys: Vec<_> = created.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "collection",
            "content_type",
            "created_at",
            "metadata",
            "name",
            "sha256",
            "size",
            "updated_at",
            "version"
        ]
    );
    assert_eq!(
        (
            &created["collection"],
            &created["name"],
            &created["size"],
            &created["content_type"],
            &created["metadata"],
            &created["version"]
        ),
        (
            &json!("avatars"),
            &json!("ada.png"),
            &json!(3),
            &json!("image/png"),
            &json!({ "owner": "ada" }),
            &json!(1)
        )
    );
    assert_eq!(created["sha256"].as_str().unwrap().len(), 64);
    assert_ne!(created["sha256"], body["updated"]["sha256"]);
    // An update replaces the bytes, the content type and the metadata.
    assert_eq!(
        (
            &body["updated"]["size"],
            &body["updated"]["content_type"],
            &body["updated"]["metadata"],
            &body["updated"]["version"],
            &body["updated"]["created_at"]
        ),
        (
            &json!(2),
            &json!("application/octet-stream"),
            &json!({}),
            &json!(2),
            &created["created_at"]
        )
    );
    assert_eq!(
        (&body["notes"]["size"], &body["notes"]["content_type"]),
        (&json!(9), &json!("text/plain; charset=utf-8")),
        "a string is stored as its UTF-8 bytes, as text"
    );
    // Blobs cross into JSON as base64.
    assert_eq!(
        (&body["bytes"], &body["after"], &body["text"]),
        (&json!("////"), &json!("AAA="), &json!("some text"))
    );
    assert_eq!(
        (
            &body["before"],
            &body["missing"],
            &body["name"],
            &body["shown"]
        ),
        (
            &Value::Null,
            &Value::Null,
            &json!("avatars"),
            &json!("files collection 'avatars'")
        )
    );

    let source = r#"
        let f = files::collection("avatars");
        let existed = f.delete("ada.png");
        #{ existed: existed, again: f.delete("ada.png"), head: f.head("ada.png"),
           get: f.get("ada.png"), left: f.list().files.map(|file| file.name) }
    "#;
    let mut script = common::script(source);
    script.app_id = app;
    let body = json(&ok(run_script(&client, script).await));
    assert_eq!(
        body,
        json!({ "existed": true, "again": false, "head": null, "get": null,
                "left": ["notes.txt"] })
    );
    assert!(stored(&files, app, "avatars", "ada.png").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn list_pages_through_the_handles_collection_by_prefix() {
    let (files, _) = files();
    let client = client_with(files);
    let source = r#"
        let docs = files::collection("docs");
        for name in ["a/3", "a/1", "b", "a/2"] { docs.create(name, name); }
        files::collection("other").create("a/0", "elsewhere");
        let names = |page| page.files.map(|file| file.name);
        let first = docs.list(#{ prefix: "a/", limit: 2 });
        let second = docs.list(#{ prefix: "a/", limit: 2, cursor: first.next_cursor });
        #{ first: names.call(first), first_cursor: first.next_cursor,
           second: names.call(second), second_cursor: second.next_cursor,
           all: names.call(docs.list()), sizes: docs.list(#{ limit: 1 }).files.map(|f| f.size) }
    "#;
    let body = json(&ok(run(&client, source).await));
    assert_eq!(
        body,
        json!({
            "first": ["a/1", "a/2"],
            "first_cursor": "docs/a/2",
            "second": ["a/3"],
            "second_cursor": null,
            "all": ["a/1", "a/2", "a/3", "b"],
            "sizes": [3],
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_emit_events_with_the_metadata_and_never_the_bytes() {
    let (files, events) = files();
    let client = client_with(files);
    let source = r#"
        let f = files::collection("avatars");
        let created = f.create("ada.png", blob(3, 255), #{ metadata: #{ owner: "ada" } });
        let updated = f.update("ada.png", "plain");
        f.delete("ada.png");
        f.delete("ada.png");
        #{ created: created, updated: updated }
    "#;
    let script = script(source);
    let app = script.app_id;
    let mut request = request(script, Some(get()));
    request.depth = 2;
    let run = request.execution_id;
    let body = json(&ok(client.execute(request).await));

    let events = events.events();
    let seen: Vec<_> = events
        .iter()
        .map(|event| match &event.subject {
            EventSubject::Files {
                collection,
                name,
                op,
                file,
            } => (collection.as_str(), name.as_str(), *op, file.clone()),
            other => panic!("expected a files event, got {other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "avatars",
                "ada.png",
                FileOp::Create,
                Some(body["created"].clone())
            ),
            (
                "avatars",
                "ada.png",
                FileOp::Update,
                Some(body["updated"].clone())
            ),
            ("avatars", "ada.png", FileOp::Delete, None),
        ],
        "the metadata the script was answered, no bytes; deleting a missing file emits nothing"
    );
    for event in &events {
        assert_eq!(
            (event.app_id, event.causation_id, event.depth),
            (app, Some(run), 3)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_throw_catchable_messages_naming_the_problem() {
    let (files, _) = files();
    let client = client_with(files.clone());
    let setup = r#"
        let f = files::collection("c");
        f.create("dup.txt", "first");
    "#;
    let attempts = [
        "files::collection(())",
        r#"files::collection("bad name")"#,
        r#"f.create((), "x")"#,
        r#"f.create("a.txt", ())"#,
        r#"f.create("a.txt", 42)"#,
        r#"f.create("a.txt", "x", "text/plain")"#,
        r#"f.create("a.txt", "x", #{ owner: "ada" })"#,
        r#"f.create("a.txt", "x", #{ content_type: "plain" })"#,
        r#"f.create("a.txt", "x", #{ metadata: #{ owner: 1 } })"#,
        r#"f.create("../a.txt", "x")"#,
        r#"f.create("dup.txt", "second")"#,
        r#"f.update("missing.txt", "x")"#,
        "f.head(())",
        "f.get(7)",
        "f.delete(())",
        "f.list(#{ limt: 5 })",
        "f.list(#{ limit: 0 })",
    ];
    let (app, messages) = thrown(&client, setup, &attempts).await;
    assert_eq!(
        messages,
        json!([
            "collection name is required",
            "collection name may contain only ASCII letters, digits, '_', '-', '.' and ':'",
            "file name is required",
            "file content is required (a blob or a string)",
            "file content must be a blob or a string, not i64",
            "create options must be a map, not string",
            "unknown create option 'owner' (expected content_type or metadata)",
            "content type must look like 'type/subtype', optionally followed by '; parameters'",
            "metadata entry 'owner' must be a string, not i64",
            "file name must not contain a '.' or '..' segment",
            "file 'dup.txt' already exists in collection 'c'",
            "file 'missing.txt' not found in collection 'c'",
            "file name is required",
            "file name must be a string, not i64",
            "file name is required",
            "unknown list option 'limt' (expected prefix, limit or cursor)",
            "limit must be between 1 and 1000, not 0",
        ])
    );
    let (dup, bytes) = stored(&files, app, "c", "dup.txt").await.unwrap();
    assert_eq!((dup.version, bytes.as_slice()), (1, b"first".as_slice()));
    for untouched in ["a.txt", "missing.txt"] {
        assert!(
            stored(&files, app, "c", untouched).await.is_none(),
            "{untouched}"
        );
    }

    assert_uncaught(
        &client,
        "let f = files::collection(\"c\");\n\nf.create(\"a.txt\", ())",
        "file content is required (a blob or a string)",
        3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_larger_than_the_run_may_hold_is_refused_before_it_is_read() {
    let (files, _) = files();
    let client = client_with(files.clone());
    let source = r#"
        let f = files::collection("c");
        let size = f.head("big.bin").size;
        let outcome = "read";
        try { f.get("big.bin"); } catch (e) { outcome = e; }
        #{ size: size, outcome: outcome, small: f.get("small.bin").len() }
    "#;
    let limits = ScriptLimits {
        max_memory_bytes: Some(256 * 1024),
        ..ScriptLimits::default()
    };
    let script = script_with_limits(source, limits);
    let app = script.app_id;
    put(&files, app, "c", "big.bin", vec![7; 512 * 1024]).await;
    put(&files, app, "c", "small.bin", vec![7; 1024]).await;
    let body = json(&ok(run_script(&client, script).await));
    assert_eq!(
        (&body["size"], &body["small"]),
        (&json!(524_288), &json!(1024))
    );
    let outcome = body["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("file 'big.bin' is 524288 bytes, more than the ")
            && outcome.ends_with(" bytes of memory this run has left (max_memory_bytes)"),
        "{outcome}"
    );
    let left: usize = outcome
        .trim_start_matches("file 'big.bin' is 524288 bytes, more than the ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(left < 256 * 1024, "what the run holds is not left: {left}");

    // A blob holds at most max_array_size bytes, whatever memory is left.
    let limits = ScriptLimits {
        max_array_size: Some(1000),
        ..ScriptLimits::default()
    };
    let mut script = script_with_limits(
        r#"let outcome = "read";
           try { files::collection("c").get("small.bin"); } catch (e) { outcome = e; }
           outcome"#,
        limits,
    );
    script.app_id = app;
    assert_eq!(
        text(&ok(run_script(&client, script).await)),
        "file 'small.bin' is 1024 bytes, over the limit of 1000 bytes of a blob (max_array_size)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_apps_scripts_never_see_another_apps_files() {
    let (files, _) = files();
    let client = client_with(files.clone());
    let alpha = script(r#"files::collection("c").create("secret.txt", "alpha's").size"#);
    assert_eq!(text(&ok(run_script(&client, alpha.clone()).await)), "7");
    let beta = script(
        r#"
        let c = files::collection("c");
        let update = "updated";
        try { c.update("secret.txt", "beta's"); } catch (e) { update = e; }
        #{ head: c.head("secret.txt"), get: c.get("secret.txt"), listed: c.list().files,
           deleted: c.delete("secret.txt"), update: update,
           own: c.create("secret.txt", "beta's!").version }
        "#,
    );
    assert_ne!(alpha.app_id, beta.app_id);
    let body = json(&ok(run_script(&client, beta.clone()).await));
    assert_eq!(
        body,
        json!({
            "head": null,
            "get": null,
            "listed": [],
            "deleted": false,
            "update": "file 'secret.txt' not found in collection 'c'",
            "own": 1,
        })
    );
    let (_, alphas) = stored(&files, alpha.app_id, "c", "secret.txt")
        .await
        .unwrap();
    let (_, betas) = stored(&files, beta.app_id, "c", "secret.txt")
        .await
        .unwrap();
    assert_eq!(
        (alphas.as_slice(), betas.as_slice()),
        (b"alpha's".as_slice(), b"beta's!".as_slice())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_triggered_run_whose_principal_lacks_the_role_may_read_but_not_write() {
    let (files, _) = files();
    let client = client_with(files.clone());
    let source = r#"let c = files::collection("c");
           let read = c.head("k");
           let outcome = "written";
           try { c.create("k", "v"); } catch (e) { outcome = `${read}|${e}`; }
           outcome"#;
    let (app, answer) = run_as_viewer(&client, source).await;
    assert_eq!(
        answer,
        "|permission denied: ada lacks data:write in this app"
    );
    assert!(stored(&files, app, "c", "k").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_services_files_calls_throw_that_files_is_not_available() {
    let source = r#"
        let c = files::collection("avatars");
        let outcome = "no error";
        try { c.head("ada.png"); } catch (e) { outcome = e; }
        outcome
    "#;
    assert_eq!(
        text(&ok(run(&client(), source).await)),
        "service unavailable: files is not available in this process"
    );
}
