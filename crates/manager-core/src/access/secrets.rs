//! Secrets: password hashing (argon2id) and bearer tokens (random, stored as SHA-256).
//!
//! Passwords are low-entropy, so they get a slow, memory-hard hash. Tokens are 32 random
//! bytes from the OS, so a fast hash is enough: nobody can guess a preimage, and a fast
//! hash keeps the lookup on every authenticated request cheap.

use std::fmt;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use rand::rngs::OsRng;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Fewest characters a password may have.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Most bytes a password may have: argon2 accepts more, but nobody types more, and a cap
/// keeps a request from making the server hash megabytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

pub use picloud_shared::TOKEN_MARKER;

/// Characters of a token's secret: the marker plus 32 bytes in unpadded base64url.
pub const TOKEN_LEN: usize = TOKEN_MARKER.len() + 43;

/// Characters of a token's secret kept in the clear as its display prefix (`pc_` + 8).
pub const TOKEN_PREFIX_LEN: usize = TOKEN_MARKER.len() + 8;

// OWASP's minimum recommendation for argon2id: 19 MiB, two passes, one lane. About
// 50 ms on a Raspberry Pi 4 core, which is slow for an attacker and fine for a login.
const ARGON2_MEMORY_KIB: u32 = 19_456;
const ARGON2_ITERATIONS: u32 = 2;
const ARGON2_LANES: u32 = 1;

/// A password refused by the policy, or a hashing failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Shorter than [`MIN_PASSWORD_CHARS`].
    #[error("password must be at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    /// Longer than [`MAX_PASSWORD_BYTES`].
    #[error("password must be at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// The hasher failed (it does not for valid parameters; reported rather than panicking).
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

fn argon2() -> Argon2<'static> {
    // The parameters are constants within argon2's accepted ranges; the fallback to the
    // library defaults (which are the same OWASP values) can never be taken.
    let params =
        Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_LANES, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks a new password against the length policy.
pub fn check_password_policy(password: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    Ok(())
}

/// Hashes a new password with argon2id and a fresh random salt, after checking the
/// policy. Returns the PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`), which carries its
/// own parameters, so they can be raised later without breaking stored hashes.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    check_password_policy(password)?;
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

/// Whether `password` matches the stored PHC string. A malformed hash or an over-long
/// password is simply a mismatch. The comparison inside argon2 is constant-time.
pub fn verify_password(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    argon2()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Spends the time of one password verification and fails. Call it when a login names
/// no user, so the answer takes as long as a wrong password and does not reveal which
/// usernames exist.
pub fn verify_against_nothing(password: &str) -> bool {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("not-a-real-password").ok());
    if let Some(dummy) = dummy {
        let _ = verify_password(password, dummy);
    }
    false
}

/// A freshly generated bearer token. The secret is shown to its owner once and never
/// stored; only its hash and display prefix are.
// No `PartialEq`: comparing secrets must go through `hashes_equal`.
#[derive(Clone)]
pub struct GeneratedToken {
    /// The full secret, `pc_` + 43 base64url characters.
    pub secret: String,
    /// SHA-256 of the secret: what the database stores and looks tokens up by.
    pub hash: [u8; 32],
    /// The secret's first [`TOKEN_PREFIX_LEN`] characters, to recognise it in a list.
    pub prefix: String,
}

impl fmt::Debug for GeneratedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret must never reach a log line, even through a debug print.
        f.debug_struct("GeneratedToken")
            .field("secret", &"<redacted>")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Generates a token from 32 bytes of the OS random number generator.
pub fn generate_token() -> GeneratedToken {
    let mut bytes = [0_u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let secret = format!("{TOKEN_MARKER}{}", URL_SAFE_NO_PAD.encode(bytes));
    let prefix = secret.chars().take(TOKEN_PREFIX_LEN).collect();
    GeneratedToken {
        hash: hash_token(&secret),
        secret,
        prefix,
    }
}

/// SHA-256 of a token's secret.
pub fn hash_token(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `candidate` has the shape of a token this server issues: `pc_` and 43
/// base64url characters. Lets obviously malformed credentials be refused without a lookup.
pub fn is_well_formed_token(candidate: &str) -> bool {
    candidate.len() == TOKEN_LEN
        && candidate.starts_with(TOKEN_MARKER)
        && candidate[TOKEN_MARKER.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Compares two token hashes in constant time, so the time taken says nothing about how
/// many leading bytes matched.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// A random password for the first instance admin: 24 base64url characters (18 random
/// bytes, 144 bits), safe to paste into a shell or a URL.
pub fn generate_password() -> String {
    let mut bytes = [0_u8; 18];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Bounds how many password checks run at once. Each argon2 run holds 19 MiB and a core
/// for tens of milliseconds; unbounded, a login flood starts a blocking thread per request
/// (tokio allows hundreds) and takes the memory and every core with it. Past the bound an
/// attempt waits a short while for a slot, then is turned away as busy.
#[derive(Debug)]
pub struct PasswordChecks {
    slots: tokio::sync::Semaphore,
    wait: std::time::Duration,
}

/// No password-check slot came free in time: the server is busy (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks at once")]
pub struct PasswordChecksBusy;

impl PasswordChecks {
    /// How long an attempt waits for a slot before it is turned away.
    pub const DEFAULT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

    /// At most `concurrent` checks at once, each waiting up to `wait` for a slot.
    pub fn new(concurrent: usize, wait: std::time::Duration) -> Self {
        Self {
            slots: tokio::sync::Semaphore::new(concurrent.max(1)),
            wait,
        }
    }

    /// One check per core, at most four (76 MiB of argon2 memory at once).
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self::new(cores.min(4), Self::DEFAULT_WAIT)
    }

    /// Runs `check` on the blocking pool once a slot is free.
    pub async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordChecksBusy> {
        let _slot = tokio::time::timeout(self.wait, self.slots.acquire())
            .await
            .map_err(|_| PasswordChecksBusy)?
            .map_err(|_| PasswordChecksBusy)?;
        match tokio::task::spawn_blocking(check).await {
            Ok(checked) => Ok(checked),
            // A check that panicked is a fault, not a busy server: it stays a panic (the
            // server's panic layer answers 500).
            Err(err) => match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_cancelled) => Err(PasswordChecksBusy),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_password_verifies_and_a_wrong_one_does_not() {
        let hash = hash_password("correct horse").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horsf", &hash));
        assert!(!verify_password("", &hash));
    }

    #[test]
    fn the_same_password_hashes_differently_each_time() {
        let a = hash_password("same password").unwrap();
        let b = hash_password("same password").unwrap();
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify_password("same password", &a));
        assert!(verify_password("same password", &b));
    }

    #[test]
    fn a_malformed_stored_hash_is_a_mismatch() {
        assert!(!verify_password("whatever1", "not a phc string"));
        assert!(!verify_password("whatever1", ""));
    }

    #[test]
    fn the_password_policy_bounds_the_length() {
        assert_eq!(hash_password("short"), Err(PasswordError::TooShort));
        assert_eq!(
            check_password_policy("1234567"),
            Err(PasswordError::TooShort)
        );
        assert_eq!(check_password_policy("12345678"), Ok(()));
        // Eight characters, more bytes: the minimum counts characters.
        assert_eq!(
            check_password_policy("ééééééé"),
            Err(PasswordError::TooShort)
        );
        assert_eq!(check_password_policy(&"x".repeat(1024)), Ok(()));
        assert_eq!(
            check_password_policy(&"x".repeat(1025)),
            Err(PasswordError::TooLong)
        );
        assert_eq!(
            PasswordError::TooShort.to_string(),
            "password must be at least 8 characters"
        );
        assert!(!verify_password(
            &"x".repeat(1025),
            &hash_password("12345678").unwrap()
        ));
    }

    #[test]
    fn verifying_against_nothing_always_fails() {
        assert!(!verify_against_nothing("not-a-real-password"));
        assert!(!verify_against_nothing("anything"));
    }

    #[test]
    fn tokens_have_the_documented_shape() {
        let token = generate_token();
        assert_eq!(token.secret.len(), TOKEN_LEN);
        assert_eq!(TOKEN_LEN, 46);
        assert!(token.secret.starts_with("pc_"));
        assert!(is_well_formed_token(&token.secret), "{}", token.secret);
        assert_eq!(token.prefix.len(), 11);
        assert!(token.secret.starts_with(&token.prefix));
        let decoded = URL_SAFE_NO_PAD.decode(&token.secret[3..]).unwrap();
        assert_eq!(decoded.len(), 32);
    }

    #[test]
    fn a_token_is_stored_as_the_sha256_of_its_secret() {
        let token = generate_token();
        let expected: [u8; 32] = Sha256::digest(token.secret.as_bytes()).into();
        assert_eq!(token.hash, expected);
        assert_eq!(hash_token(&token.secret), token.hash);
        // Known vector: SHA-256("abc").
        assert_eq!(
            hash_token("abc")[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "sha-256 of 'abc' starts ba7816bf"
        );
    }

    #[test]
    fn tokens_are_unique() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn malformed_tokens_are_recognised() {
        let good = generate_token().secret;
        assert!(!is_well_formed_token(""));
        assert!(!is_well_formed_token(&good[..45]));
        assert!(!is_well_formed_token(&format!("{good}x")));
        assert!(!is_well_formed_token(&good.replacen("pc_", "xx_", 1)));
        let with_bad_char = format!("{}+{}", &good[..10], &good[11..]);
        assert!(!is_well_formed_token(&with_bad_char));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let token = generate_token();
        let shown = format!("{token:?}");
        assert!(!shown.contains(&token.secret), "{shown}");
        assert!(shown.contains(&token.prefix), "{shown}");
    }

    #[test]
    fn hash_equality_is_exact() {
        let a = hash_token("one");
        let mut b = a;
        assert!(hashes_equal(&a, &b));
        b[31] ^= 1;
        assert!(!hashes_equal(&a, &b));
    }

    #[test]
    fn generated_passwords_are_long_url_safe_and_pass_the_policy() {
        let password = generate_password();
        assert_eq!(password.len(), 24);
        assert!(
            password
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(check_password_policy(&password), Ok(()));
        assert_ne!(password, generate_password());
    }

    #[tokio::test]
    async fn password_checks_past_the_bound_are_turned_away() {
        let checks =
            std::sync::Arc::new(PasswordChecks::new(1, std::time::Duration::from_millis(50)));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let busy = std::sync::Arc::clone(&checks);
        let first = tokio::spawn(async move {
            busy.run(move || {
                let _ = started.send(());
                held.recv().ok();
            })
            .await
        });
        running.await.unwrap();
        assert_eq!(checks.run(|| ()).await, Err(PasswordChecksBusy));
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(()));
        assert_eq!(checks.run(|| 7).await, Ok(7), "the slot is free again");
    }
}
