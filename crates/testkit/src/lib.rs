//! Test support shared by PiCloud's crates, so a fake or a suite is written once rather than
//! copied into each crate's tests.
//!
//! - [`outbox`]: the contract every [`OutboxStore`](picloud_shared::OutboxStore) must
//!   meet, run on each implementation with [`outbox_store_contract!`], and an in-memory
//!   store on tokio's clock for tests of the dispatcher.
//! - [`backend_suite!`]: a trait's suite, written once, as one test per function on the
//!   in-memory backend and one on PostgreSQL.
//! - [`services`]: the contexts and principals the service suites (KV, files) call with.
//! - [`PHC`]: a password hash for tests that store users.
//!
//! It depends on `picloud-shared` only: any crate may use it as a dev-dependency, and
//! nothing here reaches a production build. (The manager's in-memory repositories stay
//! behind its own `testsuite` feature, beside the code they stand in for.)

#![expect(
    clippy::unwrap_used,
    reason = "test support fails loudly on the first surprise, like the tests it serves"
)]

pub mod outbox;
pub mod services;
mod suite;

/// A syntactically valid argon2id PHC string, for tests that store a user: stores keep
/// whatever hash they are given, and hashing for real is slow (and tested where it is done).
pub const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
