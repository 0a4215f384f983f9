//! Who may do what: users, API tokens and login sessions, app memberships, the
//! authenticator that turns a bearer token into a principal, password and token hashing,
//! the first start's instance admin, the login limiter, and the admin routes of all of them.

pub(crate) mod auth;
pub mod authenticator;
pub mod bootstrap;
pub(crate) mod login_limiter;
pub mod members;
pub mod secrets;
pub mod tokens;
pub mod users;

pub use auth::{AppRoleView, LoginRequest, LoginResponse, MeView, SessionUser};
pub use authenticator::TokenAuthenticator;
pub use bootstrap::{Bootstrap, BootstrapError, ensure_instance_admin};
pub use login_limiter::LoginRateLimiter;
pub use members::*;
pub use tokens::*;
pub use users::*;
