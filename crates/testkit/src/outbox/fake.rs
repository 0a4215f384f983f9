//! [`FakeOutboxStore`]: an outbox in memory on tokio's clock, which the dispatcher's tests
//! pause, so backoffs and leases pass for free.
//!
//! It keeps the claim identity PostgreSQL keeps: a settlement acts only on the claim it
//! names (the worker and the attempt), so a dispatcher test cannot pass on a fake that
//! forgives what the real store refuses. The contract suite ([`super::contract`]) runs on
//! it as on the real store.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use picloud_shared::{
    AppId, OutboxItem, OutboxResult, OutboxStore, ScriptId, TriggerId, TriggerKind,
};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use super::contract::{OutboxFixture, RowState};

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
    /// Attempts counted so far, the current claim's included.
    attempts: u32,
    due: Instant,
    claimed_until: Option<Instant>,
    claimed_by: Option<String>,
    /// Completed or given up: gone from the outbox, kept so indexes stay stable.
    gone: bool,
}

impl Row {
    /// Whether `item` is the claim this row is held by now.
    fn held_by(&self, item: &OutboxItem) -> bool {
        !self.gone
            && self.claimed_by.as_deref() == Some(item.claimed_by.as_str())
            && self.attempts == item.attempts
    }

    /// When the row can be claimed: when it is due, or when its lease ends if later.
    fn claimable_at(&self) -> Instant {
        self.claimed_until
            .map_or(self.due, |until| until.max(self.due))
    }
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
    /// The item's `attempts` and `claimed_by` are the store's to set when it is claimed.
    pub fn push(&self, item: OutboxItem, after: Duration) -> usize {
        let mut rows = self.rows.lock().unwrap();
        rows.push(Row {
            item,
            attempts: 0,
            due: Instant::now() + after,
            claimed_until: None,
            claimed_by: None,
            gone: false,
        });
        rows.len() - 1
    }

    /// Every settlement that took effect so far, oldest first, by row index. A settlement
    /// of a claim the store no longer holds changes nothing and is not listed.
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

    /// Applies `change` to the row `item` claims if the store still holds that claim (or,
    /// with `any_holder`, if the row is still there at all), and lists the settlement.
    fn settle(
        &self,
        item: &OutboxItem,
        any_holder: bool,
        how: Settled,
        change: impl FnOnce(&mut Row),
    ) {
        let mut rows = self.rows.lock().unwrap();
        let Some(index) = rows.iter().position(|row| row.item.id == item.id) else {
            return;
        };
        let row = &mut rows[index];
        let applies = if any_holder {
            !row.gone
        } else {
            row.held_by(item)
        };
        if !applies {
            return;
        }
        change(row);
        drop(rows);
        self.settled.lock().unwrap().push((index, how));
        self.changed.notify_waiters();
    }

    fn reschedule(&self, item: &OutboxItem, delay: Duration, count: bool, how: Settled) {
        self.settle(item, false, how, |row| {
            row.claimed_until = None;
            row.claimed_by = None;
            row.due = Instant::now() + delay;
            if !count {
                row.attempts = row.attempts.saturating_sub(1);
            }
        });
    }
}

fn remove(row: &mut Row) {
    row.gone = true;
    row.claimed_until = None;
    row.claimed_by = None;
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
        let mut due: Vec<usize> = (0..rows.len())
            .filter(|&i| {
                let row = &rows[i];
                !row.gone && row.due <= now && row.claimed_until.is_none_or(|until| until < now)
            })
            .collect();
        // Oldest due first; a stable sort keeps rows due together in the order they came.
        due.sort_by_key(|&i| rows[i].due);
        due.truncate(limit as usize);
        Ok(due
            .into_iter()
            .map(|i| {
                let row = &mut rows[i];
                row.claimed_until = Some(now + lease);
                row.claimed_by = Some(worker.to_owned());
                row.attempts += 1;
                let mut item = row.item.clone();
                item.attempts = row.attempts;
                item.claimed_by = worker.to_owned();
                item
            })
            .collect())
    }

    async fn complete(&self, items: &[OutboxItem]) -> OutboxResult<()> {
        assert!(!items.is_empty(), "completing nothing is a wasted call");
        self.completions.fetch_add(1, Ordering::SeqCst);
        for item in items {
            // A delivered event is delivered, whoever holds its row now.
            let how = Settled::Complete {
                attempt: item.attempts,
            };
            self.settle(item, true, how, remove);
        }
        Ok(())
    }

    async fn retry(&self, item: &OutboxItem, delay: Duration, error: &str) -> OutboxResult<()> {
        let how = Settled::Retry {
            attempt: item.attempts,
            delay,
            error: error.to_owned(),
        };
        self.reschedule(item, delay, true, how);
        Ok(())
    }

    async fn defer(&self, item: &OutboxItem, delay: Duration, _: &str) -> OutboxResult<()> {
        let how = Settled::Defer {
            attempt: item.attempts,
            delay,
        };
        self.reschedule(item, delay, false, how);
        Ok(())
    }

    async fn give_up(&self, item: &OutboxItem, error: &str) -> OutboxResult<()> {
        let how = Settled::GiveUp {
            attempt: item.attempts,
            error: error.to_owned(),
        };
        self.settle(item, false, how, remove);
        Ok(())
    }

    async fn release(&self, worker: &str) -> OutboxResult<u64> {
        self.released.lock().unwrap().push(worker.to_owned());
        let mut released = 0;
        for row in self.rows.lock().unwrap().iter_mut() {
            if !row.gone && row.claimed_by.as_deref() == Some(worker) {
                row.claimed_until = None;
                row.claimed_by = None;
                row.attempts = row.attempts.saturating_sub(1);
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
            .filter(|row| !row.gone)
            .map(Row::claimable_at)
            .min()
            .map(|at| at.saturating_duration_since(now)))
    }
}

/// The fake as the contract suite drives it: rows for a trigger of 3 attempts in an app of
/// their own, and time passing on tokio's clock, which must be paused
/// (`#[tokio::test(start_paused = true)]`).
#[async_trait]
impl OutboxFixture for FakeOutboxStore {
    fn store(&self) -> &dyn OutboxStore {
        self
    }

    async fn add_row(&self, event: Value, due_in: Duration) -> Uuid {
        let id = Uuid::now_v7();
        self.push(
            OutboxItem {
                id,
                app_id: AppId::new(),
                trigger_id: TriggerId::new(),
                trigger_kind: TriggerKind::Kv,
                script_id: ScriptId::new(),
                event,
                depth: 1,
                attempts: 0,
                max_attempts: 3,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                run_as: None,
                dead_letter_id: None,
                claimed_by: String::new(),
            },
            due_in,
        );
        id
    }

    async fn row(&self, id: Uuid) -> Option<RowState> {
        let rows = self.rows.lock().unwrap();
        rows.iter()
            .find(|row| row.item.id == id && !row.gone)
            .map(|row| RowState {
                attempts: row.attempts,
                claimed_by: row.claimed_by.clone(),
            })
    }

    async fn elapse(&self, by: Duration) {
        tokio::time::advance(by).await;
    }
}
