//! Files: one file uploaded and downloaded through the admin API, against a raw write +
//! `fsync` and a raw read of the same bytes by the harness itself, on the same filesystem
//! (both files live in picloud's data directory) in the same run; and how far the
//! server's peak RSS rises during each transfer.
//!
//! Every side moves the same bytes (a fixed pseudo-random MiB, repeated) in 256 KiB
//! pieces, and the harness never holds the file: it streams the upload from the pattern
//! and checks what it reads back against the pattern as the bytes arrive. Both reads
//! start cold: just before each, the file is `fsync`ed and dropped from the page cache
//! with `posix_fadvise(DONTNEED)`, and what `fincore` still finds cached is recorded.
//! The writes are paired (raw, then upload) and so are the reads (raw, then download), so
//! each comparison is taken a few seconds apart.

use std::convert::Infallible;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use crate::http::{self as admin, Call};
use crate::load::round2;
use crate::procfs;

/// One MiB.
const MIB: u64 = 1024 * 1024;

/// The repeated pattern's length.
const PATTERN_BYTES: usize = 1024 * 1024;

/// Bytes per write, per read and per frame of the upload's body (picloud's blob store
/// moves 256 KiB at a time too).
const CHUNK_BYTES: usize = 256 * 1024;

/// The collection and name of the uploaded file.
const COLLECTION: &str = "bench-files";
const NAME: &str = "payload.bin";

/// The raw baseline's file, in the data directory beside picloud's `files/`.
const RAW_FILE: &str = "bench-files-raw.bin";

/// What the files step needs of the running picloud.
#[derive(Debug, Clone)]
pub struct FilesSpec {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// An admin session.
    pub token: String,
    /// Its process, whose RSS is read.
    pub pid: u32,
    /// Its data directory: the raw baseline writes here.
    pub data_dir: PathBuf,
    /// Its files root (`<data dir>/files`), where the uploaded blob lands.
    pub files_dir: PathBuf,
    /// The file's size.
    pub bytes: u64,
}

/// The bytes every side moves: a fixed pseudo-random MiB, repeated. Pseudo-random so no
/// layer can make it smaller; fixed so every run moves the same bytes.
#[derive(Debug, Clone)]
struct Pattern(Bytes);

impl Pattern {
    fn new() -> Self {
        // xorshift64 from a fixed seed.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut bytes = Vec::with_capacity(PATTERN_BYTES);
        while bytes.len() < PATTERN_BYTES {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.extend_from_slice(&state.to_le_bytes());
        }
        bytes.truncate(PATTERN_BYTES);
        Self(Bytes::from(bytes))
    }

    /// Where byte `offset` of the stream is in the pattern.
    fn position(offset: u64) -> usize {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a remainder of the pattern's length fits in usize"
        )]
        let position = (offset % PATTERN_BYTES as u64) as usize;
        position
    }

    /// The stream's bytes from `offset`: at most `max`, never past the pattern's end and
    /// never past `total` (a slice of the pattern, not a copy).
    fn chunk(&self, offset: u64, total: u64) -> Bytes {
        let start = Self::position(offset);
        let left = usize::try_from(total.saturating_sub(offset)).unwrap_or(usize::MAX);
        let len = CHUNK_BYTES.min(PATTERN_BYTES - start).min(left);
        self.0.slice(start..start + len)
    }

    /// Whether `data` is what the stream holds from `offset` on.
    fn matches(&self, offset: u64, data: &[u8]) -> bool {
        let mut offset = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let start = Self::position(offset);
            let len = rest.len().min(PATTERN_BYTES - start);
            if rest[..len] != self.0[start..start + len] {
                return false;
            }
            rest = &rest[len..];
            offset += len as u64;
        }
        true
    }

    /// The SHA-256 of the first `total` bytes of the stream, as lowercase hex.
    fn sha256(&self, total: u64) -> String {
        let mut hasher = Sha256::new();
        let mut offset = 0;
        while offset < total {
            let chunk = self.chunk(offset, total);
            hasher.update(&chunk);
            offset += chunk.len() as u64;
        }
        format!("{:x}", hasher.finalize())
    }
}

/// The upload's body: the pattern's first `total` bytes, one [`CHUNK_BYTES`] frame at a
/// time. hyper asks for the next frame only when it can write, so the harness holds at
/// most its write buffer, never the file.
#[derive(Debug)]
struct PatternBody {
    pattern: Pattern,
    sent: u64,
    total: u64,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.sent >= this.total {
            return Poll::Ready(None);
        }
        let chunk = this.pattern.chunk(this.sent, this.total);
        this.sent += chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.total
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.total - self.sent)
    }
}

/// The server's RSS at the start of a transfer and its peak during it, in bytes.
#[derive(Debug, Clone, Copy)]
struct PeakRss {
    before: u64,
    peak: u64,
}

impl PeakRss {
    /// Resets the process's peak (`VmHWM`) to its current RSS and reads that RSS.
    fn start(pid: u32) -> Result<u64> {
        procfs::reset_peak_rss(pid)?;
        procfs::rss_bytes(pid)
    }

    /// The peak since [`Self::start`].
    fn finish(pid: u32, before: u64) -> Result<Self> {
        Ok(Self {
            before,
            peak: procfs::peak_rss_bytes(pid)?,
        })
    }

    fn to_json(self) -> Value {
        json!({
            "rss_before_mib": mib(self.before),
            "peak_rss_mib": mib(self.peak),
            "peak_rss_growth_mib": mib(self.peak.saturating_sub(self.before)),
        })
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "memory sizes are far below 2^52"
)]
fn mib(bytes: u64) -> f64 {
    round2(bytes as f64 / MIB as f64)
}

/// Decimal megabytes (10^6 bytes) per second.
#[expect(clippy::cast_precision_loss, reason = "file sizes are far below 2^52")]
fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

fn ratio(numerator: f64, denominator: f64) -> Value {
    if denominator > 0.0 {
        json!(round2(numerator / denominator))
    } else {
        Value::Null
    }
}

fn timing_json(bytes: u64, elapsed: Duration) -> Value {
    json!({
        "ms": round2(elapsed.as_secs_f64() * 1e3),
        "mb_per_s": round2(mb_per_s(bytes, elapsed)),
    })
}

/// Runs `work` on a blocking thread: file I/O must not stall the runtime that drives
/// the HTTP side.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("a blocking task of the files step failed")?
}

/// Uploads and downloads a file of `spec.bytes` through the admin API and does the same
/// with raw file I/O; the figures as JSON (`{"skipped": reason}` on a build without the
/// files API).
pub async fn run(spec: &FilesSpec) -> Result<Value> {
    if let Some(reason) = missing_api(spec.addr).await? {
        eprintln!("picloud-bench: files skipped: {reason}");
        return Ok(json!({ "bytes": spec.bytes, "skipped": reason }));
    }
    let bytes = spec.bytes;
    let pattern = Pattern::new();
    let sha256 = blocking({
        let pattern = pattern.clone();
        move || Ok(pattern.sha256(bytes))
    })
    .await?;
    let raw_path = spec.data_dir.join(RAW_FILE);
    let mib_count = bytes / MIB;

    eprintln!("picloud-bench: files, raw write + fsync of {mib_count} MiB");
    let raw_write = blocking({
        let (pattern, path) = (pattern.clone(), raw_path.clone());
        move || raw_write(&path, &pattern, bytes)
    })
    .await?;
    eprintln!("picloud-bench: files, upload of {mib_count} MiB through the admin API");
    let upload = upload(spec, &pattern, &sha256).await?;

    eprintln!("picloud-bench: files, raw read of {mib_count} MiB");
    let (raw_cached, raw_read) = blocking({
        let (pattern, path) = (pattern.clone(), raw_path.clone());
        move || {
            let cached = drop_cache(&path)?;
            Ok((cached, raw_read(&path, &pattern, bytes)?))
        }
    })
    .await?;
    std::fs::remove_file(&raw_path).with_context(|| format!("removing {}", raw_path.display()))?;

    let blob = find_blob(&spec.files_dir, bytes)?;
    let blob_cached = blocking(move || drop_cache(&blob)).await?;
    eprintln!("picloud-bench: files, download of {mib_count} MiB through the admin API");
    let download = download(spec, &pattern, &sha256).await?;

    let raw_write_mb = mb_per_s(bytes, raw_write);
    let raw_read_mb = mb_per_s(bytes, raw_read);
    let mut upload_json = timing_json(bytes, upload.elapsed);
    upload_json["vs_raw_write"] = ratio(mb_per_s(bytes, upload.elapsed), raw_write_mb);
    upload_json["status"] = json!(upload.status.as_u16());
    merge(&mut upload_json, upload.rss.to_json());
    let mut download_json = timing_json(bytes, download.elapsed);
    download_json["vs_raw_read"] = ratio(mb_per_s(bytes, download.elapsed), raw_read_mb);
    download_json["cached_bytes_before"] = json!(blob_cached);
    merge(&mut download_json, download.rss.to_json());
    let mut raw_read_json = timing_json(bytes, raw_read);
    raw_read_json["cached_bytes_before"] = json!(raw_cached);

    Ok(json!({
        "bytes": bytes,
        "mib": mib_count,
        "chunk_bytes": CHUNK_BYTES,
        "unit": "MB/s, MB = 10^6 bytes; RSS in MiB",
        "reads": "cold: fsync, then posix_fadvise(DONTNEED), before each read",
        "filesystem": filesystem_of(&spec.data_dir),
        "sha256": sha256,
        "raw_write": timing_json(bytes, raw_write),
        "upload": upload_json,
        "raw_read": raw_read_json,
        "download": download_json,
    }))
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// Why this build cannot be measured, if it cannot: its OpenAPI document (built from the
/// routes it serves) has no `PUT` and `GET` of a file.
async fn missing_api(addr: std::net::SocketAddr) -> Result<Option<String>> {
    let document = admin::json(addr, &Call::get("/api/admin/openapi.json"), StatusCode::OK)
        .await
        .context("reading the admin API's OpenAPI document")?;
    let served = document["paths"].as_object().is_some_and(|paths| {
        paths.iter().any(|(path, operations)| {
            path.starts_with("/api/admin/apps/")
                && path.ends_with("/files/{collection}/{name}")
                && operations.get("put").is_some()
                && operations.get("get").is_some()
        })
    });
    Ok((!served).then(|| {
        "the admin API of this build has no file upload and download (no PUT and GET of \
         /api/admin/apps/{id}/files/{collection}/{name} in its OpenAPI document)"
            .to_owned()
    }))
}

/// Creates `path` and writes the stream's first `total` bytes to it in [`CHUNK_BYTES`]
/// writes, then `fsync`s it; the time from the create to the end of the `fsync`.
fn raw_write(path: &Path, pattern: &Pattern, total: u64) -> Result<Duration> {
    let started = Instant::now();
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut written = 0;
    while written < total {
        let chunk = pattern.chunk(written, total);
        file.write_all(&chunk)
            .with_context(|| format!("writing {}", path.display()))?;
        written += chunk.len() as u64;
    }
    file.sync_all()
        .with_context(|| format!("fsync of {}", path.display()))?;
    Ok(started.elapsed())
}

/// Reads `path` to its end in [`CHUNK_BYTES`] reads, checking every byte against the
/// stream; the time from the open to the end.
fn raw_read(path: &Path, pattern: &Pattern, total: u64) -> Result<Duration> {
    let started = Instant::now();
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buffer = vec![0; CHUNK_BYTES];
    let mut read = 0;
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        if !pattern.matches(read, &buffer[..n]) {
            bail!(
                "{} differs from what was written at byte {read}",
                path.display()
            );
        }
        read += n as u64;
    }
    let elapsed = started.elapsed();
    if read != total {
        bail!("read {read} bytes of {}, wrote {total}", path.display());
    }
    Ok(elapsed)
}

/// Flushes `path` to disk and asks the kernel to drop its pages from the page cache, so
/// the next read comes from the disk; the bytes `fincore` still finds cached afterwards
/// (`None` without `fincore`).
fn drop_cache(path: &Path) -> Result<Option<u64>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // Dirty pages cannot be dropped: the fsync makes them clean (a no-op when the writer
    // already synced, as both writers here do).
    file.sync_all()
        .with_context(|| format!("fsync of {}", path.display()))?;
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)
        .with_context(|| format!("posix_fadvise(DONTNEED) of {}", path.display()))?;
    Ok(cached_bytes(path))
}

/// How many bytes of `path` are in the page cache, as `fincore` (util-linux) counts them.
fn cached_bytes(path: &Path) -> Option<u64> {
    let output = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .ok()
        .filter(|output| output.status.success())?;
    String::from_utf8(output.stdout).ok()?.trim().parse().ok()
}

/// The uploaded file's blob: the one regular file of `total` bytes under the files root
/// (blobs sit in shard directories under keys the server chooses; writes in progress are
/// dot-files).
fn find_blob(files_dir: &Path, total: u64) -> Result<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![files_dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file()
                && !entry.file_name().to_string_lossy().starts_with('.')
                && entry.metadata()?.len() == total
            {
                found.push(entry.path());
            }
        }
    }
    match <[PathBuf; 1]>::try_from(found) {
        Ok([blob]) => Ok(blob),
        Err(found) => Err(anyhow!(
            "expected one blob of {total} bytes under {}, found {}",
            files_dir.display(),
            found.len()
        )),
    }
}

/// The filesystem holding `path`, from `/proc/self/mounts` (the longest mount point
/// that contains it): tmpfs would mean both sides measured memory, not a disk.
fn filesystem_of(path: &Path) -> Value {
    let Ok(path) = path.canonicalize() else {
        return Value::Null;
    };
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let source = fields.next()?;
            let mount = unescape_mount(fields.next()?);
            let kind = fields.next()?;
            path.starts_with(&mount).then_some((mount, kind, source))
        })
        .max_by_key(|(mount, _, _)| mount.components().count())
        .map_or(
            Value::Null,
            |(mount, kind, source)| json!({ "type": kind, "source": source, "mount": mount }),
        )
}

/// A mount point as `/proc/self/mounts` writes it (space, tab, newline and backslash as
/// octal escapes).
fn unescape_mount(raw: &str) -> PathBuf {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at + 1..at + 4);
        match escape.and_then(|digits| u8::from_str_radix(digits, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    PathBuf::from(out)
}

/// What one transfer through the admin API measured.
#[derive(Debug)]
struct Transfer {
    status: StatusCode,
    elapsed: Duration,
    rss: PeakRss,
}

/// A fresh connection to picloud for one transfer (opened before the clock starts).
async fn connect<B>(addr: std::net::SocketAddr) -> Result<SendRequest<B>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The connection ends when the sender is dropped; a failure shows in the send.
        let _ = connection.await;
    });
    sender.ready().await.context("connection closed")?;
    Ok(sender)
}

fn file_path() -> String {
    format!(
        "/api/admin/apps/{}/files/{COLLECTION}/{NAME}",
        picloud_manager_core::DEFAULT_APP_ID
    )
}

/// A response's body as text, for an error message.
async fn body_text(response: Response<Incoming>) -> String {
    match response.into_body().collect().await {
        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        Err(err) => format!("(unreadable body: {err})"),
    }
}

/// `PUT` of the stream's first `spec.bytes` bytes, streamed; timed from the first byte
/// sent to the answer's status line. The answer must give the size and SHA-256 sent.
async fn upload(spec: &FilesSpec, pattern: &Pattern, sha256: &str) -> Result<Transfer> {
    let mut sender = connect::<PatternBody>(spec.addr).await?;
    let request = Request::builder()
        .method(Method::PUT)
        .uri(file_path())
        .header(header::HOST, spec.addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {}", spec.token))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, spec.bytes)
        .body(PatternBody {
            pattern: pattern.clone(),
            sent: 0,
            total: spec.bytes,
        })
        .context("building the upload")?;
    let before = PeakRss::start(spec.pid)?;
    let started = Instant::now();
    let response = sender.send_request(request).await.context("the upload")?;
    let elapsed = started.elapsed();
    let rss = PeakRss::finish(spec.pid, before)?;
    let status = response.status();
    if status != StatusCode::CREATED && status != StatusCode::OK {
        bail!(
            "the upload answered {status}: {}",
            body_text(response).await
        );
    }
    let body = response
        .into_body()
        .collect()
        .await
        .context("the upload's answer")?
        .to_bytes();
    let answer: Value = serde_json::from_slice(&body).context("the upload's answer")?;
    if answer["size"].as_u64() != Some(spec.bytes) {
        bail!("sent {} bytes, the upload answered {answer}", spec.bytes);
    }
    if answer["sha256"].as_str() != Some(sha256) {
        bail!("sent bytes with SHA-256 {sha256}, the upload answered {answer}");
    }
    Ok(Transfer {
        status,
        elapsed,
        rss,
    })
}

/// `GET` of the file, its body read and checked against the stream as it arrives;
/// timed from the request sent to the body's last byte.
async fn download(spec: &FilesSpec, pattern: &Pattern, sha256: &str) -> Result<Transfer> {
    let mut sender = connect::<Empty<Bytes>>(spec.addr).await?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(file_path())
        .header(header::HOST, spec.addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {}", spec.token))
        .body(Empty::new())
        .context("building the download")?;
    let before = PeakRss::start(spec.pid)?;
    let started = Instant::now();
    let response = sender.send_request(request).await.context("the download")?;
    let status = response.status();
    if status != StatusCode::OK {
        bail!(
            "the download answered {status}: {}",
            body_text(response).await
        );
    }
    let header_text = |name: header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let length = header_text(header::CONTENT_LENGTH);
    if length.as_deref() != Some(spec.bytes.to_string().as_str()) {
        bail!(
            "the download's Content-Length is {length:?}, the file has {} bytes",
            spec.bytes
        );
    }
    let etag = header_text(header::ETAG);
    if etag.as_deref() != Some(format!("\"{sha256}\"").as_str()) {
        bail!("the download's ETag is {etag:?}, the file's SHA-256 is {sha256}");
    }
    let mut body = response.into_body();
    let mut received = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the download's body")?;
        if let Ok(data) = frame.into_data() {
            if !pattern.matches(received, &data) {
                bail!("the download differs from the upload at byte {received}");
            }
            received += data.len() as u64;
        }
    }
    let elapsed = started.elapsed();
    let rss = PeakRss::finish(spec.pid, before)?;
    if received != spec.bytes {
        bail!("downloaded {received} bytes of {}", spec.bytes);
    }
    Ok(Transfer {
        status,
        elapsed,
        rss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_streams_checks_and_hashes_the_same_bytes() {
        let pattern = Pattern::new();
        let total = 2 * MIB + 1000;
        let mut stream = Vec::new();
        let mut offset = 0;
        while offset < total {
            let chunk = pattern.chunk(offset, total);
            assert!(chunk.len() <= CHUNK_BYTES);
            stream.extend_from_slice(&chunk);
            offset += chunk.len() as u64;
        }
        assert_eq!(stream.len() as u64, total);
        // A check across the pattern's end, and one that must fail.
        let across = PATTERN_BYTES - 10;
        assert!(pattern.matches(across as u64, &stream[across..across + 20]));
        assert!(!pattern.matches(across as u64 + 1, &stream[across..across + 20]));
        assert_eq!(
            pattern.sha256(total),
            format!("{:x}", Sha256::digest(&stream))
        );
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mount("/mnt/a\\040b"), PathBuf::from("/mnt/a b"));
        assert_eq!(unescape_mount("/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape_mount("/odd\\x"), PathBuf::from("/odd\\x"));
    }
}
