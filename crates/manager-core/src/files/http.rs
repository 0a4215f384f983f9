//! `/apps/{id}/files`: an app's files. List them, download one (conditionally, or a byte
//! range of it), upload one as a stream, delete one, read the app's usage; and the sweep's
//! report, for instance admins.
//!
//! Changes go through the same [`FilesService`] scripts use, so they fire the app's files
//! triggers (at depth 1) like any other change. Bytes stream both ways: an upload goes to
//! the blob store as it arrives, bounded by the file limit and the app's quota rather
//! than by the admin API's body limit, and a download is never held in memory whole.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt, stream};
use picloud_shared::files::{
    DEFAULT_CONTENT_TYPE, DEFAULT_FILE_LIST_LIMIT, MAX_FILE_LIST_LIMIT, corruption, read_error,
    slice,
};
use picloud_shared::{
    AppId, BodyTimedOut, ByteRange, ByteStream, Capability, CollectionName, ContentType, ErrorCode,
    ErrorEnvelope, FileDownload, FileInfo, FileListOptions, FileMetadata, FileName, FileWrite,
    FilesService, FilesUsage, ServiceError, WriteMode,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::auth::Auth;
use crate::apps::AppRepository;
use crate::apps::http::authorized_app;
use crate::files::{FileSweeper, SweepReport};
use crate::http::error::ApiError;
use crate::http::extract::{ItemPath, PathId, Query, collection_name};
use crate::http::{AdminState, Page};

/// What the files routes work with.
#[derive(Clone)]
pub struct FilesState {
    /// Apps' files, read and changed as the caller.
    pub files: Arc<dyn FilesService>,
    /// Apps, to check the caller may see the one a path names.
    pub apps: Arc<dyn AppRepository>,
    /// The sweep, run and reported through the API.
    pub sweeper: Arc<FileSweeper>,
}

/// A file's version, 1 when created and one more on every update.
const FILE_VERSION: HeaderName = HeaderName::from_static("x-picloud-file-version");

/// A file's own metadata as a JSON object of strings (see [`metadata_header`]).
const FILE_METADATA: HeaderName = HeaderName::from_static("x-picloud-metadata");

/// Served bytes are whatever someone uploaded, on the admin API's origin: never let a
/// browser run them as a page of that origin (an opaque origin, no scripts), nor guess a
/// more active type than the stored one.
const DOWNLOAD_POLICY: &str = "sandbox";

/// A file's bytes, exactly as stored: the schema of upload and download bodies, which
/// stream, so no value of it is ever made.
pub(crate) enum FileBytes {}

impl utoipa::PartialSchema for FileBytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some("A file's bytes, exactly as stored"))
            .into()
    }
}

impl utoipa::ToSchema for FileBytes {}

pub(crate) fn routes() -> OpenApiRouter<AdminState> {
    // Uploads are bounded by the file limit and the quota as the bytes stream. The admin
    // API's body limit (`DefaultBodyLimit`) applies only to extractors that buffer a body,
    // and the upload reads the raw one, so it never reaches them.
    OpenApiRouter::new()
        .routes(routes!(list_files))
        .routes(routes!(files_usage))
        .routes(routes!(sweep_report, run_sweep))
        .routes(routes!(download_file, upload_file, delete_file))
}

/// Query of `GET /api/admin/apps/{id}/files`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListFilesQuery {
    /// Only this collection's files; every collection when absent or empty.
    pub collection: Option<String>,
    /// Only names starting with this text.
    pub prefix: Option<String>,
    /// Page size, 1 to 1000; 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Continue after this file (the previous page's `next_cursor`).
    pub cursor: Option<String>,
}

fn file_name(raw: &str) -> Result<FileName, ApiError> {
    FileName::parse(raw).map_err(|e| ApiError::new(ErrorCode::InvalidName, e.to_string()))
}

fn file_not_found(collection: &CollectionName, name: &FileName) -> ApiError {
    ApiError::not_found(format!(
        "file '{name}' not found in collection '{collection}'"
    ))
}

/// List an app's files in `(collection, name)` order (bytewise), a page at a time.
#[utoipa::path(
    get,
    path = "/apps/{id}/files",
    tag = "files",
    params(("id" = String, Path, format = Uuid, description = "App id"), ListFilesQuery),
    responses(
        (status = 200, description = "One page of files", body = Page<FileInfo>),
        (status = 400, description = "The id is not a UUID, or bad query parameters", body = ErrorEnvelope),
        (status = 403, description = "No `data:read`", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 422, description = "Invalid collection name (`invalid_name`), prefix or cursor (`invalid_argument`)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn list_files(
    State(state): State<FilesState>,
    auth: Auth,
    PathId(id): PathId<AppId>,
    Query(query): Query<ListFilesQuery>,
) -> Result<axum::Json<Page<FileInfo>>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_FILE_LIST_LIMIT);
    if !(1..=MAX_FILE_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_query(format!(
            "limit must be between 1 and {MAX_FILE_LIST_LIMIT}"
        )));
    }
    authorized_app(state.apps.as_ref(), &auth, id, Capability::AppFilesRead).await?;
    let collection = query
        .collection
        .as_deref()
        .filter(|raw| !raw.is_empty())
        .map(collection_name)
        .transpose()?;
    let options = FileListOptions {
        collection,
        prefix: query.prefix,
        limit,
        cursor: query.cursor,
    };
    let page = state.files.list(&auth.acting_in(id), options).await?;
    // The service's own cursor (the last `collection/name`) is already opaque enough.
    Ok(axum::Json(Page {
        items: page.files,
        next_cursor: page.next_cursor,
    }))
}

/// How much of its file quota an app uses.
#[utoipa::path(
    get,
    path = "/apps/{id}/files-usage",
    tag = "files",
    params(("id" = String, Path, format = Uuid, description = "App id")),
    responses(
        (status = 200, description = "The app's files, their bytes and its quota", body = FilesUsage),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "No `data:read`", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn files_usage(
    State(state): State<FilesState>,
    auth: Auth,
    PathId(id): PathId<AppId>,
) -> Result<axum::Json<FilesUsage>, ApiError> {
    authorized_app(state.apps.as_ref(), &auth, id, Capability::AppFilesRead).await?;
    Ok(axum::Json(state.files.usage(&auth.acting_in(id)).await?))
}

/// Download a file (`HEAD` answers the same headers without the bytes, and ignores
/// `Range`). The bytes are checked against their SHA-256 as they stream: a file found
/// corrupted before the headers leave answers 500 `file_corrupted`; one found corrupted
/// later (past its first 256 KiB) ends the transfer short, so a client never receives all
/// of a wrong file.
///
/// Request headers: `If-None-Match` (`*`, or entity tags: 304 when one is the file's
/// `ETag`; weak tags compare equal); `Range` (one range, `bytes=a-b`, `bytes=a-` or
/// `bytes=-n`; several ranges, or one that does not parse, get the whole file);
/// `If-Range` (an entity tag: `Range` holds only while it is the file's `ETag`, otherwise
/// the whole file is sent). They are described here rather than as parameters: a header
/// value with a control character is refused by the HTTP layer itself (a bare 400)
/// before any route sees it.
#[utoipa::path(
    get,
    path = "/apps/{id}/files/{collection}/{name}",
    tag = "files",
    params(
        ("id" = String, Path, format = Uuid, description = "App id"),
        ("collection" = String, Path, description = "Collection name", pattern = "^[A-Za-z0-9_.:-]{1,128}$"),
        ("name" = String, Path, description = "File name, percent-encoded (`/` as `%2F`)"),
    ),
    responses(
        (status = 200, description = "The file's bytes, with the file's own `Content-Type`", content_type = "application/octet-stream", body = FileBytes,
            headers(
                ("etag" = String, description = "`\"<sha256 hex>\"`"),
                ("last-modified" = String, description = "When the bytes were last written (HTTP date)"),
                ("accept-ranges" = String, description = "`bytes`"),
                ("x-picloud-file-version" = i64, description = "The file's version: 1 when created, one more on every update"),
                ("x-picloud-metadata" = String, description = "The file's metadata as a compact JSON object of strings, non-ASCII characters as `\\u` escapes"),
            )),
        (status = 206, description = "The requested range of the file's bytes", content_type = "application/octet-stream", body = FileBytes,
            headers(
                ("content-range" = String, description = "`bytes a-b/size`"),
                ("etag" = String, description = "`\"<sha256 hex>\"`"),
            )),
        (status = 304, description = "The file still has the `ETag` given in `If-None-Match`; no body",
            headers(("etag" = String, description = "`\"<sha256 hex>\"`"))),
        (status = 400, description = "The id is not a UUID, or the path cannot be decoded", body = ErrorEnvelope),
        (status = 403, description = "No `data:read`", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see), or no such file", body = ErrorEnvelope),
        (status = 416, description = "The range lies outside the file (`range_not_satisfiable`)", body = ErrorEnvelope,
            headers(("content-range" = String, description = "`bytes */size`"))),
        (status = 422, description = "Invalid collection or file name", body = ErrorEnvelope),
        (status = 500, description = "The stored bytes do not match their checksum, or are gone (`file_corrupted`)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn download_file(
    State(state): State<FilesState>,
    auth: Auth,
    method: Method,
    headers: HeaderMap,
    ItemPath(id, collection, name): ItemPath,
) -> Result<Response, ApiError> {
    authorized_app(state.apps.as_ref(), &auth, id, Capability::AppFilesRead).await?;
    let collection = collection_name(&collection)?;
    let name = file_name(&name)?;
    let ctx = auth.acting_in(id);
    let conditional = headers.contains_key(header::IF_NONE_MATCH);
    // What needs only the metadata never opens the bytes.
    if method == Method::HEAD || conditional {
        let info = state
            .files
            .head(&ctx, &collection, &name)
            .await?
            .ok_or_else(|| file_not_found(&collection, &name))?;
        if none_match(&headers, &info) {
            return Ok(not_modified(&info));
        }
        if method == Method::HEAD {
            return Ok(file_response(
                StatusCode::OK,
                &info,
                info.size,
                Body::empty(),
            ));
        }
    }
    let FileDownload { info, body } = state
        .files
        .open(&ctx, &collection, &name)
        .await?
        .ok_or_else(|| file_not_found(&collection, &name))?;
    // Replaced since the `head` above, maybe with the very bytes the client holds.
    if none_match(&headers, &info) {
        return Ok(not_modified(&info));
    }
    let range = match requested_range(&headers, &info) {
        RangeAsk::Unsatisfiable => return Ok(range_not_satisfiable(info.size)),
        RangeAsk::Whole => None,
        RangeAsk::Part(range) => Some(range),
    };
    let body = first_chunk_checked(body).await?;
    Ok(match range {
        None => file_response(StatusCode::OK, &info, info.size, Body::from_stream(body)),
        Some(range) => {
            let mut response = file_response(
                StatusCode::PARTIAL_CONTENT,
                &info,
                range.end - range.start,
                Body::from_stream(slice(body, range)),
            );
            let content_range = format!("bytes {}-{}/{}", range.start, range.end - 1, info.size);
            if let Ok(value) = HeaderValue::from_str(&content_range) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            response
        }
    })
}

/// The body with its first chunk already read: the file store holds each chunk back until
/// the next one is read (the last until the checksum matched), so a file of one chunk is
/// fully checked here, while an error answer can still be given instead of its headers.
async fn first_chunk_checked(mut body: ByteStream) -> Result<ByteStream, ApiError> {
    match body.next().await {
        None => Ok(Box::pin(stream::empty())),
        Some(Ok(first)) => Ok(Box::pin(stream::iter([Ok(first)]).chain(body))),
        // Logged where it was found, with the blob's path.
        Some(Err(err)) if corruption(&err).is_some() => Err(read_error(&err).into()),
        Some(Err(err)) => Err(ApiError::internal(&err)),
    }
}

/// The file's entity tag: its SHA-256, a strong validator.
fn etag(info: &FileInfo) -> HeaderValue {
    // 64 hex digits between quotes: always a valid header value.
    HeaderValue::from_str(&format!("\"{}\"", info.sha256))
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// Whether `If-None-Match` names the file: `*`, or a list holding its tag (weak or not,
/// as the weak comparison `If-None-Match` uses says).
fn none_match(headers: &HeaderMap, info: &FileInfo) -> bool {
    let ours = format!("\"{}\"", info.sha256);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
}

fn not_modified(info: &FileInfo) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    response.headers_mut().insert(header::ETAG, etag(info));
    response
}

/// A file's answer: its headers, `length` bytes of `body`.
fn file_response(status: StatusCode, info: &FileInfo, length: u64, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    // A stored content type is visible ASCII: always a valid header value.
    let content_type = HeaderValue::from_str(info.content_type.as_str())
        .unwrap_or_else(|_| HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::ETAG, etag(info));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let modified = info
        .updated_at
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    if let Ok(modified) = HeaderValue::from_str(&modified) {
        headers.insert(header::LAST_MODIFIED, modified);
    }
    headers.insert(FILE_VERSION, HeaderValue::from(info.version));
    if let Some(metadata) = metadata_header(&info.metadata) {
        headers.insert(FILE_METADATA, metadata);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOWNLOAD_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The metadata as compact JSON with every non-ASCII character as a `\u` escape: still
/// JSON that decodes to the same map, and always a valid header value (values hold no
/// control characters, and JSON escapes them anyway).
fn metadata_header(metadata: &FileMetadata) -> Option<HeaderValue> {
    let json = serde_json::to_string(metadata.entries()).ok()?;
    let mut ascii = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                let _ = write!(ascii, "\\u{unit:04x}");
            }
        }
    }
    HeaderValue::from_str(&ascii).ok()
}

/// What a request's `Range` asks of a file.
#[derive(Debug, PartialEq, Eq)]
enum RangeAsk {
    /// No usable `Range` (none, several ranges, one that does not parse, or an `If-Range`
    /// that no longer holds): the whole file, 200.
    Whole,
    /// One range within the file, 206.
    Part(ByteRange),
    /// One range wholly outside the file, 416.
    Unsatisfiable,
}

fn requested_range(headers: &HeaderMap, info: &FileInfo) -> RangeAsk {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeAsk::Whole;
    };
    // `If-Range` compares strongly: only the file's exact tag keeps the range; a weak
    // tag or a date (weak at one-second resolution) never does.
    let if_range_holds = headers.get(header::IF_RANGE).is_none_or(|value| {
        value
            .to_str()
            .is_ok_and(|tag| tag.trim() == format!("\"{}\"", info.sha256))
    });
    if !if_range_holds {
        return RangeAsk::Whole;
    }
    byte_range(range, info.size)
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` against a file of `size` bytes
/// (RFC 9110 §14.1.2). Anything else is ignored, as the RFC allows.
fn byte_range(header: &str, size: u64) -> RangeAsk {
    let Some((unit, spec)) = header.trim().split_once('=') else {
        return RangeAsk::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeAsk::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |text: &str| {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            // All digits, so only an overflow fails: a position past any file.
            .then(|| text.parse::<u64>().unwrap_or(u64::MAX))
    };
    if first.is_empty() {
        let Some(suffix) = number(last) else {
            return RangeAsk::Whole;
        };
        return match (suffix, size) {
            (0, _) => RangeAsk::Unsatisfiable,
            // The last n bytes of nothing: there is no range to send, so send it all.
            (_, 0) => RangeAsk::Whole,
            _ => RangeAsk::Part(ByteRange {
                start: size - suffix.min(size),
                end: size,
            }),
        };
    }
    let Some(start) = number(first) else {
        return RangeAsk::Whole;
    };
    let last = if last.is_empty() {
        None
    } else {
        match number(last) {
            Some(last) if last >= start => Some(last),
            _ => return RangeAsk::Whole,
        }
    };
    if start >= size {
        return RangeAsk::Unsatisfiable;
    }
    let end = last.map_or(size, |last| last.saturating_add(1).min(size));
    RangeAsk::Part(ByteRange { start, end })
}

fn range_not_satisfiable(size: u64) -> Response {
    let mut response = ApiError::new(
        ErrorCode::RangeNotSatisfiable,
        format!("the range asked for lies outside the file's {size} bytes"),
    )
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    response
}

/// Upload a file, streamed: the body is the file's bytes, replacing the file's bytes and
/// metadata if it exists. Fires the app's matching files triggers.
///
/// Request headers: `X-PiCloud-Metadata` (the file's metadata, a JSON object of string
/// values; none when absent); `If-None-Match: *` (only create the file: 412 if it exists);
/// `If-Match: *` (only replace it: 412 if it does not exist).
#[utoipa::path(
    put,
    path = "/apps/{id}/files/{collection}/{name}",
    tag = "files",
    params(
        ("id" = String, Path, format = Uuid, description = "App id"),
        ("collection" = String, Path, description = "Collection name", pattern = "^[A-Za-z0-9_.:-]{1,128}$"),
        ("name" = String, Path, description = "File name, percent-encoded (`/` as `%2F`)"),
    ),
    request_body(content = FileBytes, content_type = "application/octet-stream",
        description = "The file's bytes. `Content-Type` is stored as the file's type (`application/octet-stream` when absent); a `Content-Length` over the file limit or the quota is refused before a byte is read"),
    responses(
        (status = 200, description = "The file was replaced", body = FileInfo,
            headers(("etag" = String, description = "`\"<sha256 hex>\"`"))),
        (status = 201, description = "The file was created", body = FileInfo,
            headers(("etag" = String, description = "`\"<sha256 hex>\"`"))),
        (status = 400, description = "The id is not a UUID, the path cannot be decoded, or the body could not be read (`unreadable_body`)", body = ErrorEnvelope),
        (status = 403, description = "No `data:write`, or not a developer of the app", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 408, description = "The body did not arrive within the server's body timeout (`request_timeout`)", body = ErrorEnvelope),
        (status = 412, description = "`If-None-Match: *` and the file exists, or `If-Match: *` and it does not (`precondition_failed`)", body = ErrorEnvelope),
        (status = 413, description = "The file is over the file limit (`payload_too_large`)", body = ErrorEnvelope),
        (status = 422, description = "Invalid collection or file name (`invalid_name`); unusable `Content-Type`, metadata or precondition (`invalid_argument`)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
        (status = 507, description = "The app's quota (`quota_exceeded`) or the disk (`storage_full`) has no room for the file; nothing was kept", body = ErrorEnvelope),
    )
)]
pub(crate) async fn upload_file(
    State(state): State<FilesState>,
    auth: Auth,
    ItemPath(id, collection, name): ItemPath,
    request: Request,
) -> Result<Response, ApiError> {
    authorized_app(state.apps.as_ref(), &auth, id, Capability::AppFilesWrite).await?;
    let collection = collection_name(&collection)?;
    let name = file_name(&name)?;
    let (parts, body) = request.into_parts();
    let write = FileWrite {
        mode: write_mode(&parts.headers)?,
        content_type: content_type(&parts.headers)?,
        metadata: metadata(&parts.headers)?,
        expected_size: parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok()),
    };
    let mode = write.mode;
    // The service sees a body failure as an I/O error; the cause itself (a timeout or
    // not) stays here, to choose the answer.
    let failure: Arc<Mutex<Option<axum::Error>>> = Arc::default();
    let seen = failure.clone();
    let body: ByteStream = Box::pin(body.into_data_stream().map_err(move |err| {
        let io = io::Error::other(err.to_string());
        if let Ok(mut slot) = seen.lock() {
            *slot = Some(err);
        }
        io
    }));
    let written = state
        .files
        .write(&auth.acting_in(id), &collection, &name, write, body)
        .await;
    let info = written.map_err(|err| {
        let failure = failure.lock().ok().and_then(|mut slot| slot.take());
        upload_refused(err, mode, failure)
    })?;
    tracing::info!(
        app_id = %id,
        %collection,
        size = info.size,
        version = info.version,
        user = %auth.username,
        "file uploaded"
    );
    let status = if info.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, [(header::ETAG, etag(&info))], axum::Json(info)).into_response())
}

/// `If-None-Match: *` creates only, `If-Match: *` replaces only. Other preconditions
/// (entity tags) are refused rather than ignored: the service cannot compare and write
/// atomically, and dropping one silently would lose the protection it asks for.
fn write_mode(headers: &HeaderMap) -> Result<WriteMode, ApiError> {
    let star = |name: HeaderName| match headers.get(&name) {
        None => Ok(false),
        Some(value) if value.as_bytes().trim_ascii() == b"*" => Ok(true),
        Some(_) => Err(ApiError::invalid_argument(format!(
            "only '{name}: *' is supported on uploads"
        ))),
    };
    match (star(header::IF_NONE_MATCH)?, star(header::IF_MATCH)?) {
        (true, true) => Err(ApiError::new(
            ErrorCode::PreconditionFailed,
            "'if-none-match: *' and 'if-match: *' cannot both hold",
        )),
        (true, false) => Ok(WriteMode::Create),
        (false, true) => Ok(WriteMode::Update),
        (false, false) => Ok(WriteMode::Upsert),
    }
}

fn content_type(headers: &HeaderMap) -> Result<Option<ContentType>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let refused =
        |detail: String| ApiError::invalid_argument(format!("the content-type header {detail}"));
    let text = value
        .to_str()
        .map_err(|_| refused("is not visible ASCII".to_owned()))?;
    ContentType::parse(text.trim())
        .map(Some)
        .map_err(|err| refused(format!("cannot be stored: {err}")))
}

fn metadata(headers: &HeaderMap) -> Result<FileMetadata, ApiError> {
    let Some(value) = headers.get(&FILE_METADATA) else {
        return Ok(FileMetadata::default());
    };
    let entries: BTreeMap<String, String> = std::str::from_utf8(value.as_bytes())
        .ok()
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or_else(|| {
            ApiError::invalid_argument(format!(
                "the {FILE_METADATA} header must be a JSON object of string values"
            ))
        })?;
    Ok(FileMetadata::new(entries)?)
}

/// An upload's refusal: the mode's refusals as 412, the file limit as 413 (this route's
/// body is the file), and a body that did not arrive as 408 or 400.
fn upload_refused(err: ServiceError, mode: WriteMode, failure: Option<axum::Error>) -> ApiError {
    match (err, failure) {
        (ServiceError::InvalidArgument(_), Some(failure)) if BodyTimedOut::caused(&failure) => {
            ApiError::new(
                ErrorCode::RequestTimeout,
                "the request body did not arrive in time",
            )
        }
        (ServiceError::InvalidArgument(_), Some(failure)) => ApiError::new(
            ErrorCode::UnreadableBody,
            format!("request body could not be read: {failure}"),
        ),
        (ServiceError::Conflict(message), _) if mode == WriteMode::Create => {
            ApiError::new(ErrorCode::PreconditionFailed, message)
        }
        (ServiceError::NotFound(message), _) if mode == WriteMode::Update => {
            ApiError::new(ErrorCode::PreconditionFailed, message)
        }
        (err @ ServiceError::TooLarge { .. }, _) => {
            ApiError::new(ErrorCode::PayloadTooLarge, err.to_string())
        }
        (err, _) => err.into(),
    }
}

/// Delete a file. Fires the app's matching files triggers.
#[utoipa::path(
    delete,
    path = "/apps/{id}/files/{collection}/{name}",
    tag = "files",
    params(
        ("id" = String, Path, format = Uuid, description = "App id"),
        ("collection" = String, Path, description = "Collection name", pattern = "^[A-Za-z0-9_.:-]{1,128}$"),
        ("name" = String, Path, description = "File name, percent-encoded (`/` as `%2F`)"),
    ),
    responses(
        (status = 204, description = "The file is gone"),
        (status = 400, description = "The id is not a UUID, or the path cannot be decoded", body = ErrorEnvelope),
        (status = 403, description = "No `data:write`, or not a developer of the app", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see), or no such file", body = ErrorEnvelope),
        (status = 422, description = "Invalid collection or file name", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn delete_file(
    State(state): State<FilesState>,
    auth: Auth,
    ItemPath(id, collection, name): ItemPath,
) -> Result<StatusCode, ApiError> {
    authorized_app(state.apps.as_ref(), &auth, id, Capability::AppFilesWrite).await?;
    let collection = collection_name(&collection)?;
    let name = file_name(&name)?;
    let existed = state
        .files
        .delete(&auth.acting_in(id), &collection, &name)
        .await?;
    if !existed {
        return Err(file_not_found(&collection, &name));
    }
    tracing::info!(app_id = %id, %collection, user = %auth.username, "file deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The last file sweep's report: `null` when none has run since start-up. Instance admins
/// only.
#[utoipa::path(
    get,
    path = "/files/sweep",
    tag = "files",
    responses(
        (status = 200, description = "The last sweep's report, or `null`", body = Option<SweepReport>),
        (status = 403, description = "Not an instance admin (with `app:admin`)", body = ErrorEnvelope),
    )
)]
pub(crate) async fn sweep_report(
    State(state): State<FilesState>,
    auth: Auth,
) -> Result<axum::Json<Option<SweepReport>>, ApiError> {
    auth.require_instance_admin()?;
    Ok(axum::Json(state.sweeper.last_report()))
}

/// Sweep now (after the sweep in progress, if one is): remove stale uploads and blobs no
/// file refers to, and list the files whose bytes are gone. Instance admins only.
#[utoipa::path(
    post,
    path = "/files/sweep",
    tag = "files",
    responses(
        (status = 200, description = "What the sweep found and did", body = SweepReport),
        (status = 403, description = "Not an instance admin (with `app:admin`)", body = ErrorEnvelope),
        (status = 500, description = "The blob store could not be read", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn run_sweep(
    State(state): State<FilesState>,
    auth: Auth,
) -> Result<axum::Json<SweepReport>, ApiError> {
    auth.require_instance_admin()?;
    let report = state.sweeper.sweep().await?;
    tracing::info!(user = %auth.username, "file sweep run on request");
    Ok(axum::Json(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: u64, end: u64) -> RangeAsk {
        RangeAsk::Part(ByteRange { start, end })
    }

    #[test]
    fn single_ranges_are_cut_to_the_file() {
        assert_eq!(byte_range("bytes=0-3", 10), part(0, 4));
        assert_eq!(byte_range("bytes=4-", 10), part(4, 10));
        assert_eq!(byte_range("bytes=-3", 10), part(7, 10));
        assert_eq!(byte_range("bytes=-30", 10), part(0, 10));
        assert_eq!(byte_range("bytes=5-99", 10), part(5, 10));
        assert_eq!(byte_range("BYTES = 1 - 2", 10), part(1, 3));
        assert_eq!(
            byte_range("bytes=9-99999999999999999999999", 10),
            part(9, 10)
        );
    }

    #[test]
    fn ranges_outside_the_file_are_unsatisfiable() {
        for outside in [
            "bytes=10-",
            "bytes=10-20",
            "bytes=-0",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(
                byte_range(outside, 10),
                RangeAsk::Unsatisfiable,
                "{outside}"
            );
        }
        assert_eq!(byte_range("bytes=0-", 0), RangeAsk::Unsatisfiable);
        assert_eq!(byte_range("bytes=-5", 0), RangeAsk::Whole);
    }

    #[test]
    fn ranges_that_do_not_parse_or_are_several_get_the_whole_file() {
        for ignored in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=3-1",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=1",
        ] {
            assert_eq!(byte_range(ignored, 10), RangeAsk::Whole, "{ignored}");
        }
    }

    #[test]
    fn metadata_headers_are_ascii_json_of_the_same_map() {
        let metadata = FileMetadata::new(BTreeMap::from([
            ("city".to_owned(), "Zürich 🏔".to_owned()),
            ("quote".to_owned(), "say \"hi\"".to_owned()),
        ]))
        .unwrap();
        let header = metadata_header(&metadata).unwrap();
        let text = header.to_str().unwrap();
        assert!(text.is_ascii(), "{text}");
        let back: BTreeMap<String, String> = serde_json::from_str(text).unwrap();
        assert_eq!(&back, metadata.entries());
    }
}
