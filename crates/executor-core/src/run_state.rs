//! Per-run state, kept in a thread-local while a script runs.
//!
//! Rhai's engine is shared by every run, so anything that differs per run (the operation
//! budget, the wall-clock deadline, the log buffer) cannot live on it. Each run installs
//! its state on the thread that executes it; the engine's progress callback and the
//! `log::` functions find it there. This is also how a timed-out script is actually
//! stopped: a blocking thread cannot be killed, but the progress callback, called on every
//! operation, can end the run.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use picloud_shared::LogLevel;
use rhai::{Dynamic, EvalAltResult, Position};

use crate::log::LogBuffer;
use crate::memory;
use crate::sdk::RunServices;

/// Reading the clock costs about as much as a cheap operation, so the deadline is checked
/// every this many operations (a few microseconds of script time at most).
const DEADLINE_CHECK_INTERVAL: u64 = 32;

/// Why the sandbox ended a run early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// The wall-clock deadline passed.
    Timeout,
    /// The operation budget ran out.
    Operations,
    /// The run held more heap than its memory limit.
    Memory,
    /// An inline run outgrew its slice or was about to block: it is abandoned, with no
    /// effect, and started again on a script worker.
    SliceEnded(SliceEnd),
}

/// What ended an inline run's slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SliceEnd {
    /// Its time ran out: the script is long, or its thread was preempted.
    Clock,
    /// It held more than an inline run may.
    Heap,
    /// It was about to block (a service call, `sleep`).
    Blocking,
}

/// An inline run's slice: it runs on a runtime thread only while it is short, holds
/// little and never blocks (see [`crate::engine::INLINE_SLICE`]).
#[derive(Debug, Clone, Copy)]
struct InlineSlice {
    ends: Instant,
    max_heap: usize,
}

/// What one run is allowed and what it has captured so far.
#[derive(Debug)]
pub(crate) struct RunState {
    max_operations: u64,
    max_memory_bytes: usize,
    deadline: Instant,
    pub(crate) logs: LogBuffer,
    pub(crate) stop: Option<StopReason>,
    /// What the run's service calls act with (its context and the services).
    services: Option<Arc<RunServices>>,
    /// Set when the run is an inline attempt on a runtime thread.
    inline: Option<InlineSlice>,
}

impl RunState {
    /// State for a run starting now, without a memory limit.
    pub(crate) fn new(max_operations: u64, timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            max_operations,
            max_memory_bytes: usize::MAX,
            deadline: now.checked_add(timeout).unwrap_or(now),
            logs: LogBuffer::default(),
            stop: None,
            services: None,
            inline: None,
        }
    }

    /// The same state as an inline attempt: it ends as [`StopReason::SliceEnded`] once it
    /// has run for `slice` or holds more than `max_heap` bytes, or at its first blocking
    /// call.
    pub(crate) fn inline(mut self, slice: Duration, max_heap: usize) -> Self {
        let now = Instant::now();
        self.inline = Some(InlineSlice {
            ends: now.checked_add(slice).unwrap_or(now),
            max_heap,
        });
        self
    }

    /// The same state, stopping the run once it holds more than `bytes` of heap (as
    /// counted by [`crate::memory`]).
    pub(crate) fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.max_memory_bytes = bytes;
        self
    }

    /// The same state, with the services the run's SDK calls use.
    pub(crate) fn with_services(mut self, services: RunServices) -> Self {
        self.services = Some(Arc::new(services));
        self
    }
}

thread_local! {
    static CURRENT: RefCell<Option<RunState>> = const { RefCell::new(None) };
}

/// Runs `f` with `state` installed as this thread's current run, and hands the state back
/// afterwards. Whatever was installed before is restored, even if `f` panics.
pub(crate) fn scoped<R>(state: RunState, f: impl FnOnce() -> R) -> (R, Option<RunState>) {
    struct Restore(Option<RunState>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|current| *current.borrow_mut() = previous);
        }
    }

    let restore = Restore(CURRENT.with(|current| current.replace(Some(state))));
    let out = f();
    let state = CURRENT.with(RefCell::take);
    drop(restore);
    (out, state)
}

fn with_current<R>(f: impl FnOnce(&mut RunState) -> R) -> Option<R> {
    CURRENT.with(|current| {
        // A failed borrow would mean re-entrance from inside the state's own code, which
        // never calls back into the engine; treat it like "no run" rather than panic.
        let mut current = current.try_borrow_mut().ok()?;
        current.as_mut().map(f)
    })
}

/// The engine's progress callback: ends the run when its operation budget is spent, it
/// holds more memory than it may, or its deadline has passed. Outside a run it lets
/// everything through.
///
/// Every operation is checked against the memory limit, so a run overshoots it by at
/// most what one operation allocates, which the structural limits bound (one string of
/// `max_string_size`, one array of `max_array_size` slots).
pub(crate) fn on_progress(operations: u64) -> Option<Dynamic> {
    with_current(|state| {
        if operations > state.max_operations {
            state.stop = Some(StopReason::Operations);
            return Some(Dynamic::UNIT);
        }
        if memory::run_bytes() > state.max_memory_bytes {
            state.stop = Some(StopReason::Memory);
            return Some(Dynamic::UNIT);
        }
        // One reading of the clock serves the deadline and an inline run's slice.
        let now = operations
            .is_multiple_of(DEADLINE_CHECK_INTERVAL)
            .then(Instant::now);
        if now.is_some_and(|now| now >= state.deadline) {
            state.stop = Some(StopReason::Timeout);
            return Some(Dynamic::UNIT);
        }
        // The sandbox's own limits come first: a run that breaks one inline would break
        // it on a worker too, so it ends here with that error.
        if let Some(slice) = state.inline {
            let end = if memory::run_bytes() > slice.max_heap {
                Some(SliceEnd::Heap)
            } else if now.is_some_and(|now| now >= slice.ends) {
                Some(SliceEnd::Clock)
            } else {
                None
            };
            if let Some(end) = end {
                state.stop = Some(StopReason::SliceEnded(end));
                return Some(Dynamic::UNIT);
            }
        }
        None
    })
    .flatten()
}

/// Ends the current run if it is an inline attempt, before it blocks (a service call,
/// `sleep`): it starts again on a script worker, where blocking is allowed. Nothing the
/// attempt did is kept, so ending it here, before the call has any effect, loses nothing.
pub(crate) fn leave_inline() -> Result<(), Box<EvalAltResult>> {
    let inline = with_current(|state| {
        let inline = state.inline.is_some();
        if inline {
            state.stop = Some(StopReason::SliceEnded(SliceEnd::Blocking));
        }
        inline
    });
    if inline == Some(true) {
        return Err(EvalAltResult::ErrorTerminated(Dynamic::UNIT, Position::NONE).into());
    }
    Ok(())
}

/// The bytes the current run may still allocate before its memory limit stops it;
/// `usize::MAX` outside a run.
pub(crate) fn memory_left() -> usize {
    with_current(|state| state.max_memory_bytes.saturating_sub(memory::run_bytes()))
        .unwrap_or(usize::MAX)
}

/// Appends a line to the current run's log.
pub(crate) fn log(level: LogLevel, message: String) {
    with_current(|state| state.logs.push(level, message));
}

/// The current run's services and deadline, for one service call. Handed out as an `Arc`
/// so the call does not hold the run state while it waits on the service.
pub(crate) fn services() -> Option<(Arc<RunServices>, Instant)> {
    with_current(|state| {
        state
            .services
            .as_ref()
            .map(|services| (Arc::clone(services), state.deadline))
    })
    .flatten()
}

/// Ends the current run as timed out: what a service call returns when the run's
/// deadline passed while it waited.
pub(crate) fn timed_out() -> Box<EvalAltResult> {
    with_current(|state| state.stop = Some(StopReason::Timeout));
    EvalAltResult::ErrorTerminated(Dynamic::UNIT, Position::NONE).into()
}

/// `sleep(seconds)` for scripts: sleeps no further than the run's deadline, and ends the
/// run as timed out when the request would cross it. Rhai's own `sleep` would block the
/// thread past any deadline, out of reach of the progress callback.
pub(crate) fn sleep(requested: Duration) -> Result<(), Box<EvalAltResult>> {
    leave_inline()?;
    let remaining = with_current(|state| state.deadline.saturating_duration_since(Instant::now()))
        .unwrap_or(Duration::ZERO);
    if requested <= remaining {
        std::thread::sleep(requested);
        return Ok(());
    }
    std::thread::sleep(remaining);
    with_current(|state| state.stop = Some(StopReason::Timeout));
    Err(EvalAltResult::ErrorTerminated(Dynamic::UNIT, Position::NONE).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_checked_against_the_installed_state() {
        let state = RunState::new(10, Duration::from_secs(60));
        let ((within, over), state) = scoped(state, || (on_progress(10), on_progress(11)));
        assert!(within.is_none());
        assert!(over.is_some());
        assert_eq!(state.unwrap().stop, Some(StopReason::Operations));
        assert!(on_progress(u64::MAX).is_none(), "no run, no limit");
    }

    #[test]
    fn memory_left_is_the_runs_limit_outside_of_metering() {
        assert_eq!(memory_left(), usize::MAX, "no run, no limit");
        let state = RunState::new(1, Duration::from_secs(60)).with_memory_limit(1 << 20);
        let (left, _) = scoped(state, memory_left);
        // Nothing is counted unless metered by the binary's allocator (tests/files.rs
        // covers a metered run).
        assert_eq!(left, 1 << 20);
    }

    #[test]
    fn a_passed_deadline_stops_the_run() {
        let state = RunState::new(u64::MAX, Duration::ZERO);
        let (stopped, state) = scoped(state, || on_progress(DEADLINE_CHECK_INTERVAL));
        assert!(stopped.is_some());
        assert_eq!(state.unwrap().stop, Some(StopReason::Timeout));
    }

    #[test]
    fn the_previous_state_is_restored_after_a_panic() {
        let result = std::panic::catch_unwind(|| {
            scoped(RunState::new(1, Duration::from_secs(1)), || panic!("boom"))
        });
        assert!(result.is_err());
        assert!(
            on_progress(1_000).is_none(),
            "the panicking run's state is gone"
        );
    }

    #[test]
    fn an_inline_slice_ends_on_its_clock_and_before_blocking() {
        let state =
            RunState::new(u64::MAX, Duration::from_secs(60)).inline(Duration::ZERO, usize::MAX);
        let (stopped, state) = scoped(state, || on_progress(DEADLINE_CHECK_INTERVAL));
        assert!(stopped.is_some());
        assert_eq!(
            state.unwrap().stop,
            Some(StopReason::SliceEnded(SliceEnd::Clock))
        );

        let state = RunState::new(u64::MAX, Duration::from_secs(60))
            .inline(Duration::from_secs(60), usize::MAX);
        let started = Instant::now();
        let (slept, state) = scoped(state, || sleep(Duration::from_secs(30)));
        assert!(slept.is_err(), "an inline run never sleeps");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            state.unwrap().stop,
            Some(StopReason::SliceEnded(SliceEnd::Blocking))
        );
        assert!(
            leave_inline().is_ok(),
            "outside a run there is nothing to leave"
        );
    }

    #[test]
    fn the_sandbox_limits_end_an_inline_run_before_its_slice() {
        let state = RunState::new(10, Duration::from_secs(60)).inline(Duration::ZERO, usize::MAX);
        let (_, state) = scoped(state, || on_progress(DEADLINE_CHECK_INTERVAL));
        assert_eq!(state.unwrap().stop, Some(StopReason::Operations));
    }

    #[test]
    fn sleep_stops_at_the_deadline() {
        let state = RunState::new(u64::MAX, Duration::from_millis(50));
        let started = Instant::now();
        let (result, state) = scoped(state, || sleep(Duration::from_secs(30)));
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(state.unwrap().stop, Some(StopReason::Timeout));
    }
}
