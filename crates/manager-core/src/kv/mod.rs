//! The KV service behind `picloud_shared::KvService`: its PostgreSQL implementation (the
//! `kv_entries` table, events written in the same transaction), the in-memory one for
//! tests, and the admin KV browser.

#[cfg(feature = "admin-api")]
pub(crate) mod http;
#[cfg(feature = "testsuite")]
mod memory;
mod pg;

#[cfg(feature = "admin-api")]
pub use http::{KvState, ListKvQuery};
#[cfg(feature = "testsuite")]
pub use memory::InMemoryKvService;
pub use pg::PgKvService;
