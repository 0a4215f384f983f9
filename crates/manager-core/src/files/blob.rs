//! Where files' bytes live: the [`BlobStore`] seam and its filesystem implementation.
//!
//! A blob is written once and never changed: an update writes a new blob and points the
//! file's row at it, so a reader streaming the old version keeps reading the old bytes
//! (an open file survives its unlinking) and nobody sees a mix. Blobs live at keys the
//! server chooses (random, 128 bits), never at a name a user gave, so no name can reach
//! outside the store.
//!
//! [`FsBlobStore`]'s write sequence: a temporary file in the blob's own shard directory →
//! the body written while hashed (one pass) → `fsync` → `rename` to the blob's path →
//! `fsync` of the directory. Only then does the caller insert the row, which is the commit
//! point; a crash anywhere before leaves a temporary file or a blob without a row, both
//! invisible, both removed by the sweep.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use picloud_shared::ByteStream;
use picloud_shared::files::Corrupted;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

/// How many bytes move between the body and the disk at a time: large enough that system
/// calls and task hand-offs are a small part of the cost, small enough that an upload or
/// download holds at most a few of them (well under a MiB) whatever the file's size.
const CHUNK_BYTES: usize = 256 * 1024;

/// Temporary files of writes in progress start with this, so the sweep tells them from
/// finished blobs.
const UPLOAD_PREFIX: &str = ".upload-";

/// A blob's key: 32 lowercase hex digits, chosen by the server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey(String);

impl BlobKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// A stored key, if it is one.
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 32
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(raw.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A blob written in full and durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// Where it is.
    pub key: BlobKey,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its bytes.
    pub sha256: [u8; 32],
}

/// A step of [`FsBlobStore`]'s write sequence, after which a test can make the write stop
/// as a crash would: leaving what is on disk as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStep {
    /// The temporary file exists, empty.
    TempCreated,
    /// The body is written to it.
    BytesWritten,
    /// It is `fsync`ed.
    Synced,
    /// It is renamed to the blob's path.
    Renamed,
    /// The directory is `fsync`ed: the blob is durable.
    DirSynced,
}

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The body went past the most bytes the write could take; nothing was kept.
    #[error("the body is over the limit of {limit} bytes")]
    TooLarge {
        /// The most bytes the write could take.
        limit: u64,
    },
    /// No space left on the store; nothing was kept.
    #[error("no space left on the device holding {path}")]
    StorageFull {
        /// Where the write failed.
        path: String,
    },
    /// The body could not be read (the client went away or was too slow); nothing was kept.
    #[error("the body could not be read: {0}")]
    Body(io::Error),
    /// The blob is not there.
    #[error("blob {0} is missing")]
    Missing(BlobKey),
    /// Any other I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// What failed.
        source: io::Error,
    },
    /// A test stopped the write after this step ([`FsBlobStore::crash_after`]).
    #[error("the write was stopped after {0:?}")]
    Crashed(WriteStep),
}

/// Stores blobs. The filesystem store is the one PiCloud ships; in a cluster every node
/// needs the same blobs, which a shared POSIX filesystem under the same root gives (rename
/// and fsync keep their meaning on NFSv4), and an S3-compatible store would give behind
/// this same trait (a multipart upload is its temporary file, completing it its rename).
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// Streams `body` into a new blob, hashing it on the way; refused with
    /// [`BlobError::TooLarge`] as soon as it passes `max_bytes`. Durable when it returns.
    async fn put(&self, body: ByteStream, max_bytes: u64) -> Result<StoredBlob, BlobError>;

    /// The blob's bytes, checked against `size` and `sha256` as they stream: the last
    /// chunk is released only once they matched, and a mismatch ends the stream with a
    /// [`Corrupted`] error naming `label` instead. [`BlobError::Missing`] when it is gone.
    async fn open(
        &self,
        key: &BlobKey,
        size: u64,
        sha256: [u8; 32],
        label: &str,
    ) -> Result<ByteStream, BlobError>;

    /// Removes the blob; removing a missing one is no error.
    async fn remove(&self, key: &BlobKey) -> Result<(), BlobError>;

    /// Whether the blob is there.
    async fn exists(&self, key: &BlobKey) -> Result<bool, BlobError>;

    /// One page of the finished blobs last written before `cutoff`, starting at the page
    /// `page` names (`None` for the first); the next page's name, if there is one.
    async fn list_older_than(
        &self,
        page: Option<String>,
        cutoff: SystemTime,
    ) -> Result<(Vec<BlobKey>, Option<String>), BlobError>;

    /// Removes the temporary files of writes that stopped (no byte written since
    /// `cutoff`); how many.
    async fn remove_stale_uploads(&self, cutoff: SystemTime) -> Result<u64, BlobError>;

    /// Where the blob is, for log lines.
    fn locate(&self, key: &BlobKey) -> String;
}

/// Blobs as files under a root directory: `root/ab/cd/abcd…` (two levels of 256 shard
/// directories, so no directory grows past a few thousand entries), every directory
/// created `0700` and every file `0600`.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
    crash_after: Option<WriteStep>,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BlobError + '_ {
    move |source| {
        if matches!(
            source.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        ) {
            BlobError::StorageFull {
                path: path.display().to_string(),
            }
        } else {
            BlobError::Io {
                path: path.display().to_string(),
                source,
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(task_error)?
}

fn create_private_dir(path: &Path) -> Result<(), BlobError> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(io_error(path)(err)),
    }
}

/// The file a write streams into, and what it has seen so far.
struct Sink {
    file: File,
    path: PathBuf,
    hasher: Sha256,
}

fn task_error(err: tokio::task::JoinError) -> BlobError {
    BlobError::Io {
        path: "<blob task>".to_owned(),
        source: io::Error::other(err.to_string()),
    }
}

impl Sink {
    /// Writes `data` and hashes it (one pass over bytes already in cache). Hashing on a
    /// second thread beside the write was measured and gained nothing on two cores.
    fn absorb(mut self, data: &[u8]) -> Result<Self, BlobError> {
        self.file.write_all(data).map_err(io_error(&self.path))?;
        self.hasher.update(data);
        Ok(self)
    }
}

impl FsBlobStore {
    /// A store under `root`, creating it (`0700`) if needed. An existing root keeps its
    /// owner but is narrowed to `0700`: the bytes of every app's files are under it.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        Ok(Self {
            root: root.to_owned(),
            crash_after: None,
        })
    }

    /// The same store, whose writes stop after `step` as a crash would, leaving whatever
    /// is on disk: for the tests of the write sequence.
    pub fn crash_after(mut self, step: WriteStep) -> Self {
        self.crash_after = Some(step);
        self
    }

    /// Where blob `key` lives.
    pub fn path_of(&self, key: &BlobKey) -> PathBuf {
        let key = key.as_str();
        self.root.join(&key[..2]).join(&key[2..4]).join(key)
    }

    fn check_crash(crash_after: Option<WriteStep>, step: WriteStep) -> Result<(), BlobError> {
        if crash_after == Some(step) {
            return Err(BlobError::Crashed(step));
        }
        Ok(())
    }

    async fn begin(&self, key: &BlobKey) -> Result<Sink, BlobError> {
        let final_path = self.path_of(key);
        let root = self.root.clone();
        blocking(move || {
            let shard = final_path.parent().unwrap_or(&root).to_owned();
            if let Some(outer) = shard.parent() {
                create_private_dir(outer)?;
            }
            create_private_dir(&shard)?;
            let name = format!("{UPLOAD_PREFIX}{}", uuid::Uuid::new_v4().simple());
            let path = shard.join(name);
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_error(&path))?;
            Ok(Sink {
                file,
                path,
                hasher: Sha256::new(),
            })
        })
        .await
    }

    /// Streams `body` into `sink`, a chunk on disk while the next one is read.
    async fn fill(
        sink: Sink,
        mut body: ByteStream,
        max_bytes: u64,
    ) -> (Result<Sink, BlobError>, PathBuf, u64) {
        let path = sink.path.clone();
        let mut idle = Some(sink);
        let mut writing: Option<JoinHandle<Result<Sink, BlobError>>> = None;
        let mut buffer = BytesMut::with_capacity(CHUNK_BYTES);
        let mut size = 0_u64;
        async fn settle(
            idle: &mut Option<Sink>,
            writing: &mut Option<JoinHandle<Result<Sink, BlobError>>>,
        ) -> Result<Sink, BlobError> {
            if let Some(task) = writing.take() {
                return task.await.map_err(task_error)?;
            }
            idle.take().ok_or_else(|| BlobError::Io {
                path: "<blob task>".to_owned(),
                source: io::Error::other("the upload's file was lost"),
            })
        }
        loop {
            let next = body.next().await;
            let done = match next {
                Some(Ok(chunk)) => {
                    size = size.saturating_add(chunk.len() as u64);
                    if size > max_bytes {
                        let _ = settle(&mut idle, &mut writing).await;
                        return (Err(BlobError::TooLarge { limit: max_bytes }), path, size);
                    }
                    buffer.extend_from_slice(&chunk);
                    false
                }
                Some(Err(err)) => {
                    let _ = settle(&mut idle, &mut writing).await;
                    return (Err(BlobError::Body(err)), path, size);
                }
                None => true,
            };
            if buffer.len() >= CHUNK_BYTES || (done && !buffer.is_empty()) {
                let sink = match settle(&mut idle, &mut writing).await {
                    Ok(sink) => sink,
                    Err(err) => return (Err(err), path, size),
                };
                let data = buffer.split().freeze();
                writing = Some(tokio::task::spawn_blocking(move || sink.absorb(&data)));
            }
            if done {
                return (settle(&mut idle, &mut writing).await, path, size);
            }
        }
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn put(&self, body: ByteStream, max_bytes: u64) -> Result<StoredBlob, BlobError> {
        let crash_after = self.crash_after;
        let key = BlobKey::generate();
        let sink = self.begin(&key).await?;
        Self::check_crash(crash_after, WriteStep::TempCreated)?;
        let (filled, temp, size) = Self::fill(sink, body, max_bytes).await;
        let sink = match filled {
            Ok(sink) => sink,
            Err(err) => {
                // Nothing of a refused or failed write stays behind.
                let _ = blocking(move || fs::remove_file(&temp).map_err(io_error(&temp))).await;
                return Err(err);
            }
        };
        Self::check_crash(crash_after, WriteStep::BytesWritten)?;
        let final_path = self.path_of(&key);
        let sha256: [u8; 32] = blocking(move || {
            let Sink { file, path, hasher } = sink;
            let finish = || -> Result<(), BlobError> {
                file.sync_all().map_err(io_error(&path))?;
                Self::check_crash(crash_after, WriteStep::Synced)?;
                fs::rename(&path, &final_path).map_err(io_error(&path))?;
                Self::check_crash(crash_after, WriteStep::Renamed)?;
                // The rename is durable only once its directory is.
                if let Some(dir) = final_path.parent() {
                    File::open(dir)
                        .and_then(|dir| dir.sync_all())
                        .map_err(io_error(dir))?;
                }
                Self::check_crash(crash_after, WriteStep::DirSynced)
            };
            match finish() {
                Ok(()) => Ok(hasher.finalize().into()),
                Err(BlobError::Crashed(step)) => Err(BlobError::Crashed(step)),
                Err(err) => {
                    let _ = fs::remove_file(&path);
                    let _ = fs::remove_file(&final_path);
                    Err(err)
                }
            }
        })
        .await?;
        Ok(StoredBlob { key, size, sha256 })
    }

    async fn open(
        &self,
        key: &BlobKey,
        size: u64,
        sha256: [u8; 32],
        label: &str,
    ) -> Result<ByteStream, BlobError> {
        let path = self.path_of(key);
        let missing = key.clone();
        let file = blocking(move || match File::open(&path) {
            Ok(file) => Ok((file, path)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Err(BlobError::Missing(missing)),
            Err(err) => Err(io_error(&path)(err)),
        })
        .await?;
        let reading = Reading {
            source: Some(file),
            hasher: Sha256::new(),
            seen: 0,
            size,
            sha256,
            label: label.to_owned(),
            held: None,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            reading,
            Reading::next,
        )))
    }

    async fn remove(&self, key: &BlobKey) -> Result<(), BlobError> {
        let path = self.path_of(key);
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(io_error(&path)(err)),
        })
        .await
    }

    async fn exists(&self, key: &BlobKey) -> Result<bool, BlobError> {
        let path = self.path_of(key);
        blocking(move || match fs::symlink_metadata(&path) {
            Ok(meta) => Ok(meta.is_file()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(io_error(&path)(err)),
        })
        .await
    }

    async fn list_older_than(
        &self,
        page: Option<String>,
        cutoff: SystemTime,
    ) -> Result<(Vec<BlobKey>, Option<String>), BlobError> {
        let root = self.root.clone();
        blocking(move || {
            // A page is one first-level shard directory; pages go in name order.
            let mut outer = shard_names(&root)?;
            outer.sort();
            let start = page.as_deref();
            let mut remaining = outer
                .into_iter()
                .skip_while(|name| start.is_some_and(|start| name.as_str() < start));
            let Some(current) = remaining.next() else {
                return Ok((Vec::new(), None));
            };
            let next = remaining.next();
            let mut keys = Vec::new();
            let outer_dir = root.join(&current);
            for inner in shard_names(&outer_dir)? {
                let dir = outer_dir.join(&inner);
                for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
                    let entry = entry.map_err(io_error(&dir))?;
                    let Some(key) = entry.file_name().to_str().and_then(BlobKey::parse) else {
                        continue;
                    };
                    let meta = entry.metadata().map_err(io_error(&entry.path()))?;
                    if meta.is_file() && meta.modified().is_ok_and(|at| at < cutoff) {
                        keys.push(key);
                    }
                }
            }
            Ok((keys, next))
        })
        .await
    }

    async fn remove_stale_uploads(&self, cutoff: SystemTime) -> Result<u64, BlobError> {
        let root = self.root.clone();
        blocking(move || {
            let mut removed = 0;
            for outer in shard_names(&root)? {
                let outer_dir = root.join(&outer);
                for inner in shard_names(&outer_dir)? {
                    let dir = outer_dir.join(&inner);
                    for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
                        let entry = entry.map_err(io_error(&dir))?;
                        let is_upload = entry
                            .file_name()
                            .to_str()
                            .is_some_and(|name| name.starts_with(UPLOAD_PREFIX));
                        let stale = entry
                            .metadata()
                            .and_then(|meta| meta.modified())
                            .is_ok_and(|at| at < cutoff);
                        if is_upload && stale && fs::remove_file(entry.path()).is_ok() {
                            removed += 1;
                        }
                    }
                }
            }
            Ok(removed)
        })
        .await
    }

    fn locate(&self, key: &BlobKey) -> String {
        self.path_of(key).display().to_string()
    }
}

/// The two-hex-digit shard directories under `dir` (anything else is not the store's).
fn shard_names(dir: &Path) -> Result<Vec<String>, BlobError> {
    let mut names = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(names),
        Err(err) => return Err(io_error(dir)(err)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error(dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let shard = name.len() == 2 && BlobKey::parse(&format!("{name:0<32}")).is_some();
        if shard && entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            names.push(name);
        }
    }
    Ok(names)
}

/// A blob being read: chunk by chunk on blocking threads (none is held while the reader
/// is slow), hashed as it goes, with the newest chunk held back until the next read says
/// whether it was the last and the bytes matched.
struct Reading {
    source: Option<(File, PathBuf)>,
    hasher: Sha256,
    seen: u64,
    size: u64,
    sha256: [u8; 32],
    label: String,
    held: Option<Bytes>,
}

impl Reading {
    async fn next(mut self) -> Option<(io::Result<Bytes>, Self)> {
        let (file, path) = self.source.take()?;
        let read = tokio::task::spawn_blocking(move || {
            let mut file = file;
            let mut buffer = vec![0_u8; CHUNK_BYTES];
            let mut filled = 0;
            while filled < buffer.len() {
                match file.read(&mut buffer[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return (Err(err), file),
                }
            }
            buffer.truncate(filled);
            (Ok(buffer), file)
        })
        .await;
        let (outcome, file) = match read {
            Ok(done) => done,
            Err(err) => return Some((Err(io::Error::other(err.to_string())), self)),
        };
        let chunk = match outcome {
            Ok(chunk) => chunk,
            Err(err) => return Some((Err(err), self)),
        };
        if chunk.is_empty() {
            // The end: the held chunk goes out only if everything matched.
            let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
            if self.seen != self.size || digest != self.sha256 {
                return Some((Err(self.corrupted(&path)), self));
            }
            let last = self.held.take()?;
            return Some((Ok(last), self));
        }
        self.hasher.update(&chunk);
        self.seen += chunk.len() as u64;
        if self.seen > self.size {
            return Some((Err(self.corrupted(&path)), self));
        }
        self.source = Some((file, path));
        let previous = self.held.replace(Bytes::from(chunk));
        match previous {
            Some(previous) => Some((Ok(previous), self)),
            // The first chunk: nothing to release yet, read on.
            None => Box::pin(self.next()).await,
        }
    }

    fn corrupted(&mut self, path: &Path) -> io::Error {
        self.held = None;
        tracing::error!(
            path = %path.display(),
            file = %self.label,
            bytes_read = self.seen,
            expected_size = self.size,
            "a stored file does not match its checksum; the read was refused"
        );
        Corrupted(format!(
            "{} is corrupted: its stored bytes do not match their checksum",
            self.label
        ))
        .into_io()
    }
}
