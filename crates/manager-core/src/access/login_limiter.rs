//! The failed-login limiter: after too many failures within a window, further attempts for
//! the same key (a username, a client address) are refused until the oldest failure leaves
//! the window.
//!
//! It lives in memory and in this process only: a restart forgets it, and each node of a
//! cluster counts on its own, which still bounds guessing to a few attempts per window and
//! node. Nothing runs in the background: old failures are dropped when their key is next
//! looked at, and the number of keys is capped.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts failed logins per key over a sliding window.
#[derive(Debug)]
pub struct LoginRateLimiter {
    max_failures: usize,
    window: Duration,
    capacity: usize,
    keys: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginRateLimiter {
    /// Most keys remembered at once; past it the key whose last failure is oldest is
    /// forgotten, so a flood of made-up usernames cannot grow memory without bound.
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// A limiter allowing `max_failures` failures per key within `window`.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self::with_capacity(max_failures, window, Self::DEFAULT_CAPACITY)
    }

    /// Like [`new`](Self::new), remembering at most `capacity` keys.
    pub fn with_capacity(max_failures: u32, window: Duration, capacity: usize) -> Self {
        Self {
            max_failures: usize::try_from(max_failures.max(1)).unwrap_or(usize::MAX),
            window,
            capacity: capacity.max(1),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` when any of `keys` has used up its failures: the longest time
    /// until one of them may try again.
    pub fn check(&self, keys: &[&str]) -> Result<(), Duration> {
        self.check_at(keys, Instant::now())
    }

    /// Counts one failure against each of `keys`.
    pub fn record_failure(&self, keys: &[&str]) {
        self.record_failure_at(keys, Instant::now());
    }

    /// Forgets the failures of `key` (after a successful login).
    pub fn clear(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        // A panic while holding the lock cannot leave the map half-changed in a way that
        // matters (at worst one failure is missing), so a poisoned lock is used as is.
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check_at(&self, keys: &[&str], now: Instant) -> Result<(), Duration> {
        let mut map = self.lock();
        let mut wait = None::<Duration>;
        for key in keys {
            let Some(failures) = map.get_mut(*key) else {
                continue;
            };
            self.expire(failures, now);
            if failures.is_empty() {
                map.remove(*key);
                continue;
            }
            if failures.len() >= self.max_failures
                && let Some(oldest) = failures.front()
            {
                let until = (*oldest + self.window).saturating_duration_since(now);
                wait = Some(wait.map_or(until, |w| w.max(until)));
            }
        }
        wait.map_or(Ok(()), Err)
    }

    fn record_failure_at(&self, keys: &[&str], now: Instant) {
        let mut map = self.lock();
        for key in keys {
            if !map.contains_key(*key) && map.len() >= self.capacity {
                self.make_room(&mut map, now);
            }
            let failures = map.entry((*key).to_owned()).or_default();
            self.expire(failures, now);
            failures.push_back(now);
            // Only the newest `max_failures` matter to the decision; older ones would only
            // take memory.
            while failures.len() > self.max_failures {
                failures.pop_front();
            }
        }
    }

    /// Drops failures that have left the window.
    fn expire(&self, failures: &mut VecDeque<Instant>, now: Instant) {
        while failures
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) >= self.window)
        {
            failures.pop_front();
        }
    }

    /// Frees at least one slot: expired keys first, else the key whose newest failure is
    /// oldest.
    fn make_room(&self, map: &mut HashMap<String, VecDeque<Instant>>, now: Instant) {
        map.retain(|_, failures| {
            failures
                .back()
                .is_some_and(|&at| now.saturating_duration_since(at) < self.window)
        });
        if map.len() < self.capacity {
            return;
        }
        let stalest = map
            .iter()
            .min_by_key(|(_, failures)| failures.back().copied())
            .map(|(key, _)| key.clone());
        if let Some(key) = stalest {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn refuses_after_the_last_allowed_failure_until_the_oldest_leaves_the_window() {
        let limiter = LoginRateLimiter::new(3, WINDOW);
        let start = Instant::now();
        for i in 0..3 {
            assert_eq!(
                limiter.check_at(&["user:ada"], start),
                Ok(()),
                "attempt {i}"
            );
            limiter.record_failure_at(&["user:ada"], start + Duration::from_secs(i * 10));
        }
        let later = start + Duration::from_secs(25);
        assert_eq!(
            limiter.check_at(&["user:ada"], later),
            Err(Duration::from_secs(35))
        );
        // Other keys are unaffected.
        assert_eq!(limiter.check_at(&["user:bob"], later), Ok(()));
        // The oldest failure leaves the window: one more attempt is allowed.
        assert_eq!(limiter.check_at(&["user:ada"], start + WINDOW), Ok(()));
    }

    #[test]
    fn the_longest_wait_of_all_keys_is_reported() {
        let limiter = LoginRateLimiter::new(1, WINDOW);
        let start = Instant::now();
        limiter.record_failure_at(&["user:ada"], start);
        limiter.record_failure_at(&["addr:10.0.0.1"], start + Duration::from_secs(30));
        let now = start + Duration::from_secs(40);
        assert_eq!(
            limiter.check_at(&["user:ada", "addr:10.0.0.1"], now),
            Err(Duration::from_secs(50))
        );
        assert_eq!(
            limiter.check_at(&["user:ada"], now),
            Err(Duration::from_secs(20))
        );
    }

    #[test]
    fn clearing_a_key_forgets_its_failures() {
        let limiter = LoginRateLimiter::new(1, WINDOW);
        let now = Instant::now();
        limiter.record_failure_at(&["user:ada", "addr:x"], now);
        assert!(limiter.check_at(&["user:ada"], now).is_err());
        limiter.clear("user:ada");
        assert_eq!(limiter.check_at(&["user:ada"], now), Ok(()));
        assert!(limiter.check_at(&["addr:x"], now).is_err());
    }

    #[test]
    fn memory_stays_bounded_by_evicting_the_stalest_key() {
        let limiter = LoginRateLimiter::with_capacity(1, WINDOW, 2);
        let start = Instant::now();
        limiter.record_failure_at(&["a"], start);
        limiter.record_failure_at(&["b"], start + Duration::from_secs(1));
        limiter.record_failure_at(&["c"], start + Duration::from_secs(2));
        let now = start + Duration::from_secs(3);
        assert_eq!(limiter.lock().len(), 2);
        assert_eq!(limiter.check_at(&["a"], now), Ok(()), "a was evicted");
        assert!(limiter.check_at(&["b"], now).is_err());
        assert!(limiter.check_at(&["c"], now).is_err());
    }

    #[test]
    fn expired_keys_are_evicted_before_live_ones() {
        let limiter = LoginRateLimiter::with_capacity(1, WINDOW, 2);
        let start = Instant::now();
        limiter.record_failure_at(&["old"], start);
        limiter.record_failure_at(&["live"], start + WINDOW);
        limiter.record_failure_at(&["new"], start + WINDOW + Duration::from_secs(1));
        let now = start + WINDOW + Duration::from_secs(2);
        assert!(limiter.check_at(&["live"], now).is_err());
        assert!(limiter.check_at(&["new"], now).is_err());
    }
}
