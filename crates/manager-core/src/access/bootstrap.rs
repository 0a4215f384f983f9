//! The first start: an instance with no users gets an instance admin, so someone can log in.

use std::fmt;

use picloud_shared::Username;

use crate::access::secrets::{PasswordError, generate_password, hash_password};
use crate::{
    access::{NewUser, UserRepository},
    repository::RepoError,
};

/// The first admin's username.
pub const ADMIN_USERNAME: &str = "admin";

/// What [`ensure_instance_admin`] did.
#[derive(Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// The database had no users; this instance admin was created.
    Created {
        /// Their username (`admin`).
        username: Username,
        /// The generated password when none was given: print it once, it is stored only
        /// as a hash.
        generated_password: Option<String>,
    },
    /// Users already existed; nothing was done.
    AlreadyInitialised,
}

impl fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The generated password is printed once, deliberately, by the binary; a debug
        // print of this value must not leak it a second time.
        match self {
            Self::Created {
                username,
                generated_password,
            } => f
                .debug_struct("Created")
                .field("username", username)
                .field(
                    "generated_password",
                    &generated_password.as_ref().map(|_| "<redacted>"),
                )
                .finish(),
            Self::AlreadyInitialised => f.write_str("AlreadyInitialised"),
        }
    }
}

/// Why the first admin could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The given password does not meet the password policy.
    #[error("PICLOUD_ADMIN_PASSWORD is not usable: {0}")]
    Password(#[source] PasswordError),
    /// The user store failed.
    #[error("could not create the first admin")]
    Repo(#[source] RepoError),
}

/// Creates the instance admin `admin` when there are no users at all. The password is
/// `password` (from `PICLOUD_ADMIN_PASSWORD`, read by the binary) or, when absent,
/// generated and returned so the binary can print it once. Safe when several nodes start
/// at once: exactly one of them creates the admin.
#[tracing::instrument(skip_all)]
pub async fn ensure_instance_admin(
    users: &dyn UserRepository,
    password: Option<String>,
) -> Result<Bootstrap, BootstrapError> {
    // Hashing is deliberately slow; skip it on every start but the first.
    let existing = users.list(1, None).await.map_err(BootstrapError::Repo)?;
    if !existing.is_empty() {
        return Ok(Bootstrap::AlreadyInitialised);
    }
    let (password, generated) = match password {
        Some(given) => (given, false),
        None => (generate_password(), true),
    };
    let password_hash = hash_password(&password).map_err(BootstrapError::Password)?;
    let username = Username::parse(ADMIN_USERNAME).map_err(|e| {
        BootstrapError::Repo(RepoError::Internal(
            format!("the built-in admin username is not valid: {e}").into(),
        ))
    })?;
    let created = users
        .create_if_none(NewUser {
            username: username.clone(),
            password_hash,
            instance_admin: true,
        })
        .await
        .map_err(BootstrapError::Repo)?;
    Ok(match created {
        Some(_) => Bootstrap::Created {
            username,
            generated_password: generated.then_some(password),
        },
        None => Bootstrap::AlreadyInitialised,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::secrets::verify_password;
    use crate::memory::InMemoryRepositories;

    #[tokio::test]
    async fn an_empty_store_gets_an_admin_with_the_given_password() {
        let repos = InMemoryRepositories::new();
        let outcome = ensure_instance_admin(repos.users.as_ref(), Some("s3cret-pass".to_owned()))
            .await
            .unwrap();
        let Bootstrap::Created {
            username,
            generated_password,
        } = outcome
        else {
            panic!("expected Created, got {outcome:?}");
        };
        assert_eq!(username.as_str(), "admin");
        assert_eq!(generated_password, None);
        let (user, hash) = repos.users.credentials(&username).await.unwrap().unwrap();
        assert!(user.instance_admin);
        assert!(verify_password("s3cret-pass", &hash));
        assert!(!hash.contains("s3cret-pass"));
    }

    #[tokio::test]
    async fn without_a_password_one_is_generated_and_returned_once() {
        let repos = InMemoryRepositories::new();
        let outcome = ensure_instance_admin(repos.users.as_ref(), None)
            .await
            .unwrap();
        let Bootstrap::Created {
            generated_password: Some(password),
            username,
        } = &outcome
        else {
            panic!("expected a generated password, got {outcome:?}");
        };
        assert!(password.len() >= 20, "{}", password.len());
        let (_, hash) = repos.users.credentials(username).await.unwrap().unwrap();
        assert!(verify_password(password, &hash));
        assert!(!format!("{outcome:?}").contains(password.as_str()));

        let again = ensure_instance_admin(repos.users.as_ref(), None)
            .await
            .unwrap();
        assert_eq!(again, Bootstrap::AlreadyInitialised);
        assert_eq!(repos.users.list(10, None).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_too_short_password_is_refused_and_nothing_is_created() {
        let repos = InMemoryRepositories::new();
        let err = ensure_instance_admin(repos.users.as_ref(), Some("short".to_owned()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, BootstrapError::Password(PasswordError::TooShort)),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "PICLOUD_ADMIN_PASSWORD is not usable: password must be at least 8 characters"
        );
        assert_eq!(repos.users.list(10, None).await.unwrap().len(), 0);
    }

    #[tokio::test]
    async fn existing_users_mean_no_admin_is_created() {
        let repos = InMemoryRepositories::new();
        repos
            .users
            .create(NewUser {
                username: Username::parse("ada").unwrap(),
                password_hash: hash_password("ada's password").unwrap(),
                instance_admin: false,
            })
            .await
            .unwrap();
        let outcome = ensure_instance_admin(repos.users.as_ref(), Some("whatever1".to_owned()))
            .await
            .unwrap();
        assert_eq!(outcome, Bootstrap::AlreadyInitialised);
        let admin = Username::parse("admin").unwrap();
        assert_eq!(repos.users.credentials(&admin).await.unwrap(), None);
    }
}
