//! The `log::` module scripts write to, and the per-run buffer that captures its lines.
//!
//! The module is stateless and registered once on every engine; each call finds the
//! current run's buffer through the thread-local run state.
//!
//! A run keeps at most [`MAX_LOG_ENTRIES`] lines and [`MAX_LOG_BYTES`] bytes of message
//! text. The first line that does not fit closes the buffer: it and every later line are
//! dropped (a sticky cut, so the captured log never has gaps), and one final `warn` line
//! "log limit reached, N lines dropped" is appended when the run ends.

use chrono::Utc;
use picloud_shared::{LogEntry, LogLevel};
use rhai::{Dynamic, FuncRegistration, Module};

use crate::run_state;

/// Most log lines one run keeps.
pub const MAX_LOG_ENTRIES: usize = 1_000;

/// Most bytes of message text one run keeps.
pub const MAX_LOG_BYTES: usize = 64 * 1024;

/// The captured log of one run, capped.
#[derive(Debug, Default)]
pub(crate) struct LogBuffer {
    entries: Vec<LogEntry>,
    bytes: usize,
    dropped: u64,
}

impl LogBuffer {
    /// Keeps a line if it fits under the caps and nothing was dropped before it.
    pub(crate) fn push(&mut self, level: LogLevel, message: String) {
        let fits = self.dropped == 0
            && self.entries.len() < MAX_LOG_ENTRIES
            && self.bytes.saturating_add(message.len()) <= MAX_LOG_BYTES;
        if !fits {
            self.dropped += 1;
            return;
        }
        self.bytes += message.len();
        self.entries.push(LogEntry {
            level,
            message,
            at: Utc::now(),
        });
    }

    /// The captured lines, followed by the note about dropped lines when there were any.
    pub(crate) fn finish(mut self) -> Vec<LogEntry> {
        if self.dropped > 0 {
            self.entries.push(LogEntry {
                level: LogLevel::Warn,
                message: format!("log limit reached, {} lines dropped", self.dropped),
                at: Utc::now(),
            });
        }
        self.entries
    }
}

/// Builds the `log` module: `log::trace`, `log::info`, `log::warn` and `log::error`, each
/// taking any value (non-strings are logged as their text form).
pub(crate) fn module() -> Module {
    let mut module = Module::new();
    let levels = [
        ("trace", LogLevel::Trace),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
    ];
    for (name, level) in levels {
        // Volatile: logging is a side effect the optimizer must never fold away.
        FuncRegistration::new(name)
            .with_volatility(true)
            .set_into_module(&mut module, move |message: Dynamic| {
                // Display gives a string's text as is and any other value as Rhai prints it.
                run_state::log(level, message.to_string());
            });
    }
    module
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_in_order_with_their_level() {
        let mut buffer = LogBuffer::default();
        buffer.push(LogLevel::Info, "one".into());
        buffer.push(LogLevel::Error, "two".into());
        let logs = buffer.finish();
        let lines: Vec<_> = logs.iter().map(|e| (e.level, e.message.as_str())).collect();
        assert_eq!(lines, [(LogLevel::Info, "one"), (LogLevel::Error, "two")]);
    }

    #[test]
    fn the_entry_cap_drops_the_rest_and_says_so() {
        let mut buffer = LogBuffer::default();
        for i in 0..(MAX_LOG_ENTRIES + 5) {
            buffer.push(LogLevel::Info, i.to_string());
        }
        let logs = buffer.finish();
        assert_eq!(logs.len(), MAX_LOG_ENTRIES + 1);
        assert_eq!(logs[MAX_LOG_ENTRIES - 1].message, "999");
        let last = logs.last().unwrap();
        assert_eq!(last.level, LogLevel::Warn);
        assert_eq!(last.message, "log limit reached, 5 lines dropped");
    }

    #[test]
    fn the_byte_cap_is_sticky() {
        let mut buffer = LogBuffer::default();
        buffer.push(LogLevel::Info, "a".repeat(MAX_LOG_BYTES - 10));
        buffer.push(LogLevel::Info, "b".repeat(11));
        // Small enough to fit, but dropped: the log has no gaps.
        buffer.push(LogLevel::Info, "c".into());
        let logs = buffer.finish();
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[1].message, "log limit reached, 2 lines dropped");
    }
}
