//! The files service: blobs under `(app, collection, name)` with their metadata, the
//! validated names and options that address them, the limits every implementation
//! enforces the same way, and the byte streams uploads and downloads travel as.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_core::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::kv::{KvNameError, check_length, check_no_control};
use crate::names::string_newtype_impls;
use crate::{Capability, CollectionName, EventSubject, ServiceContext, ServiceError, ServiceEvent};

/// Page size of [`FilesService::list`] when none is asked for.
pub const DEFAULT_FILE_LIST_LIMIT: u32 = 100;

/// Largest page [`FilesService::list`] returns.
pub const MAX_FILE_LIST_LIMIT: u32 = 1000;

/// The content type of a file written without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A file's name within its collection: 1 to 512 bytes of UTF-8 without control or
/// bidirectional control characters or backslashes. `/` separates segments, as in an
/// object store's keys (`2024/06/report.pdf`), and no segment may be empty, `.` or `..`.
/// A name never becomes a path on disk (the bytes live at a path the server chooses), so
/// these rules keep names unambiguous rather than guard the disk.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
#[serde(try_from = "String", into = "String")]
pub struct FileName(String);

impl FileName {
    /// The longest name accepted, in bytes.
    pub const MAX_LEN: usize = 512;

    /// Validates a file name.
    pub fn parse(raw: &str) -> Result<Self, KvNameError> {
        const KIND: &str = "file name";
        check_length(KIND, raw, Self::MAX_LEN)?;
        check_no_control(KIND, raw)?;
        let bad = |rule| KvNameError::BadCharacters { kind: KIND, rule };
        if raw.contains('\\') {
            return Err(bad("must not contain '\\'"));
        }
        if raw.split('/').any(|segment| segment.is_empty()) {
            return Err(bad(
                "must not start or end with '/' or contain an empty segment ('//')",
            ));
        }
        if raw
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return Err(bad("must not contain a '.' or '..' segment"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype_impls!(FileName, KvNameError);

/// A file's media type as stored and answered in `Content-Type`: `type/subtype` made of
/// RFC 9110 token characters, optionally followed by `;` parameters of visible ASCII, at
/// most 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
#[serde(try_from = "String", into = "String")]
pub struct ContentType(String);

impl ContentType {
    /// The longest content type accepted, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Validates a content type.
    pub fn parse(raw: &str) -> Result<Self, KvNameError> {
        const KIND: &str = "content type";
        check_length(KIND, raw, Self::MAX_LEN)?;
        let (essence, parameters) = raw.split_once(';').unwrap_or((raw, ""));
        let valid_essence = essence
            .split_once('/')
            .is_some_and(|(kind, subtype)| is_token(kind) && is_token(subtype));
        let valid_parameters = parameters
            .bytes()
            .all(|b| b == b' ' || b.is_ascii_graphic());
        if !valid_essence || !valid_parameters {
            return Err(KvNameError::BadCharacters {
                kind: KIND,
                rule: "must look like 'type/subtype', optionally followed by '; parameters'",
            });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The content type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `application/octet-stream`, for bytes of no declared type.
    pub fn octet_stream() -> Self {
        Self(DEFAULT_CONTENT_TYPE.to_owned())
    }
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

string_newtype_impls!(ContentType, KvNameError);

/// A file's own metadata: at most [`Self::MAX_ENTRIES`] string pairs, each name 1 to 64
/// ASCII letters, digits, `_`, `-` and `.`, each value at most 1,024 bytes without control
/// characters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = BTreeMap<String, String>))]
pub struct FileMetadata(BTreeMap<String, String>);

impl FileMetadata {
    /// Most entries a file's metadata holds.
    pub const MAX_ENTRIES: usize = 32;
    /// Longest entry name, in bytes.
    pub const MAX_NAME_LEN: usize = 64;
    /// Longest entry value, in bytes.
    pub const MAX_VALUE_LEN: usize = 1024;

    /// Validates metadata entries.
    pub fn new(entries: BTreeMap<String, String>) -> Result<Self, ServiceError> {
        if entries.len() > Self::MAX_ENTRIES {
            return Err(ServiceError::InvalidArgument(format!(
                "metadata has {} entries, over the limit of {}",
                entries.len(),
                Self::MAX_ENTRIES
            )));
        }
        for (name, value) in &entries {
            let named = |problem: String| {
                ServiceError::InvalidArgument(format!("metadata entry {name:?} {problem}"))
            };
            if name.is_empty()
                || name.len() > Self::MAX_NAME_LEN
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            {
                return Err(named(format!(
                    "must be named with 1 to {} ASCII letters, digits, '_', '-' and '.'",
                    Self::MAX_NAME_LEN
                )));
            }
            if value.len() > Self::MAX_VALUE_LEN {
                return Err(named(format!(
                    "is {} bytes, over the limit of {} bytes",
                    value.len(),
                    Self::MAX_VALUE_LEN
                )));
            }
            if value
                .chars()
                .any(|c| c.is_control() || crate::is_bidi_control(c))
            {
                return Err(named("must not contain control characters".to_owned()));
            }
        }
        Ok(Self(entries))
    }

    /// The entries, by name.
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// A change to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    /// A file that did not exist was written.
    Create,
    /// An existing file's bytes were replaced.
    Update,
    /// A file was deleted.
    Delete,
}

impl FileOp {
    /// Every op, in canonical order.
    pub const ALL: [Self; 3] = [Self::Create, Self::Update, Self::Delete];

    /// The op's stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }

    /// The op with this stored name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

/// What is known of a stored file, its bytes aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileInfo {
    /// Its collection.
    pub collection: CollectionName,
    /// Its name.
    pub name: FileName,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type.
    pub content_type: ContentType,
    /// The SHA-256 of its bytes, as 64 lowercase hex digits; the admin API's `ETag`.
    pub sha256: String,
    /// Its own metadata.
    pub metadata: FileMetadata,
    /// 1 when created, one more on every update.
    pub version: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its bytes were last written.
    pub updated_at: DateTime<Utc>,
}

impl FileInfo {
    /// What a triggered script sees of the file (never its bytes).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "collection": self.collection.as_str(),
            "name": self.name.as_str(),
            "size": self.size,
            "content_type": self.content_type.as_str(),
            "sha256": self.sha256,
            "metadata": self.metadata.entries(),
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

/// A SHA-256 digest as [`FileInfo::sha256`] shows it: 64 lowercase hex digits.
pub fn sha256_hex(digest: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    digest
        .iter()
        .fold(String::with_capacity(64), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// Which page of an app's files [`FilesService::list`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileListOptions {
    /// Only this collection's files; every collection when `None`.
    pub collection: Option<CollectionName>,
    /// Only names starting with this text (an empty prefix is no filter).
    pub prefix: Option<String>,
    /// Page size, 1 to [`MAX_FILE_LIST_LIMIT`]; [`DEFAULT_FILE_LIST_LIMIT`] by default.
    pub limit: u32,
    /// Continue after this file (the previous page's `next_cursor`).
    pub cursor: Option<String>,
}

impl Default for FileListOptions {
    fn default() -> Self {
        Self {
            collection: None,
            prefix: None,
            limit: DEFAULT_FILE_LIST_LIMIT,
            cursor: None,
        }
    }
}

/// [`FileListOptions`] after validation, in the form implementations query with. Pages
/// are in `(collection, name)` order, bytewise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileListBounds {
    /// Only this collection.
    pub collection: Option<CollectionName>,
    /// Names must start with this (empty for none).
    pub prefix: String,
    /// Names must be `<` this, when set (the first string after every name with the prefix).
    pub until: Option<String>,
    /// Continue after this `(collection, name)`.
    pub after: Option<(String, String)>,
    /// Page size.
    pub limit: u32,
}

impl FileListBounds {
    /// Whether a file belongs on a page with these bounds (before the limit is applied).
    pub fn contains(&self, collection: &str, name: &str) -> bool {
        self.collection
            .as_ref()
            .is_none_or(|wanted| wanted.as_str() == collection)
            && name.starts_with(&self.prefix)
            && self
                .after
                .as_ref()
                .is_none_or(|(after_collection, after_name)| {
                    (collection, name) > (after_collection.as_str(), after_name.as_str())
                })
    }
}

impl FileListOptions {
    /// Validates the options: the limit in range, the prefix name-shaped, the cursor one
    /// this service handed out.
    pub fn bounds(&self) -> Result<FileListBounds, ServiceError> {
        let limit = self.limit;
        if !(1..=MAX_FILE_LIST_LIMIT).contains(&limit) {
            return Err(ServiceError::InvalidArgument(format!(
                "limit must be between 1 and {MAX_FILE_LIST_LIMIT}, not {limit}"
            )));
        }
        let prefix = self.prefix.clone().unwrap_or_default();
        if prefix.len() > FileName::MAX_LEN {
            return Err(KvNameError::TooLong {
                kind: "prefix",
                len: prefix.len(),
                max: FileName::MAX_LEN,
            }
            .into());
        }
        check_no_control("prefix", &prefix)?;
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(cursor) => Some(parse_cursor(cursor)?),
        };
        Ok(FileListBounds {
            collection: self.collection.clone(),
            until: crate::kv::prefix_successor(&prefix),
            prefix,
            after,
            limit,
        })
    }
}

/// A page's cursor: `collection/name` of its last file (a collection name has no `/`).
fn cursor_of(file: &FileInfo) -> String {
    format!("{}/{}", file.collection, file.name)
}

fn parse_cursor(cursor: &str) -> Result<(String, String), ServiceError> {
    let bad = || ServiceError::InvalidArgument("cursor is not one this list returned".to_owned());
    let (collection, name) = cursor.split_once('/').ok_or_else(bad)?;
    let collection = CollectionName::parse(collection).map_err(|_| bad())?;
    let name = FileName::parse(name).map_err(|_| bad())?;
    Ok((collection.as_str().to_owned(), name.as_str().to_owned()))
}

/// One page of an app's files, in `(collection, name)` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FilePage {
    /// The files on this page.
    pub files: Vec<FileInfo>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl FilePage {
    /// The page of `files` fetched with one more than `limit` (the extra one says whether
    /// another page follows), with the cursor of the next page.
    pub fn from_overfetch(mut files: Vec<FileInfo>, limit: u32) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = files.len() > limit;
        files.truncate(limit);
        let next_cursor = if more {
            files.last().map(cursor_of)
        } else {
            None
        };
        Self { files, next_cursor }
    }
}

/// Whether a write may create a file, replace one, or either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Only a file that does not exist yet; an existing one is a [`ServiceError::Conflict`].
    Create,
    /// Only an existing file; a missing one is a [`ServiceError::NotFound`].
    Update,
    /// Either.
    Upsert,
}

/// What a write stores beside the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// Create, update or either.
    pub mode: WriteMode,
    /// The media type; [`DEFAULT_CONTENT_TYPE`] when `None`.
    pub content_type: Option<ContentType>,
    /// The file's own metadata (replacing what it had).
    pub metadata: FileMetadata,
    /// The size the client announced (`Content-Length`), when it did: a body announced
    /// over a limit is refused before a byte is read.
    pub expected_size: Option<u64>,
}

/// Bytes as they travel: chunks, or the I/O error that ended them.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A file opened for reading: what it is, and its bytes. The body checks the bytes
/// against the stored SHA-256 and size as they pass and holds its last chunk back until
/// they matched; on a mismatch it ends with an error that [`corruption`] recognises
/// instead of that chunk, so no reader ever receives all of a wrong file.
pub struct FileDownload {
    /// The file opened (the version the body streams, even if it is replaced meanwhile).
    pub info: FileInfo,
    /// Its bytes.
    pub body: ByteStream,
}

impl fmt::Debug for FileDownload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileDownload")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Bytes that do not match what was stored for them: carried inside the `io::Error` a
/// download's body ends with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Corrupted(pub String);

impl Corrupted {
    /// The error a body ends with.
    pub fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// The corruption an I/O error of a download's body reports, if it is one.
pub fn corruption(err: &io::Error) -> Option<&Corrupted> {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<Corrupted>())
}

/// A download's body failure as a service error: [`ServiceError::Corrupted`] for bytes
/// that did not match, [`ServiceError::Unavailable`] for anything else.
pub fn read_error(err: &io::Error) -> ServiceError {
    match corruption(err) {
        Some(corrupted) => ServiceError::Corrupted(corrupted.0.clone()),
        None => ServiceError::Unavailable(format!("reading a file failed: {err}")),
    }
}

/// Reads a whole download into memory, refusing one larger than `max_bytes` before
/// reading it. A corrupted file fails as [`ServiceError::Corrupted`].
pub async fn read_to_vec(
    download: FileDownload,
    max_bytes: u64,
    what: &str,
) -> Result<Vec<u8>, ServiceError> {
    let size = download.info.size;
    if size > max_bytes {
        return Err(ServiceError::TooLarge {
            what: what.to_owned(),
            size: usize::try_from(size).unwrap_or(usize::MAX),
            limit: usize::try_from(max_bytes).unwrap_or(usize::MAX),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut body = download.body;
    while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
        bytes.extend_from_slice(&chunk.map_err(|err| read_error(&err))?);
    }
    Ok(bytes)
}

/// A byte range of a file: `start..end`, end exclusive, within its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// The first byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// The part `range` of `body`. The rest of `body` is still read (and not sent), so its
/// check against the stored SHA-256 completes before the range's last chunk is released:
/// a range of a corrupted file fails like the whole file would.
pub fn slice(body: ByteStream, range: ByteRange) -> ByteStream {
    Box::pin(Slice {
        inner: body,
        range,
        position: 0,
        held: None,
        done: false,
    })
}

struct Slice {
    inner: ByteStream,
    range: ByteRange,
    position: u64,
    /// The range's last piece, released once `inner` ended cleanly.
    held: Option<Bytes>,
    done: bool,
}

impl Stream for Slice {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(err))) => {
                    this.done = true;
                    this.held = None;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(this.held.take().map(Ok));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    let chunk_start = this.position;
                    let chunk_end = chunk_start + chunk.len() as u64;
                    this.position = chunk_end;
                    let from = this.range.start.max(chunk_start);
                    let to = this.range.end.min(chunk_end);
                    if from >= to {
                        continue;
                    }
                    let piece = chunk.slice(
                        usize::try_from(from - chunk_start).unwrap_or(0)
                            ..usize::try_from(to - chunk_start).unwrap_or(0),
                    );
                    if to == this.range.end {
                        // The range's last piece waits for the end of the file's check.
                        this.held = Some(piece);
                        continue;
                    }
                    return Poll::Ready(Some(Ok(piece)));
                }
            }
        }
    }
}

/// How much of its quota an app uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FilesUsage {
    /// How many files it holds.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The most bytes it may hold.
    pub quota_bytes: u64,
}

/// The limits every files implementation enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    /// The largest file, in bytes (`PICLOUD_FILES_MAX_FILE_BYTES`).
    pub max_file_bytes: u64,
    /// The most bytes one app's files may hold in all (`PICLOUD_FILES_APP_QUOTA_BYTES`).
    pub app_quota_bytes: u64,
}

impl FileLimits {
    /// 1 GiB per file.
    pub const DEFAULT_MAX_FILE_BYTES: u64 = 1024 * 1024 * 1024;
    /// 10 GiB per app.
    pub const DEFAULT_APP_QUOTA_BYTES: u64 = 10 * 1024 * 1024 * 1024;

    /// The most bytes a write may stream when the app already holds `used` bytes and the
    /// file it replaces (if any) holds `replaced`: the file limit, or the quota left once
    /// the replaced bytes are freed, whichever is smaller.
    pub fn write_budget(&self, used: u64, replaced: u64) -> u64 {
        let left = self
            .app_quota_bytes
            .saturating_sub(used.saturating_sub(replaced));
        self.max_file_bytes.min(left)
    }

    /// Refuses a write of `size` bytes that its budget cannot take, naming the limit it
    /// would break.
    pub fn check(
        &self,
        name: &FileName,
        size: u64,
        used: u64,
        replaced: u64,
    ) -> Result<(), ServiceError> {
        if size > self.max_file_bytes {
            return Err(ServiceError::TooLarge {
                what: format!("file '{name}'"),
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit: usize::try_from(self.max_file_bytes).unwrap_or(usize::MAX),
            });
        }
        let after = used.saturating_sub(replaced).saturating_add(size);
        if after > self.app_quota_bytes {
            return Err(ServiceError::QuotaExceeded(format!(
                "writing file '{name}' ({size} bytes) would put the app at {after} bytes, \
                 over its quota of {} bytes",
                self.app_quota_bytes
            )));
        }
        Ok(())
    }
}

impl Default for FileLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: Self::DEFAULT_MAX_FILE_BYTES,
            app_quota_bytes: Self::DEFAULT_APP_QUOTA_BYTES,
        }
    }
}

/// Files under `(app, collection, name)`. Every call is keyed on `ctx.app_id` and checks
/// `AppFilesRead` or `AppFilesWrite` of that app for the identity `ctx` acts as; writes
/// and deletes emit their change event in the same transaction as the metadata row, which
/// is the commit point: bytes are durable before it, and readers see the old file or the
/// new one, never a mix.
#[async_trait]
pub trait FilesService: Send + Sync {
    /// The file's metadata, `None` when there is none.
    async fn head(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
    ) -> Result<Option<FileInfo>, ServiceError>;

    /// The file's metadata and its checked bytes, `None` when there is none.
    async fn open(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
    ) -> Result<Option<FileDownload>, ServiceError>;

    /// Stores `body` as the file, streaming it to storage while hashing it. Refused with
    /// [`ServiceError::TooLarge`] past the file limit and [`ServiceError::QuotaExceeded`]
    /// past the app's quota, as soon as the body passes them; a refused or failed write
    /// leaves the file as it was.
    async fn write(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
        write: FileWrite,
        body: ByteStream,
    ) -> Result<FileInfo, ServiceError>;

    /// Removes the file (its row first, then its bytes); whether it existed. Deleting a
    /// missing file changes nothing and emits no event.
    async fn delete(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        name: &FileName,
    ) -> Result<bool, ServiceError>;

    /// A page of the app's files in `(collection, name)` order.
    async fn list(
        &self,
        ctx: &ServiceContext,
        options: FileListOptions,
    ) -> Result<FilePage, ServiceError>;

    /// How much of its quota the app uses.
    async fn usage(&self, ctx: &ServiceContext) -> Result<FilesUsage, ServiceError>;
}

/// The event a change made through `ctx` emits: the run's depth + 1, caused by the run's
/// execution when there is one. It carries the file's metadata, never its bytes.
pub fn file_event(
    ctx: &ServiceContext,
    collection: &CollectionName,
    name: &FileName,
    op: FileOp,
    file: Option<&FileInfo>,
) -> ServiceEvent {
    ServiceEvent {
        app_id: ctx.app_id,
        subject: EventSubject::Files {
            collection: collection.as_str().to_owned(),
            name: name.as_str().to_owned(),
            op,
            file: file.map(FileInfo::to_json),
        },
        depth: ctx.depth.saturating_add(1),
        causation_id: ctx.execution_id,
    }
}

/// The check every read makes.
pub fn authorize_files_read(ctx: &ServiceContext) -> Result<(), ServiceError> {
    ctx.authorize(&Capability::AppFilesRead(ctx.app_id))
}

/// The check every write makes.
pub fn authorize_files_write(ctx: &ServiceContext) -> Result<(), ServiceError> {
    ctx.authorize(&Capability::AppFilesWrite(ctx.app_id))
}

/// The refusal of a write whose mode found the file in the wrong state.
pub fn mode_refusal(
    mode: WriteMode,
    collection: &CollectionName,
    name: &FileName,
    exists: bool,
) -> Option<ServiceError> {
    match (mode, exists) {
        (WriteMode::Create, true) => Some(ServiceError::Conflict(format!(
            "file '{name}' already exists in collection '{collection}'"
        ))),
        (WriteMode::Update, false) => Some(ServiceError::NotFound(format!(
            "file '{name}' not found in collection '{collection}'"
        ))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn stream(chunks: Vec<io::Result<&'static [u8]>>) -> ByteStream {
        struct Chunks(std::vec::IntoIter<io::Result<Bytes>>);
        impl Stream for Chunks {
            type Item = io::Result<Bytes>;
            fn poll_next(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Self::Item>> {
                Poll::Ready(self.0.next())
            }
        }
        let chunks: Vec<_> = chunks
            .into_iter()
            .map(|c| c.map(Bytes::from_static))
            .collect();
        Box::pin(Chunks(chunks.into_iter()))
    }

    async fn collect(mut body: ByteStream) -> Result<Vec<u8>, io::Error> {
        let mut out = Vec::new();
        while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[test]
    fn file_names_follow_the_rules() {
        for ok in [
            "a",
            "avatar.png",
            "2024/06/report.pdf",
            "ünïcode ✓",
            "..hidden",
            "a..b",
        ] {
            assert!(FileName::parse(ok).is_ok(), "{ok}");
        }
        assert!(FileName::parse(&"n".repeat(512)).is_ok());
        let refused = |raw: &str| FileName::parse(raw).unwrap_err().to_string();
        assert_eq!(refused(""), "file name must not be empty");
        assert_eq!(
            refused(&"n".repeat(513)),
            "file name is 513 bytes, over the limit of 512 bytes"
        );
        for traversal in ["..", "../etc/passwd", "a/../../b", "./a", "a/."] {
            assert_eq!(
                refused(traversal),
                "file name must not contain a '.' or '..' segment",
                "{traversal}"
            );
        }
        for slashes in ["/etc/passwd", "a/", "a//b"] {
            assert_eq!(
                refused(slashes),
                "file name must not start or end with '/' or contain an empty segment ('//')",
                "{slashes}"
            );
        }
        assert_eq!(refused("a\\..\\b"), "file name must not contain '\\'");
        for control in ["nul\0", "new\nline", "bidi\u{202e}"] {
            assert!(
                refused(control).starts_with("file name must not contain"),
                "{control:?}"
            );
        }
    }

    #[test]
    fn content_types_follow_the_rules() {
        for ok in [
            "image/png",
            "text/plain; charset=utf-8",
            "application/vnd.api+json",
        ] {
            assert!(ContentType::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "png",
            "image/",
            "/png",
            "te xt/plain",
            "text/plain\r\nX: y",
        ] {
            assert!(ContentType::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn metadata_is_bounded_and_named() {
        let one = |name: &str, value: &str| {
            FileMetadata::new(BTreeMap::from([(name.to_owned(), value.to_owned())]))
        };
        assert!(one("owner", "ada").is_ok());
        assert_eq!(
            one("bad name", "x").unwrap_err().to_string(),
            "metadata entry \"bad name\" must be named with 1 to 64 ASCII letters, digits, '_', '-' and '.'"
        );
        assert!(one("k", &"v".repeat(1025)).is_err());
        assert!(one("k", "line\nbreak").is_err());
        let many = (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(FileMetadata::new(many).is_err());
    }

    #[test]
    fn the_budget_is_the_smaller_of_the_file_limit_and_the_quota_left() {
        let limits = FileLimits {
            max_file_bytes: 100,
            app_quota_bytes: 250,
        };
        assert_eq!(limits.write_budget(0, 0), 100);
        assert_eq!(limits.write_budget(200, 0), 50);
        assert_eq!(
            limits.write_budget(200, 40),
            90,
            "the replaced bytes are freed"
        );
        assert_eq!(limits.write_budget(300, 0), 0);
        let name = FileName::parse("f").unwrap();
        assert!(limits.check(&name, 100, 150, 0).is_ok());
        assert!(matches!(
            limits.check(&name, 101, 0, 0),
            Err(ServiceError::TooLarge { .. })
        ));
        assert!(matches!(
            limits.check(&name, 60, 200, 0),
            Err(ServiceError::QuotaExceeded(_))
        ));
    }

    #[test]
    fn cursors_round_trip_and_strangers_are_refused() {
        let bounds = FileListOptions {
            cursor: Some("docs/2024/a.pdf".to_owned()),
            ..FileListOptions::default()
        }
        .bounds()
        .unwrap();
        assert_eq!(
            bounds.after,
            Some(("docs".to_owned(), "2024/a.pdf".to_owned()))
        );
        assert!(bounds.contains("docs", "2024/b.pdf"));
        assert!(!bounds.contains("docs", "2024/a.pdf"));
        assert!(bounds.contains("e", "a"));
        for bad in ["no-slash", "bad name/x", "docs/../x"] {
            let err = FileListOptions {
                cursor: Some(bad.to_owned()),
                ..FileListOptions::default()
            }
            .bounds()
            .unwrap_err();
            assert_eq!(err.to_string(), "cursor is not one this list returned");
        }
    }

    #[tokio::test]
    async fn a_slice_releases_its_last_piece_only_after_the_body_ended_cleanly() {
        let body = || stream(vec![Ok(b"hello "), Ok(b"wide "), Ok(b"world")]);
        let all = ByteRange { start: 0, end: 16 };
        assert_eq!(
            collect(slice(body(), all)).await.unwrap(),
            b"hello wide world"
        );
        let middle = ByteRange { start: 4, end: 12 };
        assert_eq!(collect(slice(body(), middle)).await.unwrap(), b"o wide w");
        let failing = stream(vec![
            Ok(b"hello "),
            Ok(b"wide "),
            Err(Corrupted("bytes differ".to_owned()).into_io()),
        ]);
        let err = collect(slice(failing, ByteRange { start: 0, end: 3 }))
            .await
            .unwrap_err();
        assert_eq!(
            corruption(&err),
            Some(&Corrupted("bytes differ".to_owned()))
        );
    }

    proptest! {
        #[test]
        fn accepted_file_names_never_escape(raw in "[a-z./\\\\]{0,12}") {
            if let Ok(name) = FileName::parse(&raw) {
                let name = name.as_str();
                prop_assert!(!name.starts_with('/') && !name.ends_with('/'));
                prop_assert!(!name.contains('\\'));
                prop_assert!(name.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
            }
        }
    }
}
