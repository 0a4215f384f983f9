//! Files end to end: a process killed in the middle of an upload leaves nothing visible,
//! and the sweep at the next start removes what it left on disk; the script SDK over HTTP
//! against real PostgreSQL and a real files root; files triggers, their events and the
//! depth limit; and one app's scripts never reaching another's files.

#![expect(
    clippy::unwrap_used,
    reason = "tests fail loudly on the first surprise"
)]
#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on the first surprise"
)]

#[allow(
    dead_code,
    reason = "each test target uses its own part of the support module"
)]
mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use picloud_manager_core::DEFAULT_APP_ID;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use support::{ADMIN_PASSWORD, TestServer, eventually, spawn_app, spawn_app_with, start_binary};

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.map(Result::unwrap) {
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Starts a chunked upload by hand and sends `chunks` chunks of 256 KiB, leaving the
/// request unfinished: the connection stays open for as long as the stream lives.
fn start_upload(base: &str, session: &str, path: &str, chunks: usize) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {session}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'x'; 256 * 1024];
    for _ in 0..chunks {
        write!(stream, "{:x}\r\n", chunk.len()).unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.flush().unwrap();
    stream
}

#[tokio::test]
async fn a_process_killed_mid_upload_leaves_no_file_and_the_next_start_sweeps_its_bytes() {
    let data_dir = tempfile::tempdir().unwrap();
    let database_url = support::fresh_database_url();
    let settings = [
        ("PICLOUD_DATABASE_URL", database_url.as_str()),
        ("PICLOUD_ADMIN_PASSWORD", ADMIN_PASSWORD),
        // Nothing else writes here, so the start-up sweep may take everything it finds.
        ("PICLOUD_FILES_SWEEP_GRACE_SECS", "0"),
    ];
    let files_root = data_dir.path().join("files");
    let server = start_binary(data_dir.path(), &settings);
    let client = reqwest::Client::new();
    let session = server.login(&client, ADMIN_PASSWORD).await;
    let upload_path = format!("/api/admin/apps/{DEFAULT_APP_ID}/files/uploads/big.bin");
    let upload = start_upload(&server.base, &session, &upload_path, 8);

    // Killed once the upload's bytes are on disk, in its temporary file.
    let deadline = Instant::now() + Duration::from_secs(20);
    let partial = loop {
        let uploads: Vec<PathBuf> = files_under(&files_root)
            .into_iter()
            .filter(|path| path.to_string_lossy().contains(".upload-"))
            .collect();
        if let [one] = uploads.as_slice()
            && std::fs::metadata(one).unwrap().len() > 0
        {
            break one.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the upload never reached the disk"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.kill();
    drop(upload);
    assert!(partial.exists(), "a killed process cleans nothing up");

    let server = start_binary(data_dir.path(), &settings);
    let session = server.login(&client, ADMIN_PASSWORD).await;
    let admin = |path: String| {
        client
            .get(format!("{}{path}", server.base))
            .bearer_auth(&session)
    };
    // The start-up sweep runs in the background; its report shows once it is done.
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let report: Value = admin("/api/admin/files/sweep".to_owned())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !report.is_null() {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "the start-up sweep never reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(report["stale_uploads_removed"], 1, "{report}");
    assert_eq!(report["missing_total"], 0, "{report}");
    assert!(!partial.exists());
    assert!(files_under(&files_root).is_empty());
    let listed: Value = admin(format!("/api/admin/apps/{DEFAULT_APP_ID}/files"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["items"],
        serde_json::json!([]),
        "the killed upload is not a file"
    );

    // The restarted server takes the same upload whole.
    let response = client
        .put(format!("{}{upload_path}", server.base))
        .bearer_auth(&session)
        .body(vec![b'y'; 3 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let info: Value = response.json().await.unwrap();
    assert_eq!(info["size"], 3 * 1024 * 1024);
    assert_eq!(files_under(&files_root).len(), 1);
    server.terminate();
}

// ---------------------------------------------------------------------------------------
// The script SDK, files triggers and app isolation on the real server over HTTP.
// ---------------------------------------------------------------------------------------

async fn post_json(app: &TestServer, path: &str, body: Value) -> Value {
    let response = app
        .client
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "POST {path}: {status} {body}");
    body
}

/// Makes a script in `app_id` and returns its id.
async fn script_in(app: &TestServer, app_id: &str, name: &str, source: &str) -> String {
    let script = post_json(
        app,
        "/api/admin/scripts",
        json!({ "app_id": app_id, "name": name, "source": source }),
    )
    .await;
    script["id"].as_str().unwrap().to_owned()
}

/// A `files` trigger in the default app running `script` for `ops` (all when null).
async fn files_trigger(app: &TestServer, script: &str, collection: &str, ops: Value) -> Value {
    let mut details = json!({ "kind": "files", "collection": collection });
    if !ops.is_null() {
        details["ops"] = ops;
    }
    post_json(
        app,
        "/api/admin/triggers",
        json!({ "app_id": DEFAULT_APP_ID, "script_name": script, "details": details }),
    )
    .await
}

/// POSTs `body` to a script by id.
async fn post_to_script(app: &TestServer, script_id: &str, body: Vec<u8>) -> Response {
    app.client
        .post(app.url(&format!("/api/execute/{script_id}")))
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Runs a script by id with `body` POSTed; its execution id and its JSON answer, which
/// must be a 200.
async fn run_json(app: &TestServer, script_id: &str, body: Vec<u8>) -> (String, Value) {
    let response = post_to_script(app, script_id, body).await;
    let status = response.status();
    let execution = response.headers()["x-picloud-execution-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    let answer = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (execution, answer)
}

async fn get_kv(app: &TestServer, collection: &str, key: &str) -> Option<Value> {
    let response = app
        .client
        .get(app.url(&format!(
            "/api/admin/apps/{DEFAULT_APP_ID}/kv/{collection}/{key}"
        )))
        .send()
        .await
        .unwrap();
    match response.status() {
        StatusCode::NOT_FOUND => None,
        StatusCode::OK => Some(response.json().await.unwrap()),
        other => panic!("GET kv {collection}/{key}: {other}"),
    }
}

/// One collection's files over the admin API (one page is plenty here).
async fn admin_files(app: &TestServer, app_id: &str, collection: &str) -> Vec<Value> {
    let response = app
        .client
        .get(app.url(&format!("/api/admin/apps/{app_id}/files")))
        .query(&[("collection", collection), ("limit", "1000")])
        .send()
        .await
        .unwrap();
    let status = response.status();
    let page: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["next_cursor"], Value::Null, "{page}");
    page["items"].as_array().unwrap().clone()
}

/// The SHA-256 of `bytes` in hex, as PostgreSQL computes it.
async fn sha256_hex(app: &TestServer, bytes: &[u8]) -> String {
    sqlx::query_scalar("SELECT encode(sha256($1), 'hex')")
        .bind(bytes)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Waits until no outbox row is left: every event emitted so far has run and settled.
async fn outbox_drained(app: &TestServer) {
    eventually(Duration::from_secs(20), "an empty outbox", || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        (rows == 0).then_some(())
    })
    .await;
}

/// The path of each regular file under `root`, relative to it, with its bytes.
fn stored_bytes(root: &Path) -> Vec<(String, Vec<u8>)> {
    files_under(root)
        .into_iter()
        .map(|path| {
            assert!(
                std::fs::symlink_metadata(&path).unwrap().is_file(),
                "only regular files under the root: {}",
                path.display()
            );
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            (relative, std::fs::read(&path).unwrap())
        })
        .collect()
}

/// 100 KiB that are not UTF-8 (no 0xFF byte ever is) and not one repeated pattern.
fn binary_body() -> Vec<u8> {
    (0..100 * 1024_u32)
        .map(|i| {
            if i % 97 == 0 {
                0xFF
            } else {
                (i * 31 + i / 256) as u8
            }
        })
        .collect()
}

const STORE_SCRIPT: &str = r#"
let body = ctx.request.body;
let uploads = files::collection("uploads");
let name = "reports/2024/data.bin";
let created = uploads.create(name, body, #{
    content_type: "application/x-sample",
    metadata: #{ owner: "ada", purpose: "e2e" },
});
let twice = "created twice";
try { uploads.create(name, "again"); } catch (e) { twice = e; }
let head = uploads.head(name);
let bytes = uploads.get(name);
#{
    body_is_blob: type_of(body) == "blob",
    created: created,
    head: head,
    sha256: head.sha256,
    read_back: bytes.len(),
    same: bytes == body,
    twice: twice,
    missing_head: uploads.head("reports/2024/none.bin"),
    missing_get: uploads.get("reports/2024/none.bin"),
}
"#;

const MANAGE_SCRIPT: &str = r#"
let uploads = files::collection("uploads");
let name = "reports/2024/data.bin";
let listed = uploads.list();
let by_prefix = uploads.list(#{ prefix: "reports/", limit: 1 });
let elsewhere = uploads.list(#{ prefix: "other/" });
let updated = uploads.update(name, "replaced by text");
let text = uploads.get(name).as_string();
let absent = "updated a missing file";
try { uploads.update("reports/2024/none.bin", "x"); } catch (e) { absent = e; }
let deleted = uploads.delete(name);
let deleted_again = uploads.delete(name);
#{
    listed: listed,
    by_prefix: by_prefix,
    elsewhere: elsewhere,
    updated: updated,
    text: text,
    absent: absent,
    deleted: deleted,
    deleted_again: deleted_again,
    after: uploads.list(),
    head_after: uploads.head(name),
}
"#;

#[tokio::test]
async fn a_script_stores_reads_lists_updates_and_deletes_a_binary_file() {
    // A blob may hold 100,000 bytes by default, less than the 100 KiB body: room to read it.
    let app = spawn_app_with(&[("PICLOUD_SANDBOX_MAX_ARRAY_SIZE", "262144")]).await;
    let default_app = DEFAULT_APP_ID.to_string();
    let store = script_in(&app, &default_app, "store", STORE_SCRIPT).await;
    let manage = script_in(&app, &default_app, "manage", MANAGE_SCRIPT).await;
    let body = binary_body();
    assert!(std::str::from_utf8(&body).is_err());
    let sha256 = sha256_hex(&app, &body).await;

    let (_, stored) = run_json(&app, &store, body.clone()).await;
    assert_eq!(stored["body_is_blob"], true, "{stored}");
    let created = &stored["created"];
    assert_eq!(created["collection"], "uploads");
    assert_eq!(created["name"], "reports/2024/data.bin");
    assert_eq!(created["size"], body.len());
    assert_eq!(created["content_type"], "application/x-sample");
    assert_eq!(created["sha256"], sha256.as_str());
    assert_eq!(
        created["metadata"],
        json!({ "owner": "ada", "purpose": "e2e" })
    );
    assert_eq!(created["version"], 1);
    assert_eq!(created["created_at"], created["updated_at"]);
    assert_eq!(
        &stored["head"], created,
        "head answers what create returned"
    );
    assert_eq!(stored["sha256"], sha256.as_str());
    assert_eq!(stored["read_back"], body.len());
    assert_eq!(stored["same"], true, "the bytes read back are the body");
    assert_eq!(
        stored["twice"],
        "file 'reports/2024/data.bin' already exists in collection 'uploads'"
    );
    assert_eq!(stored["missing_head"], Value::Null);
    assert_eq!(stored["missing_get"], Value::Null);

    // On disk: the body's bytes once, at a path that owes nothing to the file's name.
    let root = app.files_root.path();
    let on_disk = stored_bytes(root);
    assert_eq!(
        on_disk.len(),
        1,
        "{:?}",
        on_disk.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    let (path, bytes) = &on_disk[0];
    assert_eq!(bytes.len(), body.len());
    assert!(bytes == &body, "the stored bytes are the body's");
    for part in ["reports", "2024", "data.bin", "data", "uploads"] {
        assert!(!path.contains(part), "{path} contains {part:?}");
    }
    // The row names the bytes: its key is the blob's file name.
    let key: String = sqlx::query_scalar("SELECT blob_key FROM files WHERE name = $1")
        .bind("reports/2024/data.bin")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(path.ends_with(&key), "{path} is not blob {key}");

    let (_, managed) = run_json(&app, &manage, Vec::new()).await;
    assert_eq!(managed["listed"]["files"], json!([created]), "{managed}");
    assert_eq!(managed["listed"]["next_cursor"], Value::Null);
    assert_eq!(managed["by_prefix"]["files"], json!([created]));
    assert_eq!(managed["by_prefix"]["next_cursor"], Value::Null);
    assert_eq!(
        managed["elsewhere"],
        json!({ "files": [], "next_cursor": null })
    );
    let updated = &managed["updated"];
    assert_eq!(updated["size"], "replaced by text".len());
    assert_eq!(updated["version"], 2);
    assert_eq!(
        updated["content_type"], "text/plain; charset=utf-8",
        "a string without a content type is text"
    );
    assert_eq!(
        updated["metadata"],
        json!({}),
        "update replaces the metadata"
    );
    assert_eq!(updated["created_at"], created["created_at"]);
    assert_ne!(updated["updated_at"], created["updated_at"]);
    assert_eq!(
        updated["sha256"],
        sha256_hex(&app, b"replaced by text").await.as_str()
    );
    assert_eq!(managed["text"], "replaced by text");
    assert_eq!(
        managed["absent"],
        "file 'reports/2024/none.bin' not found in collection 'uploads'"
    );
    assert_eq!(managed["deleted"], true);
    assert_eq!(managed["deleted_again"], false);
    assert_eq!(
        managed["after"],
        json!({ "files": [], "next_cursor": null })
    );
    assert_eq!(managed["head_after"], Value::Null);
    // The update's bytes replaced the body's, and the delete removed them.
    assert!(stored_bytes(root).is_empty(), "{:?}", files_under(root));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM files")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_file_larger_than_a_blob_may_be_is_refused_by_get_before_a_byte_is_read() {
    let app = spawn_app().await;
    let store = script_in(
        &app,
        &DEFAULT_APP_ID.to_string(),
        "store",
        r#"
        let big = files::collection("big");
        let created = big.create("body.bin", ctx.request.body);
        let refused = "read";
        try { big.get("body.bin"); } catch (e) { refused = e; }
        #{ size: created.size, refused: refused, head: big.head("body.bin").size }
        "#,
    )
    .await;
    // The body arrives whole (under PICLOUD_MAX_BODY_BYTES) and is stored whole, but a
    // script under the default max_array_size of 100,000 cannot read it back.
    let (_, answer) = run_json(&app, &store, binary_body()).await;
    assert_eq!(
        answer,
        json!({
            "size": 100 * 1024,
            "refused": "file 'body.bin' is 102400 bytes, over the limit of 100000 bytes of a \
                        blob (max_array_size)",
            "head": 100 * 1024,
        })
    );
    app.stop().await;
}

#[tokio::test]
async fn a_files_trigger_sees_the_files_metadata_for_the_ops_it_watches_and_never_its_bytes() {
    const MARKER: &str = "MARKER-5d1e9c-NOT-IN-ANY-EVENT";
    let app = spawn_app().await;
    let default_app = DEFAULT_APP_ID.to_string();
    script_in(
        &app,
        &default_app,
        "on-file",
        r#"kv::collection("seen").set(ctx.event.op + ":" + ctx.event.name, ctx.event);"#,
    )
    .await;
    files_trigger(&app, "on-file", "uploads*", json!(["create", "delete"])).await;
    let churn = script_in(
        &app,
        &default_app,
        "churn",
        &format!(
            r#"
            let c = files::collection("uploads:in");
            let created = c.create("report.txt", "first {MARKER}", #{{
                content_type: "text/markdown", metadata: #{{ source: "scanner" }},
            }});
            c.update("report.txt", "second {MARKER}, longer");
            c.delete("report.txt");
            created
            "#
        ),
    )
    .await;

    let (execution, created) = run_json(&app, &churn, Vec::new()).await;
    let create = eventually(Duration::from_secs(20), "the create event", || async {
        get_kv(&app, "seen", "create:report.txt").await
    })
    .await;
    let delete = eventually(Duration::from_secs(20), "the delete event", || async {
        get_kv(&app, "seen", "delete:report.txt").await
    })
    .await;

    let content = format!("first {MARKER}");
    assert_eq!(create["kind"], "files", "{create}");
    assert_eq!(create["op"], "create");
    assert_eq!(create["collection"], "uploads:in");
    assert_eq!(create["name"], "report.txt");
    assert_eq!(create["depth"], 1);
    assert_eq!(create["app_id"], default_app.as_str());
    assert_eq!(create["causation_id"], execution.as_str());
    let file = &create["file"];
    assert_eq!(file["size"], content.len());
    assert_eq!(
        file["sha256"],
        sha256_hex(&app, content.as_bytes()).await.as_str()
    );
    assert_eq!(file["content_type"], "text/markdown");
    assert_eq!(file["metadata"], json!({ "source": "scanner" }));
    assert_eq!(file["version"], 1);
    assert_eq!(file, &created, "the event carries what create returned");

    assert_eq!(delete["kind"], "files", "{delete}");
    assert_eq!(delete["op"], "delete");
    assert_eq!(delete["collection"], "uploads:in");
    assert_eq!(delete["name"], "report.txt");
    assert_eq!(delete["depth"], 1);
    assert_eq!(delete["causation_id"], execution.as_str());
    assert_eq!(delete["file"], Value::Null);

    let fields = |event: &Value| -> BTreeSet<String> {
        event.as_object().unwrap().keys().cloned().collect()
    };
    let expected: BTreeSet<String> = [
        "kind",
        "collection",
        "name",
        "op",
        "file",
        "app_id",
        "depth",
        "causation_id",
        "id",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(fields(&create), expected);
    assert_eq!(fields(&delete), expected);
    for event in [&create, &delete] {
        assert!(!event.to_string().contains(MARKER), "bytes in {event}");
    }

    // Both events ran and settled; the update, not watched, never had a row.
    outbox_drained(&app).await;
    assert_eq!(get_kv(&app, "seen", "update:report.txt").await, None);
    let pool = app.stop().await;
    let runs: Vec<String> = sqlx::query_scalar(
        "SELECT status FROM execution_logs WHERE invocation_type = 'trigger' ORDER BY started_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(runs, ["success", "success"], "one run per watched op");
}

#[tokio::test]
async fn a_self_triggering_files_script_stops_at_the_depth_limit_with_a_dead_letter() {
    let app = spawn_app_with(&[("PICLOUD_MAX_TRIGGER_DEPTH", "3")]).await;
    let default_app = DEFAULT_APP_ID.to_string();
    let grow = script_in(
        &app,
        &default_app,
        "grow",
        r#"files::collection("loop").create(`step-${ctx.event.depth}`, "grown");"#,
    )
    .await;
    files_trigger(&app, "grow", "loop", Value::Null).await;
    let seed = script_in(
        &app,
        &default_app,
        "seed",
        r#"files::collection("loop").create("step-0", "seed")"#,
    )
    .await;
    run_json(&app, &seed, Vec::new()).await;

    let dead_letters = app.url(&format!("/api/admin/apps/{DEFAULT_APP_ID}/dead-letters"));
    let dead_letter = eventually(Duration::from_secs(30), "the depth refusal", || async {
        let page: Value = app
            .client
            .get(&dead_letters)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        page["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(
        dead_letter["last_error"], "trigger depth limit of 3 reached",
        "{dead_letter}"
    );
    assert_eq!(dead_letter["trigger_kind"], "files");
    assert_eq!(dead_letter["depth"], 4);
    assert_eq!(dead_letter["attempts"], 0);
    assert_eq!(dead_letter.get("trigger_id"), None, "refused, not failed");
    assert_eq!(dead_letter["event"]["op"], "create");
    assert_eq!(dead_letter["event"]["name"], "step-3");

    // Depths 1, 2 and 3 ran, each writing one file; the write at depth 3 committed but
    // triggered nothing. Once the outbox is empty no run is pending and none can start.
    outbox_drained(&app).await;
    let names: Vec<Value> = admin_files(&app, &default_app, "loop")
        .await
        .iter()
        .map(|file| file["name"].clone())
        .collect();
    assert_eq!(names, ["step-0", "step-1", "step-2", "step-3"]);
    let count: Value = app
        .client
        .get(app.url(&format!(
            "/api/admin/apps/{DEFAULT_APP_ID}/dead-letters/count"
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count["unresolved"], 1, "{count}");
    let pool = app.stop().await;
    let runs: Vec<String> = sqlx::query_scalar(
        "SELECT status FROM execution_logs
         WHERE script_id = $1::uuid AND invocation_type = 'trigger'",
    )
    .bind(&grow)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(runs, ["success"; 3]);
}

#[tokio::test]
async fn a_script_never_reaches_another_apps_file_of_the_same_name() {
    let app = spawn_app().await;
    let default_app = DEFAULT_APP_ID.to_string();
    let other = post_json(
        &app,
        "/api/admin/apps",
        json!({ "slug": "other", "name": "Other" }),
    )
    .await;
    let other_app = other["id"].as_str().unwrap().to_owned();
    let write_a = script_in(
        &app,
        &default_app,
        "write-a",
        r#"files::collection("shared").create("doc.txt", "A's own words", #{ metadata: #{ by: "a" } })"#,
    )
    .await;
    let read = r#"
        let c = files::collection("shared");
        let bytes = c.get("doc.txt");
        #{
            head: c.head("doc.txt"),
            text: if bytes == () { () } else { bytes.as_string() },
            listed: c.list(),
            everywhere: c.list(#{ prefix: "" }),
        }
    "#;
    let read_a = script_in(&app, &default_app, "read-a", read).await;
    let read_b = script_in(&app, &other_app, "read-b", read).await;
    let write_b = script_in(
        &app,
        &other_app,
        "write-b",
        r#"files::collection("shared").create("doc.txt", "B writes here")"#,
    )
    .await;

    let (_, a_file) = run_json(&app, &write_a, Vec::new()).await;
    let (_, seen_by_b) = run_json(&app, &read_b, Vec::new()).await;
    assert_eq!(
        seen_by_b,
        json!({
            "head": null,
            "text": null,
            "listed": { "files": [], "next_cursor": null },
            "everywhere": { "files": [], "next_cursor": null },
        })
    );

    // The same name in B is B's own file, not a conflict with A's.
    let (_, b_file) = run_json(&app, &write_b, Vec::new()).await;
    assert_eq!(b_file["version"], 1, "{b_file}");
    assert_eq!(b_file["size"], "B writes here".len());
    assert_eq!(b_file["metadata"], json!({}));
    let (_, seen_by_b) = run_json(&app, &read_b, Vec::new()).await;
    assert_eq!(seen_by_b["text"], "B writes here");
    assert_eq!(seen_by_b["listed"]["files"], json!([b_file]));

    let (_, seen_by_a) = run_json(&app, &read_a, Vec::new()).await;
    assert_eq!(seen_by_a["text"], "A's own words", "{seen_by_a}");
    assert_eq!(seen_by_a["head"], a_file);
    assert_eq!(seen_by_a["listed"]["files"], json!([a_file]));
    assert_eq!(admin_files(&app, &default_app, "shared").await, [a_file]);
    assert_eq!(admin_files(&app, &other_app, "shared").await, [b_file]);

    let mut on_disk: Vec<Vec<u8>> = stored_bytes(app.files_root.path())
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    on_disk.sort();
    assert_eq!(
        on_disk,
        [b"A's own words".to_vec(), b"B writes here".to_vec()]
    );
    app.stop().await;
}
