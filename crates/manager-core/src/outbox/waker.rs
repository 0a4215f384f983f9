//! Wakes outbox dispatchers when rows become due. Nothing polls.
//!
//! A service that committed outbox rows tells its own process's dispatcher at once, in
//! memory, through an [`OutboxSignal`]; the signal also tells the other nodes on the same
//! database with `NOTIFY picloud_outbox`, at most one per [`NOTIFY_SPACING`], so that a
//! burst of writes sends a handful of notifications rather than one each. PostgreSQL
//! serialises the commits of notifying transactions on one lock, so a `NOTIFY` inside
//! every KV write would halve how many writes per second the database takes
//! (`docs/performance.md`).
//!
//! A [`PgOutboxWaker`] listens on that channel and wakes its dispatcher on every
//! notification except its own process's. Notifications are not durable: any sent while
//! the listening connection is down are lost. So a lost connection, and every
//! (re)connection, count as a wake-up themselves: the dispatcher then looks at the outbox
//! and finds whatever it missed.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use picloud_shared::OutboxWaker;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::outbox::OUTBOX_CHANNEL;

/// The shortest time between two notifications of one process: other nodes hear of a
/// burst's rows at most this much later than the writing node's own dispatcher, which is
/// woken in memory at once.
pub const NOTIFY_SPACING: Duration = Duration::from_millis(10);

/// First wait before reconnecting a lost listener; doubled on each failure.
const RECONNECT_MIN: Duration = Duration::from_millis(250);
/// Longest wait between two reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Announces committed outbox rows: wakes this process's waker at once and has a
/// background task send `NOTIFY picloud_outbox` for the other nodes. At most one
/// notification is sent per [`NOTIFY_SPACING`]; announcements made meanwhile are folded
/// into one more, sent when the spacing is over. Cheap to clone; every clone is the same
/// signal, and the task stops when the last clone is dropped.
///
/// Announce only after the commit: a dispatcher woken earlier would not see the rows.
#[derive(Clone)]
pub struct OutboxSignal {
    inner: Arc<SignalInner>,
}

struct SignalInner {
    /// Names this process in the payload of its notifications, so its own waker can tell
    /// them from other nodes' (it has been woken in memory already).
    origin: String,
    /// Wakes this process's waker.
    local: Arc<Notify>,
    /// Wakes the task that sends the notification.
    remote: Arc<Notify>,
    notifier: JoinHandle<()>,
}

impl Drop for SignalInner {
    fn drop(&mut self) {
        self.notifier.abort();
    }
}

impl fmt::Debug for OutboxSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxSignal")
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

impl OutboxSignal {
    /// Starts the notifying task over `pool`. Must be called inside a tokio runtime.
    pub fn spawn(pool: PgPool) -> Self {
        let origin = Uuid::new_v4().to_string();
        let remote = Arc::new(Notify::new());
        let notifier = tokio::spawn(notify_other_nodes(
            pool,
            origin.clone(),
            Arc::clone(&remote),
        ));
        Self {
            inner: Arc::new(SignalInner {
                origin,
                local: Arc::new(Notify::new()),
                remote,
                notifier,
            }),
        }
    }

    /// Rows this process's dispatcher handed back (a retry, a deferral, a release) may
    /// suit another node's: tell only the other nodes. Returns at once.
    pub fn tell_other_nodes(&self) {
        self.inner.remote.notify_one();
    }

    /// Outbox rows have committed: wake the dispatchers. Returns at once.
    pub fn rows_committed(&self) {
        wake_all(&self.inner.local);
        // A stored permit if the task is busy sending: one more notification afterwards.
        self.inner.remote.notify_one();
    }
}

async fn notify_other_nodes(pool: PgPool, origin: String, remote: Arc<Notify>) {
    loop {
        remote.notified().await;
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(OUTBOX_CHANNEL)
            .bind(&origin)
            .execute(&pool)
            .await;
        match sent {
            Ok(_) => {}
            Err(sqlx::Error::PoolClosed) => return,
            // Other nodes find the rows at their next wake-up or safety recheck; this
            // node's dispatcher has been woken already.
            Err(err) => tracing::warn!(error = %err, "could not notify other nodes of outbox rows"),
        }
        // Under a burst, at most one notification per spacing: each costs the database a
        // commit on its notification lock and every listener a wake-up. This only runs
        // after a notification was sent, so an idle process never wakes for it.
        tokio::time::sleep(NOTIFY_SPACING).await;
    }
}

/// An [`OutboxWaker`] over a `LISTEN picloud_outbox` connection, held by a background task
/// that reconnects with a bounded backoff, and over its process's [`OutboxSignal`].
/// Dropping the waker stops the task and returns its connection to the pool.
pub struct PgOutboxWaker {
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl fmt::Debug for PgOutboxWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOutboxWaker")
            .field("listening", &!self.task.is_finished())
            .finish_non_exhaustive()
    }
}

impl PgOutboxWaker {
    /// Starts listening on a connection from `pool` (held for as long as the waker lives),
    /// and to `signal`, this process's announcements. Must be called inside a tokio
    /// runtime. The first connection counts as a wake-up.
    pub fn spawn(pool: PgPool, signal: &OutboxSignal) -> Self {
        let wake = Arc::clone(&signal.inner.local);
        let task = tokio::spawn(listen(pool, signal.inner.origin.clone(), Arc::clone(&wake)));
        Self { wake, task }
    }
}

impl Drop for PgOutboxWaker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl OutboxWaker for PgOutboxWaker {
    async fn wait_until(&self, deadline: Option<Instant>) {
        let notified = self.wake.notified();
        match deadline {
            Some(deadline) => {
                // Reaching the deadline is the other way out, not a failure.
                let _ = tokio::time::timeout_at(deadline.into(), notified).await;
            }
            None => notified.await,
        }
    }
}

/// Wakes every current waiter, and keeps one wake-up for a waiter that is between two
/// waits (it has just looked at the outbox and is about to sleep): without it, a row
/// written in that gap would sleep until the next due time.
fn wake_all(wake: &Notify) {
    wake.notify_waiters();
    wake.notify_one();
}

async fn listen(pool: PgPool, own_origin: String, wake: Arc<Notify>) {
    let mut backoff = RECONNECT_MIN;
    loop {
        match connect(&pool).await {
            Ok(mut listener) => {
                backoff = RECONNECT_MIN;
                tracing::debug!(channel = OUTBOX_CHANNEL, "listening for outbox rows");
                // Whatever was notified while nobody listened is unknown: look now.
                wake_all(&wake);
                loop {
                    match listener.try_recv().await {
                        // This process's own announcements woke it in memory already.
                        Ok(Some(notification)) if notification.payload() == own_origin => {}
                        Ok(Some(_)) => wake_all(&wake),
                        // The connection was lost (and has been re-established, or the next
                        // call reports why not): notifications may have been missed.
                        Ok(None) => {
                            tracing::warn!("outbox listener connection lost; reconnected");
                            wake_all(&wake);
                        }
                        Err(sqlx::Error::PoolClosed) => return,
                        Err(err) => {
                            tracing::warn!(error = %err, "outbox listener failed; reconnecting");
                            wake_all(&wake);
                            break;
                        }
                    }
                }
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                    "cannot listen for outbox rows; retrying"
                );
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(RECONNECT_MAX);
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(OUTBOX_CHANNEL).await?;
    Ok(listener)
}
