//! Test support shared by PiCloud's crates, so a fake or a suite is written once rather than
//! copied into each crate's tests.
//!
//! - [`outbox`]: the contract every [`OutboxStore`](picloud_shared::OutboxStore) must
//!   meet, run on each implementation with [`outbox_store_contract!`], and an in-memory
//!   store on tokio's clock for tests of the dispatcher.
//!
//! It depends on `picloud-shared` only: any crate may use it as a dev-dependency, and
//! nothing here reaches a production build. (The manager's in-memory repositories stay
//! behind its own `testsuite` feature, beside the code they stand in for.)

#![expect(
    clippy::unwrap_used,
    reason = "test support fails loudly on the first surprise, like the tests it serves"
)]

pub mod outbox;
