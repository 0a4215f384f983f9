//! Log output: JSON lines by default, human-readable on request.

use tracing_subscriber::EnvFilter;

use crate::LogFormat;

/// Installs the global tracing subscriber. An unusable filter falls back to `info` with a
/// warning rather than leaving the server silent.
pub fn init(format: LogFormat, filter: &str) {
    let (env_filter, bad_filter) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e.to_string())),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Pretty => builder.init(),
    }
    if let Some(error) = bad_filter {
        tracing::warn!(filter, %error, "PICLOUD_LOG is not a valid filter, using 'info'");
    }
}
