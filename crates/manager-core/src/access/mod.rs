//! Who may do what: users, API tokens and login sessions, app memberships, the
//! authenticator that turns a bearer token into a principal, password and token hashing,
//! the first start's instance admin, the login limiter, and the admin routes of all of them.

#[cfg(feature = "admin-api")]
pub(crate) mod auth;
pub mod authenticator;
pub mod bootstrap;
pub(crate) mod login_limiter;
pub mod members;
pub mod secrets;
pub mod tokens;
pub mod users;

#[cfg(feature = "admin-api")]
pub use auth::{AppRoleView, LoginRequest, LoginResponse, MeView, SessionUser};
pub use authenticator::TokenAuthenticator;
pub use bootstrap::{Bootstrap, BootstrapError, ensure_instance_admin};
pub use login_limiter::LoginRateLimiter;
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
    /// Counts failed logins per username and client address.
    pub login_limiter: Arc<LoginRateLimiter>,
    /// How long a login session lasts.
    pub session_ttl: Duration,
}

impl std::fmt::Debug for AccessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessState")
            .field("session_ttl", &self.session_ttl)
            .finish_non_exhaustive()
    }
}
