//! [`FakeOutboxStore`]: an outbox in memory on tokio's clock, which the dispatcher's tests
//! pause, so backoffs and leases pass for free.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use picloud_shared::{OutboxItem, OutboxResult, OutboxStore};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How a claim was settled, with the attempt it settled.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// [`OutboxStore::complete`].
    Complete {
        /// The claim's attempt.
        attempt: u32,
    },
    /// [`OutboxStore::retry`].
    Retry {
        /// The claim's attempt.
        attempt: u32,
        /// The wait before the row is due again.
        delay: Duration,
        /// The failure remembered.
        error: String,
    },
    /// [`OutboxStore::defer`].
    Defer {
        /// The claim's attempt.
        attempt: u32,
        /// The wait before the row is due again.
        delay: Duration,
    },
    /// [`OutboxStore::give_up`].
    GiveUp {
        /// The claim's attempt.
        attempt: u32,
        /// The failure the dead letter records.
        error: String,
    },
}

#[derive(Debug)]
struct Row {
    item: OutboxItem,
    /// Attempts counted so far, this claim's included.
    attempts: u32,
    due: Instant,
    claimed_until: Option<Instant>,
    claimed_by: Option<String>,
}

/// An outbox in memory, on tokio's (paused) clock, remembering how each claim was settled
/// and counting the calls a dispatcher makes.
#[derive(Debug, Default)]
pub struct FakeOutboxStore {
    rows: Mutex<Vec<Row>>,
    settled: Mutex<Vec<(usize, Settled)>>,
    claims: AtomicUsize,
    completions: AtomicUsize,
    released: Mutex<Vec<String>>,
    changed: Notify,
}

impl FakeOutboxStore {
    /// Adds a row due after `after`; returns its index, the name settlements report it by.
    pub fn push(&self, item: OutboxItem, after: Duration) -> usize {
        let mut rows = self.rows.lock().unwrap();
        rows.push(Row {
            item,
            attempts: 0,
            due: Instant::now() + after,
            claimed_until: None,
            claimed_by: None,
        });
        rows.len() - 1
    }

    fn index_of(&self, item: &OutboxItem) -> usize {
        self.rows
            .lock()
            .unwrap()
            .iter()
            .position(|row| row.item.id == item.id)
            .unwrap()
    }

    fn settle(&self, item: &OutboxItem, how: Settled) {
        let index = self.index_of(item);
        self.settled.lock().unwrap().push((index, how));
        self.changed.notify_waiters();
    }

    /// Every settlement so far, oldest first, by row index.
    pub fn settled(&self) -> Vec<(usize, Settled)> {
        self.settled.lock().unwrap().clone()
    }

    /// How many times rows were claimed.
    pub fn claims(&self) -> usize {
        self.claims.load(Ordering::SeqCst)
    }

    /// How many calls completed rows.
    pub fn completions(&self) -> usize {
        self.completions.load(Ordering::SeqCst)
    }

    /// The workers that released their claims, in order.
    pub fn released(&self) -> Vec<String> {
        self.released.lock().unwrap().clone()
    }

    /// Waits (on the paused clock, so for free) until `done` holds.
    pub async fn until(&self, done: impl Fn(&[(usize, Settled)]) -> bool) {
        tokio::time::timeout(Duration::from_secs(3600), async {
            loop {
                let changed = self.changed.notified();
                if done(&self.settled()) {
                    return;
                }
                changed.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("gave up waiting; settled so far: {:?}", self.settled()));
    }

    fn reschedule(&self, item: &OutboxItem, delay: Duration, count: bool) {
        let mut rows = self.rows.lock().unwrap();
        let row = rows.iter_mut().find(|row| row.item.id == item.id).unwrap();
        row.claimed_until = None;
        row.claimed_by = None;
        row.due = Instant::now() + delay;
        if !count {
            row.attempts -= 1;
        }
    }

    fn remove(&self, item: &OutboxItem) {
        let mut rows = self.rows.lock().unwrap();
        let row = rows.iter_mut().find(|row| row.item.id == item.id).unwrap();
        // Never due again; kept so indexes stay stable.
        row.due = Instant::now() + Duration::from_secs(1_000_000_000);
        row.claimed_until = None;
    }
}

#[async_trait]
impl OutboxStore for FakeOutboxStore {
    async fn claim_due(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
    ) -> OutboxResult<Vec<OutboxItem>> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        let now = Instant::now();
        let mut rows = self.rows.lock().unwrap();
        let mut claimed = Vec::new();
        for row in rows.iter_mut() {
            if claimed.len() == limit as usize {
                break;
            }
            let free = row.claimed_until.is_none_or(|until| until < now);
            if row.due <= now && free {
                row.claimed_until = Some(now + lease);
                row.claimed_by = Some(worker.to_owned());
                row.attempts += 1;
                let mut item = row.item.clone();
                item.attempts = row.attempts;
                item.claimed_by = worker.to_owned();
                claimed.push(item);
            }
        }
        Ok(claimed)
    }

    async fn complete(&self, items: &[OutboxItem]) -> OutboxResult<()> {
        assert!(!items.is_empty(), "completing nothing is a wasted call");
        self.completions.fetch_add(1, Ordering::SeqCst);
        for item in items {
            self.remove(item);
            self.settle(
                item,
                Settled::Complete {
                    attempt: item.attempts,
                },
            );
        }
        Ok(())
    }

    async fn retry(&self, item: &OutboxItem, delay: Duration, error: &str) -> OutboxResult<()> {
        self.reschedule(item, delay, true);
        self.settle(
            item,
            Settled::Retry {
                attempt: item.attempts,
                delay,
                error: error.to_owned(),
            },
        );
        Ok(())
    }

    async fn defer(&self, item: &OutboxItem, delay: Duration, _: &str) -> OutboxResult<()> {
        self.reschedule(item, delay, false);
        self.settle(
            item,
            Settled::Defer {
                attempt: item.attempts,
                delay,
            },
        );
        Ok(())
    }

    async fn give_up(&self, item: &OutboxItem, error: &str) -> OutboxResult<()> {
        self.remove(item);
        self.settle(
            item,
            Settled::GiveUp {
                attempt: item.attempts,
                error: error.to_owned(),
            },
        );
        Ok(())
    }

    async fn release(&self, worker: &str) -> OutboxResult<u64> {
        self.released.lock().unwrap().push(worker.to_owned());
        let mut released = 0;
        for row in self.rows.lock().unwrap().iter_mut() {
            if row.claimed_by.as_deref() == Some(worker) && row.claimed_until.is_some() {
                row.claimed_until = None;
                row.claimed_by = None;
                row.attempts -= 1;
                released += 1;
            }
        }
        Ok(released)
    }

    async fn next_due_in(&self) -> OutboxResult<Option<Duration>> {
        let now = Instant::now();
        Ok(self
            .rows
            .lock()
            .unwrap()
            .iter()
            .map(|row| row.due.max(row.claimed_until.unwrap_or(row.due)))
            .min()
            .map(|at| at.saturating_duration_since(now)))
    }
}
