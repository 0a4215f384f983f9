//! Test support shared by PiCloud's crates, so a fake or a suite is written once rather than
//! copied into each crate's tests.
//!
//! - [`outbox`]: an [`OutboxStore`](picloud_shared::OutboxStore) in memory on tokio's
//!   clock, for tests of the dispatcher.
//!
//! It depends on `picloud-shared` only: any crate may use it as a dev-dependency, and
//! nothing here reaches a production build. (The manager's in-memory repositories stay
//! behind its own `testsuite` feature, beside the code they stand in for.)

#![expect(
    clippy::unwrap_used,
    reason = "test support fails loudly on the first surprise, like the tests it serves"
)]

pub mod outbox;
