//! The files service behind `picloud_shared::FilesService`: metadata rows in PostgreSQL
//! (the `files` table, events written in the same transaction), bytes in a [`BlobStore`]
//! (the filesystem one, [`FsBlobStore`], by default), the in-memory service for tests,
//! the sweep that finds bytes without a row and rows without bytes, and the admin files
//! API.

mod blob;
#[cfg(feature = "admin-api")]
pub(crate) mod http;
#[cfg(feature = "testsuite")]
mod memory;
mod pg;
mod sweep;

pub use blob::{BlobError, BlobKey, BlobStore, FsBlobStore, StoredBlob, WriteStep};
#[cfg(feature = "admin-api")]
pub use http::FilesState;
#[cfg(feature = "testsuite")]
pub use memory::InMemoryFilesService;
pub use pg::PgFilesService;
pub use sweep::{FileSweeper, MissingFile, SweepReport, spawn_file_sweeper};
