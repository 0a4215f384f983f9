//! The files API: `/api/admin/apps/{id}/files...` and `/api/admin/files/sweep`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use chrono::{DateTime, Utc};
use futures_util::stream;
use http_body_util::BodyExt;
use picloud_shared::files::sha256_hex;
use picloud_shared::{AppId, AppRole, BodyTimedOut, EventSubject, FileLimits, FileOp};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tower::ServiceExt;

use crate::{Caller, Reply, TestApp, total};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn files(app: AppId, rest: &str) -> String {
    format!("/api/admin/apps/{app}/files{rest}")
}

/// `len` bytes that differ from one offset to the next, so a slice shows where it is from.
fn bytes_of(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b"0123456789abcdefghijklmnopqrstuvwxyz"[i % 36])
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    sha256_hex(&Sha256::digest(bytes).into())
}

fn request(method: Method, uri: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        // From bytes: a header may carry UTF-8 (obs-text), as the metadata header does.
        request = request.header(*name, HeaderValue::from_bytes(value.as_bytes()).unwrap());
    }
    request.body(body).unwrap()
}

/// Uploads `bytes` announced by `Content-Length`.
async fn upload(caller: Caller<'_>, uri: &str, bytes: &[u8], headers: &[(&str, &str)]) -> Reply {
    let length = bytes.len().to_string();
    let mut all = vec![("content-length", length.as_str())];
    all.extend_from_slice(headers);
    let body = Body::from(bytes.to_vec());
    caller.send(request(Method::PUT, uri, &all, body)).await
}

/// Uploads `chunks` as a stream of unannounced length (chunked, on the wire).
async fn upload_stream(caller: Caller<'_>, uri: &str, chunks: Vec<Vec<u8>>) -> Reply {
    let body = Body::from_stream(stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, io::Error>(Bytes::from(c))),
    ));
    caller.send(request(Method::PUT, uri, &[], body)).await
}

/// `len` bytes in chunks of 64 KiB.
fn chunks_of(len: usize) -> Vec<Vec<u8>> {
    bytes_of(len).chunks(64 * KIB).map(<[u8]>::to_vec).collect()
}

/// What a download got back: its body as it arrived, or what ended it early.
struct Fetched {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Bytes, axum::Error>,
}

impl Fetched {
    fn bytes(&self) -> &[u8] {
        self.body.as_ref().unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(self.bytes()).unwrap()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
            .to_str()
            .unwrap()
    }
}

/// Sends a request as `caller`, keeping the body's bytes as they are (a download's body is
/// not JSON) and the error that ended it, if one did.
async fn fetch(caller: Caller<'_>, mut request: Request<Body>) -> Fetched {
    if let Some(token) = caller.token {
        request.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    let response = caller.app.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes);
    Fetched {
        status,
        headers,
        body,
    }
}

async fn download(app: &TestApp, uri: &str, headers: &[(&str, &str)]) -> Fetched {
    fetch(
        app.admin(),
        request(Method::GET, uri, headers, Body::empty()),
    )
    .await
}

async fn head(app: &TestApp, uri: &str, headers: &[(&str, &str)]) -> Fetched {
    fetch(
        app.admin(),
        request(Method::HEAD, uri, headers, Body::empty()),
    )
    .await
}

/// Every file under `root`, however deep.
fn files_on_disk(root: &Path) -> Vec<PathBuf> {
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
    found
}

/// The one blob on disk.
fn only_blob(app: &TestApp) -> PathBuf {
    let mut blobs = files_on_disk(app.blob_root());
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    blobs.pop().unwrap()
}

fn flip_a_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// The names of the files a list page holds, as `collection/name`.
fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}/{}",
                f["collection"].as_str().unwrap(),
                f["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn uploads_create_replace_and_are_listed_by_collection_and_prefix(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let bytes = bytes_of(10 * KIB);

    let created = upload(
        app.admin(),
        &files(shop, "/docs/2024%2Freport.pdf"),
        &bytes,
        &[
            ("content-type", "application/pdf"),
            ("x-picloud-metadata", r#"{"owner":"ada","city":"Zürich"}"#),
        ],
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let sha = sha256(&bytes);
    assert_eq!(created.headers[header::ETAG], format!("\"{sha}\""));
    assert_eq!(created.body["collection"], "docs");
    assert_eq!(created.body["name"], "2024/report.pdf");
    assert_eq!(created.body["size"], 10 * KIB);
    assert_eq!(created.body["content_type"], "application/pdf");
    assert_eq!(created.body["sha256"], sha);
    assert_eq!(
        created.body["metadata"],
        json!({ "owner": "ada", "city": "Zürich" })
    );
    assert_eq!(created.body["version"], 1);

    // Replacing: 200, a new version, the new type and metadata (none given: none kept).
    let replaced = upload(
        app.admin(),
        &files(shop, "/docs/2024%2Freport.pdf"),
        b"shorter",
        &[],
    )
    .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(replaced.body["version"], 2);
    assert_eq!(replaced.body["size"], 7);
    assert_eq!(replaced.body["content_type"], "application/octet-stream");
    assert_eq!(replaced.body["metadata"], json!({}));
    assert_eq!(replaced.body["created_at"], created.body["created_at"]);

    // A stream of unannounced length.
    let streamed = upload_stream(
        app.admin(),
        &files(shop, "/docs/2024%2Fnotes.txt"),
        chunks_of(300 * KIB),
    )
    .await;
    assert_eq!(streamed.status, StatusCode::CREATED, "{}", streamed.body);
    assert_eq!(streamed.body["size"], 300 * KIB);
    assert_eq!(streamed.body["sha256"], sha256(&bytes_of(300 * KIB)));
    let got = download(&app, &files(shop, "/docs/2024%2Fnotes.txt"), &[]).await;
    assert_eq!(got.bytes(), bytes_of(300 * KIB));

    for (collection, name) in [
        ("docs", "2025%2Fplan.md"),
        ("images", "logo.png"),
        ("images", "2024%2Fx"),
    ] {
        let reply = upload(
            app.admin(),
            &files(shop, &format!("/{collection}/{name}")),
            b"x",
            &[],
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    // The old bytes went with the replacement: one blob per file.
    assert_eq!(files_on_disk(app.blob_root()).len(), 5);

    let all = app.get(&files(shop, "")).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(total(&all.body), 5);
    assert_eq!(
        names(&all.body),
        [
            "docs/2024/notes.txt",
            "docs/2024/report.pdf",
            "docs/2025/plan.md",
            "images/2024/x",
            "images/logo.png"
        ]
    );
    let docs_2024 = app
        .get(&files(shop, "?collection=docs&prefix=2024%2F"))
        .await;
    assert_eq!(
        names(&docs_2024.body),
        ["docs/2024/notes.txt", "docs/2024/report.pdf"]
    );
    let images = app.get(&files(shop, "?collection=images")).await;
    assert_eq!(names(&images.body), ["images/2024/x", "images/logo.png"]);
    let everywhere_2024 = app.get(&files(shop, "?prefix=2024")).await;
    assert_eq!(names(&everywhere_2024.body).len(), 3);
    // An empty collection is no filter.
    assert_eq!(total(&app.get(&files(shop, "?collection=")).await.body), 5);

    // Paging: every file once, in order.
    let mut seen = Vec::new();
    let mut uri = files(shop, "?limit=2");
    loop {
        let page = app.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.body["items"].as_array().unwrap().len() <= 2);
        seen.extend(names(&page.body));
        let Some(cursor) = page.body["next_cursor"].as_str() else {
            break;
        };
        let cursor = cursor.replace('/', "%2F");
        uri = files(shop, &format!("?limit=2&cursor={cursor}"));
    }
    assert_eq!(seen, names(&all.body));

    for bad in ["?limit=0", "?limit=1001", "?limit=x", "?colection=docs"] {
        let reply = app.get(&files(shop, bad)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "invalid_query");
    }
    let reply = app.get(&files(shop, "?collection=bad%20name")).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    assert_eq!(reply.code(), "invalid_name");
    let reply = app.get(&files(shop, "?cursor=nonsense")).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    assert_eq!(reply.code(), "invalid_argument");

    let usage = app
        .get(&format!("/api/admin/apps/{shop}/files-usage"))
        .await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.body);
    assert_eq!(
        usage.body,
        json!({ "files": 5, "bytes": 7 + 300 * KIB + 3, "quota_bytes": 3 * MIB })
    );

    // Each change told the app's triggers, at depth 1.
    let events: Vec<(FileOp, String, u32)> = app
        .kv_events
        .events()
        .into_iter()
        .filter_map(|e| match e.subject {
            EventSubject::Files { op, name, .. } => Some((op, name, e.depth)),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(events[0], (FileOp::Create, "2024/report.pdf".to_owned(), 1));
    assert_eq!(events[1], (FileOp::Update, "2024/report.pdf".to_owned(), 1));
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn downloads_carry_the_files_headers_and_answer_conditions_and_ranges(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let bytes = bytes_of(1000);
    let uri = files(shop, "/docs/a%2Fb.txt");
    let put = upload(
        app.admin(),
        &uri,
        &bytes,
        &[
            ("content-type", "text/plain; charset=utf-8"),
            (
                "x-picloud-metadata",
                r#"{"city":"Zürich 🏔","quote":"say \"hi\""}"#,
            ),
        ],
    )
    .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    let etag = format!("\"{}\"", sha256(&bytes));

    let got = download(&app, &uri, &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.bytes(), bytes);
    assert_eq!(got.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(got.header("content-length"), "1000");
    assert_eq!(got.header("etag"), etag);
    assert_eq!(got.header("accept-ranges"), "bytes");
    assert_eq!(got.header("x-picloud-file-version"), "1");
    assert_eq!(got.header("x-content-type-options"), "nosniff");
    assert_eq!(got.header("content-security-policy"), "sandbox");
    let updated: DateTime<Utc> = put.body["updated_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        got.header("last-modified"),
        updated.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
    );
    let metadata = got.header("x-picloud-metadata");
    assert!(metadata.is_ascii(), "{metadata}");
    let metadata: Value = serde_json::from_str(metadata).unwrap();
    assert_eq!(
        metadata,
        json!({ "city": "Zürich 🏔", "quote": "say \"hi\"" })
    );

    // HEAD: the same headers, no bytes.
    let headed = head(&app, &uri, &[]).await;
    assert_eq!(headed.status, StatusCode::OK);
    assert!(headed.bytes().is_empty());
    for name in [
        "content-type",
        "content-length",
        "etag",
        "last-modified",
        "x-picloud-file-version",
        "x-picloud-metadata",
    ] {
        assert_eq!(headed.header(name), got.header(name), "{name}");
    }

    // If-None-Match: the tag, a list holding it, its weak form, or `*`.
    for tags in [
        etag.clone(),
        format!("\"other\", {etag}"),
        format!("W/{etag}"),
        "*".to_owned(),
    ] {
        for fetched in [
            download(&app, &uri, &[("if-none-match", &tags)]).await,
            head(&app, &uri, &[("if-none-match", &tags)]).await,
        ] {
            assert_eq!(fetched.status, StatusCode::NOT_MODIFIED, "{tags}");
            assert_eq!(fetched.header("etag"), etag);
            assert!(fetched.bytes().is_empty());
        }
    }
    let changed = download(&app, &uri, &[("if-none-match", "\"stale\"")]).await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(changed.bytes(), bytes);

    // One range: a-b, a-, -n.
    for (range, start, end) in [
        ("bytes=2-5", 2, 6),
        ("bytes=990-", 990, 1000),
        ("bytes=-4", 996, 1000),
        ("bytes=0-99999", 0, 1000),
    ] {
        let part = download(&app, &uri, &[("range", range)]).await;
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(part.bytes(), &bytes[start..end], "{range}");
        assert_eq!(
            part.header("content-range"),
            format!("bytes {start}-{}/1000", end - 1)
        );
        assert_eq!(part.header("content-length"), (end - start).to_string());
        assert_eq!(part.header("etag"), etag);
    }
    let kept = download(&app, &uri, &[("range", "bytes=0-1"), ("if-range", &etag)]).await;
    assert_eq!(kept.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(kept.bytes(), &bytes[..2]);

    // Outside the file: 416 with the size.
    for range in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
        let refused = download(&app, &uri, &[("range", range)]).await;
        assert_eq!(refused.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(refused.header("content-range"), "bytes */1000");
        assert_eq!(refused.json()["error"]["code"], "range_not_satisfiable");
    }

    // Several ranges, one that does not parse, an If-Range that no longer holds, or a HEAD:
    // the whole file.
    for headers in [
        vec![("range", "bytes=0-1,5-6")],
        vec![("range", "bytes=5-1")],
        vec![("range", "lines=1-2")],
        vec![("range", "bytes=0-1"), ("if-range", "\"stale\"")],
        vec![("range", "bytes=0-1"), ("if-range", "W/\"stale\"")],
    ] {
        let whole = download(&app, &uri, &headers).await;
        assert_eq!(whole.status, StatusCode::OK, "{headers:?}");
        assert_eq!(whole.bytes(), bytes, "{headers:?}");
    }
    let headed = head(&app, &uri, &[("range", "bytes=0-1")]).await;
    assert_eq!(headed.status, StatusCode::OK);
    assert_eq!(headed.header("content-length"), "1000");

    // HEAD and 304 never open the bytes: with the bytes gone they still answer, while a
    // download finds the file corrupted.
    std::fs::remove_file(only_blob(&app)).unwrap();
    assert_eq!(head(&app, &uri, &[]).await.status, StatusCode::OK);
    let unchanged = download(&app, &uri, &[("if-none-match", &etag)]).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    let gone = download(&app, &uri, &[]).await;
    assert_eq!(gone.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(gone.json()["error"]["code"], "file_corrupted");

    let missing = download(&app, &files(shop, "/docs/nope"), &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json()["error"]["message"],
        "file 'nope' not found in collection 'docs'"
    );
    assert_eq!(
        head(&app, &files(shop, "/docs/nope"), &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_empty_file_downloads_empty(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let uri = files(shop, "/docs/empty");
    let put = upload(app.admin(), &uri, b"", &[]).await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    let got = download(&app, &uri, &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.bytes().is_empty());
    assert_eq!(got.header("etag"), format!("\"{}\"", sha256(b"")));
    let suffix = download(&app, &uri, &[("range", "bytes=-5")]).await;
    assert_eq!(suffix.status, StatusCode::OK);
    let refused = download(&app, &uri, &[("range", "bytes=0-")]).await;
    assert_eq!(refused.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(refused.header("content-range"), "bytes */0");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn preconditions_choose_create_or_replace(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let uri = files(shop, "/docs/a");

    let missing = upload(app.admin(), &uri, b"new", &[("if-match", "*")]).await;
    assert_eq!(
        missing.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        missing.body
    );
    assert_eq!(missing.code(), "precondition_failed");
    assert_eq!(total(&app.get(&files(shop, "")).await.body), 0);

    let created = upload(app.admin(), &uri, b"first", &[("if-none-match", "*")]).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let exists = upload(app.admin(), &uri, b"second", &[("if-none-match", "*")]).await;
    assert_eq!(
        exists.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        exists.body
    );
    assert_eq!(exists.code(), "precondition_failed");
    assert_eq!(download(&app, &uri, &[]).await.bytes(), b"first");

    let replaced = upload(app.admin(), &uri, b"third", &[("if-match", "*")]).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(replaced.body["version"], 2);

    // Entity-tag preconditions are refused, not ignored; both stars cannot hold.
    for (headers, code) in [
        (vec![("if-match", "\"abc\"")], "invalid_argument"),
        (vec![("if-none-match", "\"abc\"")], "invalid_argument"),
        (
            vec![("if-match", "*"), ("if-none-match", "*")],
            "precondition_failed",
        ),
    ] {
        let reply = upload(app.admin(), &uri, b"fourth", &headers).await;
        assert_eq!(reply.code(), code, "{headers:?}: {}", reply.body);
    }
    assert_eq!(download(&app, &uri, &[]).await.bytes(), b"third");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn unusable_types_and_metadata_are_422_and_write_nothing(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let uri = files(shop, "/docs/a");
    for (header, value, naming) in [
        ("content-type", "not a type", "content-type"),
        ("content-type", "text/plain\u{e9}", "content-type"),
        ("x-picloud-metadata", "[1, 2]", "x-picloud-metadata"),
        ("x-picloud-metadata", r#"{"n": 1}"#, "x-picloud-metadata"),
        ("x-picloud-metadata", "{", "x-picloud-metadata"),
        ("x-picloud-metadata", r#"{"bad name": "x"}"#, "bad name"),
    ] {
        let reply = upload(app.admin(), &uri, b"x", &[(header, value)]).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{value}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "invalid_argument");
        assert!(reply.message().contains(naming), "{}", reply.message());
    }
    assert_eq!(total(&app.get(&files(shop, "")).await.body), 0);
    assert!(files_on_disk(app.blob_root()).is_empty());
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_file_over_the_limit_is_413_and_leaves_nothing(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let uri = files(shop, "/docs/big");

    // Announced: refused before a byte is read.
    let polled = Arc::new(AtomicBool::new(false));
    let seen = polled.clone();
    let body = Body::from_stream(stream::poll_fn(move |_| {
        seen.store(true, Ordering::SeqCst);
        Poll::Ready(Some(Ok::<_, io::Error>(Bytes::from(vec![0_u8; 64 * KIB]))))
    }));
    let length = (MIB + 1).to_string();
    let reply = app
        .send(request(
            Method::PUT,
            &uri,
            &[("content-length", &length)],
            body,
        ))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    assert_eq!(reply.code(), "payload_too_large");
    assert!(!polled.load(Ordering::SeqCst), "the body was read");

    // Unannounced: refused once it passes the limit, and nothing of it stays.
    let reply = upload_stream(app.admin(), &uri, chunks_of(MIB + 64 * KIB)).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    assert_eq!(reply.code(), "payload_too_large");
    assert!(files_on_disk(app.blob_root()).is_empty());
    assert_eq!(total(&app.get(&files(shop, "")).await.body), 0);

    // Exactly the limit fits.
    let reply = upload_stream(app.admin(), &uri, chunks_of(MIB)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_write_past_the_quota_is_507_and_leaves_nothing(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    for i in 0..3 {
        let reply = upload(
            app.admin(),
            &files(shop, &format!("/docs/{i}")),
            &bytes_of(1_000_000),
            &[],
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    let reply = upload(
        app.admin(),
        &files(shop, "/docs/announced"),
        &bytes_of(600_000),
        &[],
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::INSUFFICIENT_STORAGE,
        "{}",
        reply.body
    );
    assert_eq!(reply.code(), "quota_exceeded");
    let reply = upload_stream(
        app.admin(),
        &files(shop, "/docs/streamed"),
        chunks_of(600_000),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::INSUFFICIENT_STORAGE,
        "{}",
        reply.body
    );
    assert_eq!(reply.code(), "quota_exceeded");
    assert_eq!(files_on_disk(app.blob_root()).len(), 3);
    assert_eq!(total(&app.get(&files(shop, "")).await.body), 3);

    // Replacing a file frees its bytes first.
    let reply = upload(
        app.admin(),
        &files(shop, "/docs/0"),
        &bytes_of(1_040_000),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn uploads_are_not_bound_by_the_admin_body_limit(pool: PgPool) {
    // The admin API takes bodies of at most 1 MiB; files are bounded by their own limit.
    let app = TestApp::with_file_limits(
        pool,
        FileLimits {
            max_file_bytes: 4 * MIB as u64,
            app_quota_bytes: 8 * MIB as u64,
        },
    )
    .await;
    let shop = app.add_app("shop").await;
    let big = bytes_of(MIB + MIB / 2);
    let reply = upload(app.admin(), &files(shop, "/docs/announced"), &big, &[]).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let reply = upload_stream(
        app.admin(),
        &files(shop, "/docs/streamed"),
        chunks_of(3 * MIB),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let got = download(&app, &files(shop, "/docs/announced"), &[]).await;
    assert_eq!(got.bytes(), big);
    // The JSON routes keep the limit.
    let reply = app
        .raw_json(
            Method::PUT,
            &format!("/api/admin/apps/{shop}/kv/notes/big"),
            format!("\"{}\"", "x".repeat(MIB + 1)),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_body_that_fails_to_arrive_is_408_or_400_and_leaves_nothing(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let uri = files(shop, "/docs/a");
    let timed_out = Body::from_stream(stream::iter([
        Ok(Bytes::from_static(b"partial")),
        Err(BodyTimedOut),
    ]));
    let reply = app.send(request(Method::PUT, &uri, &[], timed_out)).await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT, "{}", reply.body);
    assert_eq!(reply.code(), "request_timeout");

    let broken = Body::from_stream(stream::iter([
        Ok(Bytes::from_static(b"partial")),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "connection reset",
        )),
    ]));
    let reply = app.send(request(Method::PUT, &uri, &[], broken)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(reply.code(), "unreadable_body");
    assert!(
        reply.message().contains("connection reset"),
        "{}",
        reply.message()
    );

    assert!(files_on_disk(app.blob_root()).is_empty());
    assert_eq!(total(&app.get(&files(shop, "")).await.body), 0);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_corrupted_file_is_never_served_whole(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;

    // One chunk: checked before the headers leave, so the answer is an error.
    let small = files(shop, "/docs/small");
    let put = upload(app.admin(), &small, &bytes_of(1000), &[]).await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    flip_a_byte(&only_blob(&app), 500);
    for headers in [vec![], vec![("range", "bytes=0-9")]] {
        let got = download(&app, &small, &headers).await;
        assert_eq!(got.status, StatusCode::INTERNAL_SERVER_ERROR, "{headers:?}");
        let error = &got.json()["error"];
        assert_eq!(error["code"], "file_corrupted");
        assert_eq!(
            error["message"],
            "file 'small' in collection 'docs' is corrupted: its stored bytes do not match their checksum"
        );
    }
    let reply = app.delete(&small).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);

    // Several chunks: the headers are gone before the end is checked, so the transfer
    // fails instead of completing.
    let large = files(shop, "/docs/large");
    let bytes = bytes_of(600 * KIB);
    let put = upload(app.admin(), &large, &bytes, &[]).await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    let blob = only_blob(&app);
    flip_a_byte(&blob, 590 * KIB);
    let mut wrong = bytes.clone();
    wrong[590 * KIB] ^= 0x01;
    for headers in [
        vec![],
        vec![("range", "bytes=0-9")],
        vec![("range", "bytes=-10")],
    ] {
        let got = download(&app, &large, &headers).await;
        match &got.body {
            Err(_) => {}
            Ok(received) => {
                assert_ne!(received.as_ref(), wrong.as_slice(), "{headers:?}");
                assert!(
                    received.len() < 600 * KIB,
                    "{headers:?}: a whole body arrived"
                );
                panic!(
                    "{headers:?}: the body ended cleanly after {} bytes",
                    received.len()
                );
            }
        }
    }
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn delete_removes_the_file_and_its_bytes(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let uri = files(shop, "/docs/a%2Fb");
    let put = upload(app.admin(), &uri, b"bytes", &[]).await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    let reply = app.delete(&uri).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert!(files_on_disk(app.blob_root()).is_empty());
    let reply = app.delete(&uri).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.message(), "file 'a/b' not found in collection 'docs'");
    assert_eq!(
        download(&app, &uri, &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn another_apps_files_are_hidden_like_a_missing_app(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let alpha = app.add_app("alpha").await;
    let beta = app.add_app("beta").await;
    let dev = app.user_with_role("dev", alpha, AppRole::Developer).await;
    let session = app.session(dev.id).await;
    let developer = app.caller(&session);
    let uri = files(beta, "/docs/secret");
    let put = upload(app.admin(), &uri, b"beta's", &[]).await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    let mine = upload(developer, &files(alpha, "/docs/mine"), b"alpha's", &[]).await;
    assert_eq!(mine.status, StatusCode::CREATED, "{}", mine.body);

    let nowhere = AppId::new();
    let routes = |app: AppId| {
        [
            (Method::GET, files(app, "")),
            (Method::GET, format!("/api/admin/apps/{app}/files-usage")),
            (Method::GET, files(app, "/docs/secret")),
            (Method::HEAD, files(app, "/docs/secret")),
            (Method::PUT, files(app, "/docs/secret")),
            (Method::DELETE, files(app, "/docs/secret")),
        ]
    };
    for ((method, hidden), (_, missing)) in routes(beta).into_iter().zip(routes(nowhere)) {
        let ask = |uri: &str| {
            request(
                method.clone(),
                uri,
                &[("content-length", "7")],
                Body::from("changed"),
            )
        };
        let hidden_reply = fetch(developer, ask(&hidden)).await;
        let missing_reply = fetch(developer, ask(&missing)).await;
        assert_eq!(
            hidden_reply.status,
            StatusCode::NOT_FOUND,
            "{method} {hidden}"
        );
        assert_eq!(
            missing_reply.status,
            StatusCode::NOT_FOUND,
            "{method} {missing}"
        );
        if method != Method::HEAD {
            let text = String::from_utf8(hidden_reply.bytes().to_vec()).unwrap();
            let expected = String::from_utf8(missing_reply.bytes().to_vec())
                .unwrap()
                .replace(&nowhere.to_string(), &beta.to_string());
            assert_eq!(text, expected, "{method} {hidden}");
        }
    }
    let got = download(&app, &uri, &[]).await;
    assert_eq!(got.bytes(), b"beta's");
    assert_eq!(got.header("x-picloud-file-version"), "1");
    // And the developer's own app works as ever.
    let reply = developer.get(&files(alpha, "")).await;
    assert_eq!(names(&reply.body), ["docs/mine"]);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn names_that_could_escape_or_confuse_are_422(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let long = "n".repeat(513);
    for name in [
        "..%2Fx",
        "a%2F..%2Fb",
        ".",
        "%2E%2E",
        "nul%00",
        "%2Fabsolute",
        "a%2F%2Fb",
        "a%5C..%5Cb",
        long.as_str(),
    ] {
        let uri = files(shop, &format!("/docs/{name}"));
        let put = upload(app.admin(), &uri, b"x", &[]).await;
        assert_eq!(
            put.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {}",
            put.body
        );
        assert_eq!(put.code(), "invalid_name", "{name}");
        for method in [Method::GET, Method::DELETE] {
            let reply = app
                .send(request(method.clone(), &uri, &[], Body::empty()))
                .await;
            assert_eq!(
                reply.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {name}"
            );
        }
    }
    let reply = upload(app.admin(), &files(shop, "/bad%20collection/a"), b"x", &[]).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    assert_eq!(reply.code(), "invalid_name");
    let reply = upload(app.admin(), &files(shop, "/docs/%FF"), b"x", &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(reply.code(), "invalid_path");

    assert_eq!(total(&app.get(&files(shop, "")).await.body), 0);
    assert!(files_on_disk(app.blob_root()).is_empty());
    // The longest name that is allowed is.
    let longest = "n".repeat(512);
    let reply = upload(
        app.admin(),
        &files(shop, &format!("/docs/{longest}")),
        b"x",
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn the_sweep_is_the_instance_admins_and_cleans_up(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let owner = app.user_with_role("owner", shop, AppRole::Owner).await;
    let session = app.session(owner.id).await;
    for method in [Method::GET, Method::POST] {
        let reply = app
            .caller(&session)
            .send(request(
                method.clone(),
                "/api/admin/files/sweep",
                &[],
                Body::empty(),
            ))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{method}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "forbidden");
    }
    let none = app.get("/api/admin/files/sweep").await;
    assert_eq!(none.status, StatusCode::OK, "{}", none.body);
    assert_eq!(none.body, Value::Null, "the refused POST did not sweep");

    // A file whose bytes are gone, and bytes no file refers to.
    let put = upload(
        app.admin(),
        &files(shop, "/docs/gone.txt"),
        b"soon gone",
        &[],
    )
    .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    let lost = only_blob(&app);
    std::fs::remove_file(&lost).unwrap();
    let shard = app.blob_root().join("ab").join("cd");
    std::fs::create_dir_all(&shard).unwrap();
    let orphan = shard.join(format!("abcd{}", "0".repeat(28)));
    std::fs::write(&orphan, b"nobody's").unwrap();
    let kept = upload(app.admin(), &files(shop, "/docs/kept.txt"), b"kept", &[]).await;
    assert_eq!(kept.status, StatusCode::CREATED, "{}", kept.body);

    let swept = app
        .send(request(
            Method::POST,
            "/api/admin/files/sweep",
            &[],
            Body::empty(),
        ))
        .await;
    assert_eq!(swept.status, StatusCode::OK, "{}", swept.body);
    let report = &swept.body;
    assert_eq!(report["orphan_blobs_removed"], 1, "{report}");
    assert_eq!(report["files_checked"], 2, "{report}");
    assert_eq!(report["missing_total"], 1, "{report}");
    assert_eq!(
        report["missing"],
        json!([{
            "app_id": shop,
            "collection": "docs",
            "name": "gone.txt",
            "blob_key": lost.file_name().unwrap().to_str().unwrap(),
        }])
    );
    assert!(!orphan.exists());
    assert_eq!(
        download(&app, &files(shop, "/docs/kept.txt"), &[])
            .await
            .bytes(),
        b"kept"
    );

    let last = app.get("/api/admin/files/sweep").await;
    assert_eq!(&last.body, report);
}
