//! The all-in-one PiCloud server: the manager (admin API), the orchestrator (execute
//! endpoints) and the executor (Rhai sandbox) composed in one process.
//!
//! This crate is where implementations are chosen and wired: it reads config, opens the
//! pool, picks the Postgres repositories and the in-process executor, and serves them.

pub mod config;
pub mod database;
pub mod embedded_postgres;
pub mod http_server;
pub mod secret_file;
pub mod server;
pub mod telemetry;

pub use config::{DatabaseSource, FilesConfig, LogFormat, ServerConfig};
pub use http_server::{HttpLimits, RunningServer, serve};
pub use server::{App, bootstrap_admin, build_app};
