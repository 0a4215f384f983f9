//! The HTTP server: hyper's HTTP/1 connection driver under PiCloud's own bounds, so a
//! client that is slow on purpose (slowloris, a trickled body, a pile of idle connections)
//! cannot hold the server's sockets and memory.
//!
//! - **Header timeout**: a request's headers must arrive within it, counted from when the
//!   connection starts waiting for them, so the same bound closes a kept-alive connection
//!   that sits idle.
//! - **Body timeout**: a request's body must arrive within it, counted from its headers,
//!   and extended by one second for every `min_body_rate` bytes that arrived: a large
//!   upload at a usable rate is never cut off, a trickled body is. Past it the body fails
//!   to read with [`BodyTimedOut`], which handlers answer 408.
//! - **Connection cap**: past it the server stops accepting; new connections wait in the
//!   kernel's backlog until one closes.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use picloud_shared::BodyTimedOut;
use picloud_shared::config::{ConfigError, EnvLookup, parse_var};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tower::ServiceExt;

/// How the server bounds its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a client may take to send a request's headers, and how long a kept-alive
    /// connection may sit idle (`PICLOUD_HTTP_HEADER_TIMEOUT_SECS`, default 30).
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body
    /// (`PICLOUD_HTTP_BODY_TIMEOUT_SECS`, default 60).
    pub body_timeout: Duration,
    /// Bytes per second a body must average, past the body timeout, to keep arriving
    /// (`PICLOUD_HTTP_MIN_BODY_RATE`, default 65536).
    pub min_body_rate: u64,
    /// Most connections open at once (`PICLOUD_HTTP_MAX_CONNECTIONS`, default 512).
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            min_body_rate: 64 * 1024,
            max_connections: 512,
        }
    }
}

impl HttpLimits {
    /// Reads the `PICLOUD_HTTP_*` variables, each defaulting as documented; zero is refused.
    pub fn from_env(env: &impl EnvLookup) -> Result<Self, ConfigError> {
        let d = Self::default();
        let secs = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
            let value: u64 = parse_var(env, name, default.as_secs())?;
            at_least_one(name, value).map(Duration::from_secs)
        };
        let max_connections: usize =
            parse_var(env, "PICLOUD_HTTP_MAX_CONNECTIONS", d.max_connections)?;
        Ok(Self {
            header_timeout: secs("PICLOUD_HTTP_HEADER_TIMEOUT_SECS", d.header_timeout)?,
            body_timeout: secs("PICLOUD_HTTP_BODY_TIMEOUT_SECS", d.body_timeout)?,
            min_body_rate: at_least_one(
                "PICLOUD_HTTP_MIN_BODY_RATE",
                parse_var(env, "PICLOUD_HTTP_MIN_BODY_RATE", d.min_body_rate)?,
            )?,
            max_connections: at_least_one("PICLOUD_HTTP_MAX_CONNECTIONS", max_connections)?,
        })
    }
}

fn at_least_one<T: PartialOrd + From<u8> + ToString>(
    name: &str,
    value: T,
) -> Result<T, ConfigError> {
    if value >= T::from(1) {
        Ok(value)
    } else {
        Err(ConfigError {
            variable: name.to_owned(),
            value: value.to_string(),
            reason: "must be at least 1".to_owned(),
        })
    }
}

/// A server listening on a real socket.
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, then returns.
    pub async fn shutdown(self) -> std::io::Result<()> {
        // The server may have stopped on its own already; then there is nothing to signal.
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| std::io::Error::other(format!("server task failed: {e}")))?
    }

    /// Waits until the server stops after `signal` completes.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> std::io::Result<()> {
        signal.await;
        self.shutdown().await
    }
}

/// Binds `listen` and serves `router` under `limits` until [`RunningServer::shutdown`].
pub async fn serve(
    listen: SocketAddr,
    router: Router,
    limits: HttpLimits,
) -> std::io::Result<RunningServer> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(accept_loop(listener, router, limits, stopped));
    Ok(RunningServer { addr, task, stop })
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        // A slot first: at the cap the server stops accepting, so waiting clients queue
        // in the kernel's backlog rather than in memory here.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.map_err(std::io::Error::other)?,
            _ = &mut stopped => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: the next accept may succeed.
                    tracing::warn!(error = %err, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopped => break,
        };
        let router = router.clone();
        let (body_timeout, min_body_rate) = (limits.body_timeout, limits.min_body_rate);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let router = router.clone();
            async move {
                let (mut parts, body) = request.into_parts();
                // The peer address feeds the per-address login rate limit.
                parts.extensions.insert(ConnectInfo(peer));
                // A request without a body (most GETs) needs no deadline, nor its timer.
                let body = if body.is_end_stream() {
                    Body::new(body)
                } else {
                    Body::new(DeadlineBody::new(body, body_timeout, min_body_rate))
                };
                let response = router
                    .oneshot(hyper::Request::from_parts(parts, body))
                    .await;
                Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
            }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that went away or broke the protocol ends only its own connection.
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(slot);
        });
    }
    // Stop accepting, then let the connections finish their requests in flight.
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A request body that must arrive by a deadline set when its headers did, pushed out
/// as its bytes arrive.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    /// The deadline with no byte received.
    first: tokio::time::Instant,
    received: u64,
    min_rate: u64,
}

impl DeadlineBody {
    fn new(inner: Incoming, within: Duration, min_rate: u64) -> Self {
        let first = tokio::time::Instant::now() + within;
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(first)),
            first,
            received: 0,
            min_rate: min_rate.max(1),
        }
    }

    /// Every `min_rate` bytes received buy the body one more second.
    fn credit(&mut self, bytes: usize) {
        self.received = self.received.saturating_add(bytes as u64);
        let earned = Duration::from_millis(self.received.saturating_mul(1000) / self.min_rate);
        let deadline = self.first + earned;
        self.deadline.as_mut().reset(deadline);
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            if let Some(Ok(frame)) = &frame
                && let Some(data) = frame.data_ref()
            {
                let len = data.len();
                self.credit(len);
            }
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
