//! The outbox's claim side in tests.

mod fake;

pub use fake::{FakeOutboxStore, Settled};
