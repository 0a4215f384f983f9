//! The outbox's claim side in tests: the [`contract`] every
//! [`OutboxStore`](picloud_shared::OutboxStore) must meet, and [`FakeOutboxStore`], the
//! in-memory one the dispatcher's tests run on.

pub mod contract;
mod fake;

pub use contract::{OutboxFixture, RowState};
pub use fake::{FakeOutboxStore, Settled};
