//! The failed-login limiter: after too many failures within a window, further attempts for
//! the same key are refused until the oldest failure leaves the window.
//!
//! An attempt is counted as a failure *before* its password is checked, in the same lock
//! as the check ([`LoginRateLimiter::begin`]), so parallel attempts cannot all pass the
//! check while the first ones are still hashing; a login that succeeds takes its count
//! back. Three keys bound three things, each with its own allowance:
//! - the (username, address) pair: one guesser at one account, `max_failures`;
//! - the address: one guesser spraying many accounts, [`ADDRESS_FACTOR`] × that;
//! - the username, from anywhere: a spread-out guesser at one account,
//!   [`USERNAME_FACTOR`] × that. A flood from one address is stopped by the first two
//!   keys long before it fills this one, so it cannot lock the user out elsewhere.
//!
//! It lives in memory and in this process only: a restart forgets it, and each node of a
//! cluster counts on its own, which still bounds guessing to a few attempts per window and
//! node. Nothing runs in the background: old failures are dropped when their key is next
//! looked at, and the number of keys is capped.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An address may fail this many times the per-pair allowance (across usernames).
pub const ADDRESS_FACTOR: usize = 4;

/// A username may fail this many times the per-pair allowance (across addresses).
pub const USERNAME_FACTOR: usize = 10;

/// The keys one login attempt counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginKeys {
    user: String,
    pair: String,
    address: String,
}

impl LoginKeys {
    /// The keys of an attempt at `username` from `address`. Usernames are lowercase, so
    /// `Ada` counts against `ada`; no more than a username's length goes into a key, so
    /// made-up names cannot make keys large.
    pub fn new(username: &str, address: &str) -> Self {
        let user: String = username
            .to_lowercase()
            .chars()
            .take(picloud_shared::Username::MAX_LEN)
            .collect();
        Self {
            pair: format!("pair:{user}@{address}"),
            user: format!("user:{user}"),
            address: format!("addr:{address}"),
        }
    }
}

/// Counts failed logins per key over a sliding window.
#[derive(Debug)]
pub struct LoginRateLimiter {
    max_failures: usize,
    window: Duration,
    capacity: usize,
    keys: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// An attempt [`LoginRateLimiter::begin`] let through, already counted as a failure.
#[derive(Debug)]
#[must_use = "a successful login must be reported with `succeeded`"]
pub struct Attempt {
    keys: LoginKeys,
    at: Instant,
}

impl LoginRateLimiter {
    /// Most keys remembered at once; past it the key whose last failure is oldest is
    /// forgotten, so a flood of made-up usernames cannot grow memory without bound.
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// A limiter allowing `max_failures` failures per (username, address) within
    /// `window`, and the factors above per address and per username.
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

    /// Lets an attempt through and counts it as a failure, or `Err(retry_after)` when one
    /// of its keys has used up its allowance: the longest time until all of them allow
    /// another. Check and count happen under one lock.
    pub fn begin(&self, keys: &LoginKeys) -> Result<Attempt, Duration> {
        self.begin_at(keys, Instant::now())
    }

    /// The attempt succeeded: its count is taken back, and the failures of its
    /// (username, address) pair are forgotten.
    pub fn succeeded(&self, attempt: Attempt) {
        let mut map = self.lock();
        map.remove(&attempt.keys.pair);
        Self::take_back(&mut map, &attempt);
    }

    /// The attempt was never decided (the server was busy or its database down): its
    /// count is taken back, as if it had not been made.
    pub fn undecided(&self, attempt: Attempt) {
        Self::take_back(&mut self.lock(), &attempt);
    }

    fn take_back(map: &mut HashMap<String, VecDeque<Instant>>, attempt: &Attempt) {
        for key in [
            &attempt.keys.pair,
            &attempt.keys.user,
            &attempt.keys.address,
        ] {
            if let Some(failures) = map.get_mut(key.as_str()) {
                if let Some(position) = failures.iter().rposition(|&at| at == attempt.at) {
                    failures.remove(position);
                }
                if failures.is_empty() {
                    map.remove(key.as_str());
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        // A panic while holding the lock cannot leave the map half-changed in a way that
        // matters (at worst one failure is missing), so a poisoned lock is used as is.
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn allowances<'k>(&self, keys: &'k LoginKeys) -> [(&'k str, usize); 3] {
        [
            (keys.pair.as_str(), self.max_failures),
            (
                keys.address.as_str(),
                self.max_failures.saturating_mul(ADDRESS_FACTOR),
            ),
            (
                keys.user.as_str(),
                self.max_failures.saturating_mul(USERNAME_FACTOR),
            ),
        ]
    }

    fn begin_at(&self, keys: &LoginKeys, now: Instant) -> Result<Attempt, Duration> {
        let allowances = self.allowances(keys);
        let mut map = self.lock();
        let mut wait = None::<Duration>;
        for (key, allowed) in allowances {
            let Some(failures) = map.get_mut(key) else {
                continue;
            };
            self.expire(failures, now);
            if failures.len() >= allowed
                && let Some(oldest) = failures.front()
            {
                let until = (*oldest + self.window).saturating_duration_since(now);
                wait = Some(wait.map_or(until, |w| w.max(until)));
            }
        }
        if let Some(wait) = wait {
            return Err(wait);
        }
        for (key, allowed) in allowances {
            if !map.contains_key(key) && map.len() >= self.capacity {
                self.make_room(&mut map, now);
            }
            let failures = map.entry(key.to_owned()).or_default();
            failures.push_back(now);
            // Only the newest `allowed` matter to the decision; older ones would only
            // take memory.
            while failures.len() > allowed {
                failures.pop_front();
            }
        }
        Ok(Attempt {
            keys: keys.clone(),
            at: now,
        })
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

    fn keys(user: &str, address: &str) -> LoginKeys {
        LoginKeys::new(user, address)
    }

    #[test]
    fn refuses_after_the_last_allowed_failure_until_the_oldest_leaves_the_window() {
        let limiter = LoginRateLimiter::new(3, WINDOW);
        let start = Instant::now();
        let ada = keys("ada", "10.0.0.1");
        for i in 0..3 {
            assert!(
                limiter
                    .begin_at(&ada, start + Duration::from_secs(i * 10))
                    .is_ok(),
                "attempt {i}"
            );
        }
        let later = start + Duration::from_secs(25);
        assert_eq!(
            limiter.begin_at(&ada, later).unwrap_err(),
            Duration::from_secs(35)
        );
        // Other users from the same address are unaffected.
        assert!(limiter.begin_at(&keys("bob", "10.0.0.1"), later).is_ok());
        // The oldest failure leaves the window: one more attempt is allowed.
        assert!(limiter.begin_at(&ada, start + WINDOW).is_ok());
    }

    #[test]
    fn an_attempt_is_counted_before_it_is_decided() {
        let limiter = LoginRateLimiter::new(2, WINDOW);
        let now = Instant::now();
        let ada = keys("ada", "10.0.0.1");
        // Two attempts in flight at once: a third is refused before either is decided.
        let first = limiter.begin_at(&ada, now).unwrap();
        let _second = limiter.begin_at(&ada, now).unwrap();
        assert!(limiter.begin_at(&ada, now).is_err());
        // A success takes its count back and forgets the pair's failures.
        limiter.succeeded(first);
        assert!(limiter.begin_at(&ada, now).is_ok());
    }

    #[test]
    fn a_flood_from_one_address_does_not_lock_the_user_out_elsewhere() {
        let limiter = LoginRateLimiter::new(5, WINDOW);
        let now = Instant::now();
        let attacker = keys("admin", "203.0.113.9");
        let refused = (0..1000)
            .filter(|_| limiter.begin_at(&attacker, now).is_err())
            .count();
        assert_eq!(refused, 995, "the pair allows five");
        assert!(
            limiter
                .begin_at(&keys("admin", "198.51.100.7"), now)
                .is_ok()
        );
    }

    #[test]
    fn an_address_spraying_usernames_is_stopped() {
        let limiter = LoginRateLimiter::new(5, WINDOW);
        let now = Instant::now();
        let allowed = (0..1000)
            .filter(|i| {
                limiter
                    .begin_at(&keys(&format!("user{i}"), "203.0.113.9"), now)
                    .is_ok()
            })
            .count();
        assert_eq!(allowed, 5 * ADDRESS_FACTOR);
    }

    #[test]
    fn a_username_guessed_from_everywhere_is_bounded() {
        let limiter = LoginRateLimiter::new(5, WINDOW);
        let now = Instant::now();
        let allowed = (0..1000)
            .filter(|i| {
                limiter
                    .begin_at(
                        &keys("admin", &format!("10.0.{}.{}", i / 256, i % 256)),
                        now,
                    )
                    .is_ok()
            })
            .count();
        assert_eq!(allowed, 5 * USERNAME_FACTOR);
    }

    #[test]
    fn usernames_count_case_insensitively() {
        assert_eq!(keys("Ada", "x"), keys("ada", "x"));
    }

    #[test]
    fn memory_stays_bounded_by_evicting_the_stalest_key() {
        let limiter = LoginRateLimiter::with_capacity(1, WINDOW, 6);
        let start = Instant::now();
        let _ = limiter.begin_at(&keys("a", "1"), start);
        let _ = limiter.begin_at(&keys("b", "2"), start + Duration::from_secs(1));
        let _ = limiter.begin_at(&keys("c", "3"), start + Duration::from_secs(2));
        let now = start + Duration::from_secs(3);
        assert_eq!(limiter.lock().len(), 6);
        assert!(
            limiter.begin_at(&keys("a", "1"), now).is_ok(),
            "a was evicted"
        );
        assert!(limiter.begin_at(&keys("c", "3"), now).is_err());
    }
}
