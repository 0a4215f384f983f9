//! Authentication for the admin API: the router-level guard every protected route sits
//! behind, the [`Auth`] extractor handlers take the principal from, and `/auth`: log in,
//! log out, who am I.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use picloud_shared::{
    AccessDenied, AppId, AppRole, Capability, Credential, CredentialKind, ErrorCode, ErrorEnvelope,
    Principal, Scope, ServiceContext, TokenId, UserId, Username, bearer_token,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AccessState;
use crate::access::{IssuedToken, LoginKeys, TokenRequest, User, client_addr, issue, secrets};
use crate::http::AdminState;
use crate::http::error::ApiError;
use crate::http::extract::Json;

/// Routes anyone may call: logging in.
pub(crate) fn public_routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(login))
}

/// Routes behind the guard.
pub(crate) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(logout))
        .routes(routes!(me))
}

/// The router-level guard: every protected route runs only with an authenticated
/// principal, which it leaves in the request for [`Auth`]. A handler that forgot to ask for
/// `Auth` is therefore still never reached anonymously.
pub(crate) async fn require_principal(
    State(state): State<AccessState>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticate(&state, request.headers()).await {
        Ok(principal) => {
            request.extensions_mut().insert(Arc::new(principal));
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
}

async fn authenticate(state: &AccessState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token)
        .ok_or_else(ApiError::unauthorized)?;
    Ok(state.authenticator.authenticate(token).await?)
}

/// The authenticated principal of a request. Every permission check goes through
/// [`Auth::require`], so a refusal always answers the same way: 404 where the principal
/// cannot see the app, 403 naming the scope where it can.
#[derive(Debug, Clone)]
pub(crate) struct Auth(Arc<Principal>);

impl Deref for Auth {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl<S> FromRequestParts<S> for Auth
where
    AccessState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Arc<Principal>>() {
            return Ok(Self(principal.clone()));
        }
        // Outside the guard (it is the only way in today) the extractor still refuses
        // anonymous callers on its own.
        authenticate(&AccessState::from_ref(state), &parts.headers)
            .await
            .map(|p| Self(Arc::new(p)))
    }
}

impl Auth {
    /// Ok when the principal holds `capability`; otherwise `hidden()` (the caller's own
    /// not-found error) when it cannot see the app, or 403 naming the missing scope.
    pub(crate) fn require(
        &self,
        capability: Capability,
        hidden: impl FnOnce() -> ApiError,
    ) -> Result<(), ApiError> {
        self.authorize(&capability)
            .map_err(|denied| ApiError::denied(denied, hidden))
    }

    /// The context of a service call the admin API makes for this caller in `app`: the
    /// caller's own identity, depth 0 so the events it causes start at depth 1, and no
    /// causing execution.
    pub(crate) fn acting_in(&self, app: AppId) -> ServiceContext {
        ServiceContext {
            app_id: app,
            execution_id: None,
            depth: 0,
            run_as: Some((*self.0).clone()),
        }
    }

    /// Ok for an instance admin acting through an unrestricted credential with `app:admin`.
    pub(crate) fn require_instance_admin(&self) -> Result<(), ApiError> {
        self.authorize(&Capability::InstanceAdmin)
            .map_err(|denied| ApiError::forbidden(denied.to_string()))
    }

    /// Ok when the credential carries `scope` (for lists, which span apps).
    pub(crate) fn require_scope(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                AccessDenied::Forbidden { scope }.to_string(),
            ))
        }
    }

    /// Whether the principal sees every app: an instance admin whose credential is not
    /// limited to one.
    pub(crate) fn sees_every_app(&self) -> bool {
        self.instance_admin && self.app_restriction.is_none()
    }

    /// The apps the principal can see, when it does not see every app.
    pub(crate) fn visible_apps(&self) -> Vec<AppId> {
        match self.app_restriction {
            Some(only) if self.can_see(only) => vec![only],
            Some(_) => Vec::new(),
            None => {
                let mut apps: Vec<AppId> = self.roles.keys().copied().collect();
                apps.sort_unstable();
                apps
            }
        }
    }
}

/// The client's address, for rate limiting (see [`client_addr::client_address`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub String);

impl<S> FromRequestParts<S> for ClientAddr
where
    AccessState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let forwarded_for = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok());
        let state = AccessState::from_ref(state);
        Ok(Self(client_addr::client_address(
            peer,
            forwarded_for,
            &state.login.trusted_proxies,
        )))
    }
}

/// Body of `POST /api/admin/auth/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A user as a login or `me` shows them.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionUser {
    /// The user's id.
    pub id: UserId,
    /// Their username.
    pub username: Username,
    /// Whether they administer the instance.
    pub instance_admin: bool,
}

/// Answer of a successful login.
#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// The session's bearer token, for `Authorization: Bearer <token>`; shown only here.
    pub token: String,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
    /// Who logged in.
    pub user: SessionUser,
}

impl fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginResponse")
            .field("expires_at", &self.expires_at)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A user's role in one app.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppRoleView {
    /// The app.
    pub app_id: AppId,
    /// The role there.
    pub role: AppRole,
}

/// The principal a request runs as.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    /// The user behind the credential.
    pub user: SessionUser,
    /// A login session or an API token.
    pub credential: CredentialKind,
    /// The credential's id.
    pub token_id: TokenId,
    /// The scopes the credential carries.
    pub scopes: Vec<Scope>,
    /// The one app an API token is limited to, if it is.
    pub app_restriction: Option<AppId>,
    /// The user's roles, by app (an instance admin holds every role everywhere besides).
    pub roles: Vec<AppRoleView>,
}

/// Log in with a username and password to get a session token.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    security(()),
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in: the session token and who it is for", body = LoginResponse),
        (status = 400, description = "Malformed JSON", body = ErrorEnvelope),
        (status = 401, description = "Wrong username or password (`invalid_credentials`)", body = ErrorEnvelope),
        (status = 422, description = "The body does not fit", body = ErrorEnvelope),
        (status = 429, description = "Too many failed logins for this username from this address, from this address, or for this username (`too_many_attempts`)", body = ErrorEnvelope,
            headers(("retry-after" = u64, description = "Seconds until another attempt is allowed"))),
        (status = 503, description = "Database unavailable, or too many password checks at once (`overloaded`, with `Retry-After`)", body = ErrorEnvelope),
    )
)]
pub(crate) async fn login(
    State(state): State<AccessState>,
    ClientAddr(client): ClientAddr,
    Json(body): Json<LoginRequest>,
) -> Result<axum::Json<LoginResponse>, ApiError> {
    // Counted as a failure before the password is looked at, under the same lock as the
    // check: parallel guesses cannot all pass while the first are still hashing, and a
    // blocked guesser learns nothing more.
    let keys = LoginKeys::new(&body.username, &client);
    let attempt = state
        .login
        .limiter
        .begin(&keys)
        .map_err(ApiError::too_many_attempts)?;

    let verified = match verify(&state, body).await {
        Ok(verified) => verified,
        Err(err) => {
            state.login.limiter.undecided(attempt);
            return Err(err);
        }
    };
    let Some(user) = verified else {
        tracing::info!(client = %client, "login failed");
        return Err(ApiError::invalid_credentials());
    };
    state.login.limiter.succeeded(attempt);

    let ttl = TimeDelta::from_std(state.session_ttl).unwrap_or(TimeDelta::hours(12));
    let IssuedToken {
        secret,
        token: session,
    } = issue(
        state.tokens.as_ref(),
        TokenRequest {
            user_id: user.id,
            name: "login session".to_owned(),
            kind: CredentialKind::Session,
            scopes: Scope::ALL.into_iter().collect::<BTreeSet<_>>(),
            app_id: None,
            expires_at: Some(Utc::now() + ttl),
            parent_id: None,
        },
    )
    .await?;
    tracing::info!(
        user = %user.username,
        user_id = %user.id,
        token_id = %session.id,
        client = %client,
        "logged in"
    );
    Ok(axum::Json(LoginResponse {
        token: secret,
        expires_at: session.expires_at.unwrap_or_else(|| Utc::now() + ttl),
        user: SessionUser {
            id: user.id,
            username: user.username,
            instance_admin: user.instance_admin,
        },
    }))
}

/// The user a login names, when the password is theirs.
async fn verify(state: &AccessState, body: LoginRequest) -> Result<Option<User>, ApiError> {
    let found = match Username::parse(&body.username) {
        Ok(username) => state.users.repo().credentials(&username).await?,
        Err(_) => None,
    };
    let password = body.password;
    // argon2 takes tens of milliseconds of CPU and 19 MiB: off the async workers, and no
    // more at once than the machine has slots for. An unknown user costs the same time as
    // a wrong password, so the answer does not reveal which.
    state
        .login
        .password_checks
        .run(move || match found {
            Some((user, hash)) => secrets::verify_password(&password, &hash).then_some(user),
            None => {
                secrets::verify_against_nothing(&password);
                None
            }
        })
        .await
        .map_err(|busy| ApiError::overloaded(&busy))
}

/// Log out: the session used for this request stops working at once.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "auth",
    responses(
        (status = 204, description = "The session was revoked"),
        (status = 400, description = "The request used an API token, not a session (`not_a_session`)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn logout(
    State(state): State<AccessState>,
    auth: Auth,
) -> Result<StatusCode, ApiError> {
    let Credential::Token {
        kind: CredentialKind::Session,
        token_id,
    } = auth.credential
    else {
        return Err(ApiError::new(
            ErrorCode::NotASession,
            "this request used an API token; revoke it with DELETE /api/admin/tokens/{id}",
        ));
    };
    state.tokens.revoke(token_id, Utc::now()).await?;
    tracing::info!(user = %auth.username, %token_id, "logged out");
    Ok(StatusCode::NO_CONTENT)
}

/// Who the request runs as: the user, the credential, its scopes and the user's roles.
#[utoipa::path(
    get,
    path = "/auth/me",
    tag = "auth",
    responses(
        (status = 200, description = "The principal", body = MeView),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn me(auth: Auth) -> Result<axum::Json<MeView>, ApiError> {
    let Credential::Token {
        kind: credential,
        token_id,
    } = auth.credential
    else {
        // Admin requests carry a bearer token; a trigger's credential never reaches here.
        return Err(ApiError::unauthorized());
    };
    let mut roles: Vec<AppRoleView> = auth
        .roles
        .iter()
        .map(|(&app_id, &role)| AppRoleView { app_id, role })
        .collect();
    roles.sort_unstable_by_key(|r| r.app_id);
    Ok(axum::Json(MeView {
        user: SessionUser {
            id: auth.user_id,
            username: auth.username.clone(),
            instance_admin: auth.instance_admin,
        },
        credential,
        token_id,
        scopes: auth.scopes.iter().copied().collect(),
        app_restriction: auth.app_restriction,
        roles,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_bodies_never_print_the_password() {
        let body = LoginRequest {
            username: "ada".to_owned(),
            password: "hunter2hunter2".to_owned(),
        };
        let shown = format!("{body:?}");
        assert!(shown.contains("ada"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
