//! Wakes the outbox dispatcher through PostgreSQL's LISTEN/NOTIFY: writers of due rows
//! `NOTIFY picloud_outbox` in their transaction, and a dispatcher asleep until its next due
//! time wakes when the notification arrives. Nothing polls.
//!
//! Notifications are not durable: any sent while the listening connection is down are lost.
//! So a lost connection, and every (re)connection, count as a wake-up themselves: the
//! dispatcher then looks at the outbox and finds whatever it missed.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use picloud_shared::OutboxWaker;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::postgres::OUTBOX_CHANNEL;

/// First wait before reconnecting a lost listener; doubled on each failure.
const RECONNECT_MIN: Duration = Duration::from_millis(250);
/// Longest wait between two reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// An [`OutboxWaker`] over a `LISTEN picloud_outbox` connection, held by a background task
/// that reconnects with a bounded backoff. Dropping the waker stops the task and returns
/// its connection to the pool.
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
    /// Starts listening on a connection from `pool` (held for as long as the waker lives).
    /// Must be called inside a tokio runtime. The first connection counts as a wake-up.
    pub fn spawn(pool: PgPool) -> Self {
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(listen(pool, Arc::clone(&wake)));
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

async fn listen(pool: PgPool, wake: Arc<Notify>) {
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
