//! Who may do what: users, API tokens and login sessions, app memberships, the
//! authenticator that turns a bearer token into a principal, password and token hashing,
//! the first start's instance admin, the login limiter, and the admin routes of all of them.

#[cfg(feature = "admin-api")]
pub(crate) mod auth;
pub mod authenticator;
pub mod bootstrap;
pub mod client_addr;
pub(crate) mod login_limiter;
pub mod members;
pub mod secrets;
pub mod tokens;
pub mod users;

#[cfg(feature = "admin-api")]
pub use auth::{AppRoleView, LoginRequest, LoginResponse, MeView, SessionUser};
pub use authenticator::TokenAuthenticator;
pub use bootstrap::{Bootstrap, BootstrapError, ensure_instance_admin};
pub use client_addr::TrustedProxies;
pub use login_limiter::{ADDRESS_FACTOR, LoginKeys, LoginRateLimiter, USERNAME_FACTOR};
pub use members::*;
pub use tokens::*;
pub use users::*;

use std::sync::Arc;
use std::time::Duration;

use picloud_shared::Authenticator;

use crate::apps::AppRepository;

/// What the access routes (login, users, tokens, members) and the authenticating guard
/// work with.
#[derive(Clone)]
pub struct AccessState {
    /// Users, changed by their rules.
    pub users: UserService,
    /// Login sessions and API tokens.
    pub tokens: Arc<dyn TokenRepository>,
    /// Who belongs to which app, changed by its rule.
    pub memberships: MembershipService,
    /// Apps, to find the one a membership or token names.
    pub apps: Arc<dyn AppRepository>,
    /// Turns the bearer token of every protected request into its principal.
    pub authenticator: Arc<dyn Authenticator>,
    /// What stands between a login flood and the server.
    pub login: Arc<LoginDefences>,
    /// How long a login session lasts.
    pub session_ttl: Duration,
}

/// What stands between a login flood and the server: the failure limiter, the bound on
/// concurrent password checks, and whose `X-Forwarded-For` names the client.
#[derive(Debug)]
pub struct LoginDefences {
    /// Counts failed logins per (username, address), address and username.
    pub limiter: LoginRateLimiter,
    /// Bounds the argon2 runs logins start.
    pub password_checks: secrets::PasswordChecks,
    /// The reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
}

impl LoginDefences {
    /// The defences `config` asks for, with password checks bounded for this machine.
    pub fn from_config(config: &crate::ManagerConfig) -> Self {
        Self {
            limiter: LoginRateLimiter::new(config.login_max_failures, config.login_window),
            password_checks: secrets::PasswordChecks::for_this_machine(),
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }
}

impl std::fmt::Debug for AccessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessState")
            .field("session_ttl", &self.session_ttl)
            .finish_non_exhaustive()
    }
}
