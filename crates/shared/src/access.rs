//! Access control: the seven token scopes, per-app roles, the capabilities every operation
//! checks, and the principal an operation runs as.
//!
//! A principal may do something when three things agree: its **role** allows the
//! capability in that app (or it is an instance admin), its token carries the capability's
//! **scope** (a login session carries all seven), and the token is not **limited** to a
//! different app.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{AppId, TokenId, TriggerId, UserId, Username};

/// A token scope. There are exactly seven; every capability maps onto one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Scope {
    /// Read scripts and their execution history.
    #[serde(rename = "script:read")]
    ScriptRead,
    /// Create, change and delete scripts.
    #[serde(rename = "script:write")]
    ScriptWrite,
    /// Call scripts that require a token.
    #[serde(rename = "script:execute")]
    ScriptExecute,
    /// Read an app's data: KV entries, files.
    #[serde(rename = "data:read")]
    DataRead,
    /// Change an app's data and send events: KV, files, pub/sub, queues.
    #[serde(rename = "data:write")]
    DataWrite,
    /// Manage triggers and dead letters.
    #[serde(rename = "triggers:manage")]
    TriggersManage,
    /// Administer an app (rename, delete, members) or, for instance admins, the instance
    /// (apps, users).
    #[serde(rename = "app:admin")]
    AppAdmin,
}

impl Scope {
    /// All seven scopes.
    pub const ALL: [Self; 7] = [
        Self::ScriptRead,
        Self::ScriptWrite,
        Self::ScriptExecute,
        Self::DataRead,
        Self::DataWrite,
        Self::TriggersManage,
        Self::AppAdmin,
    ];

    /// The scope's name in tokens and the API, e.g. `script:read`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ScriptRead => "script:read",
            Self::ScriptWrite => "script:write",
            Self::ScriptExecute => "script:execute",
            Self::DataRead => "data:read",
            Self::DataWrite => "data:write",
            Self::TriggersManage => "triggers:manage",
            Self::AppAdmin => "app:admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name that is not one of the seven.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scope '{0}' (expected one of script:read, script:write, script:execute, data:read, data:write, triggers:manage, app:admin)"
)]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

/// A user's role in one app. Roles are ordered: each includes everything below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AppRole {
    /// Reads scripts, executions and data; calls scripts.
    Viewer,
    /// A viewer who also changes scripts, data and triggers.
    Developer,
    /// A developer who also administers the app: rename, delete, members.
    Owner,
}

impl AppRole {
    /// All roles, lowest first.
    pub const ALL: [Self; 3] = [Self::Viewer, Self::Developer, Self::Owner];

    /// The role's stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Developer => "developer",
            Self::Owner => "owner",
        }
    }
}

impl FromStr for AppRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("unknown role '{s}' (expected viewer, developer or owner)"))
    }
}

/// Something an operation needs permission for. App capabilities name their app, so a
/// check can never be made against the wrong one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// See an app and its settings.
    AppRead(AppId),
    /// Read an app's scripts and their execution history.
    AppScriptsRead(AppId),
    /// Create, change and delete an app's scripts.
    AppScriptsWrite(AppId),
    /// Call an app's scripts that require a token.
    AppScriptsExecute(AppId),
    /// Read an app's KV entries.
    AppKvRead(AppId),
    /// Change an app's KV entries.
    AppKvWrite(AppId),
    /// Read an app's files.
    AppFilesRead(AppId),
    /// Change an app's files.
    AppFilesWrite(AppId),
    /// Publish to an app's pub/sub topics.
    AppPubsubPublish(AppId),
    /// Send to an app's queues.
    AppQueueSend(AppId),
    /// Create, change and delete an app's triggers.
    AppManageTriggers(AppId),
    /// Replay and ignore an app's dead letters.
    AppDeadLetterManage(AppId),
    /// Rename or delete an app, and manage its members.
    AppAdmin(AppId),
    /// Manage the instance: create apps, manage users.
    InstanceAdmin,
}

impl Capability {
    /// The scope a token must carry for this capability: the one table that maps
    /// capabilities onto the seven scopes.
    pub fn required_scope(&self) -> Scope {
        match self {
            Self::AppRead(_) | Self::AppScriptsRead(_) => Scope::ScriptRead,
            Self::AppScriptsWrite(_) => Scope::ScriptWrite,
            Self::AppScriptsExecute(_) => Scope::ScriptExecute,
            Self::AppKvRead(_) | Self::AppFilesRead(_) => Scope::DataRead,
            Self::AppKvWrite(_)
            | Self::AppFilesWrite(_)
            | Self::AppPubsubPublish(_)
            | Self::AppQueueSend(_) => Scope::DataWrite,
            Self::AppManageTriggers(_) | Self::AppDeadLetterManage(_) => Scope::TriggersManage,
            Self::AppAdmin(_) | Self::InstanceAdmin => Scope::AppAdmin,
        }
    }

    /// The app the capability is about; `None` for instance-wide capabilities.
    pub fn app(&self) -> Option<AppId> {
        match *self {
            Self::AppRead(app)
            | Self::AppScriptsRead(app)
            | Self::AppScriptsWrite(app)
            | Self::AppScriptsExecute(app)
            | Self::AppKvRead(app)
            | Self::AppKvWrite(app)
            | Self::AppFilesRead(app)
            | Self::AppFilesWrite(app)
            | Self::AppPubsubPublish(app)
            | Self::AppQueueSend(app)
            | Self::AppManageTriggers(app)
            | Self::AppDeadLetterManage(app)
            | Self::AppAdmin(app) => Some(app),
            Self::InstanceAdmin => None,
        }
    }

    /// The lowest role that grants this capability in its app; `None` when no app role
    /// does (instance capabilities need an instance admin).
    pub fn minimum_role(&self) -> Option<AppRole> {
        match self {
            Self::AppRead(_)
            | Self::AppScriptsRead(_)
            | Self::AppScriptsExecute(_)
            | Self::AppKvRead(_)
            | Self::AppFilesRead(_) => Some(AppRole::Viewer),
            Self::AppScriptsWrite(_)
            | Self::AppKvWrite(_)
            | Self::AppFilesWrite(_)
            | Self::AppPubsubPublish(_)
            | Self::AppQueueSend(_)
            | Self::AppManageTriggers(_)
            | Self::AppDeadLetterManage(_) => Some(AppRole::Developer),
            Self::AppAdmin(_) => Some(AppRole::Owner),
            Self::InstanceAdmin => None,
        }
    }
}

/// Whether `role` in an app grants `capability` there. (The app itself is checked by
/// [`Principal::authorize`]; this is the role table alone.)
pub fn role_satisfies(role: AppRole, capability: &Capability) -> bool {
    capability
        .minimum_role()
        .is_some_and(|minimum| role >= minimum)
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A login session's token (from username and password): all seven scopes.
    Session,
    /// An API token: its own scopes, maybe one app only.
    ApiToken,
}

impl CredentialKind {
    /// The name scripts (`ctx.caller.credential`) and the database see.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::ApiToken => "api_token",
        }
    }
}

/// What a principal acts through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    /// A bearer token the caller presented.
    Token {
        /// A login session or an API token.
        kind: CredentialKind,
        /// The token's id.
        token_id: TokenId,
    },
    /// A trigger's registration: the runs its events cause act as the user who registered
    /// it. No token is involved, so there is no token id to look up, revoke or log.
    Trigger {
        /// The trigger whose event the run handles.
        trigger_id: TriggerId,
    },
}

impl Credential {
    /// The kind of token presented; `None` for a triggered run.
    pub fn token_kind(&self) -> Option<CredentialKind> {
        match self {
            Self::Token { kind, .. } => Some(*kind),
            Self::Trigger { .. } => None,
        }
    }
}

/// Who an operation runs as: a user, through a session, one of their API tokens or a
/// trigger they registered. It travels with a triggered run's request, so it holds ids,
/// never a token or a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The user behind the credential.
    pub user_id: UserId,
    /// Their login name.
    pub username: Username,
    /// Instance admins hold every role in every app.
    pub instance_admin: bool,
    /// The user's role in each app they belong to.
    pub roles: HashMap<AppId, AppRole>,
    /// The credential used.
    pub credential: Credential,
    /// The scopes the credential carries (all seven for a session and a trigger).
    pub scopes: BTreeSet<Scope>,
    /// An API token limited to one app can act on that app only.
    pub app_restriction: Option<AppId>,
    /// The presented token's name (`login session` for a session); `None` for a trigger.
    pub token_name: Option<String>,
}

/// Why a principal may not do something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    /// The principal has no access to the app at all: answer as if it did not exist (404),
    /// so ids of other apps' resources leak nothing.
    #[error("not found")]
    Hidden,
    /// The principal can see the app but lacks the capability (403).
    #[error("missing permission: needs scope {scope} and a role that allows it")]
    Forbidden {
        /// The scope the capability maps onto.
        scope: Scope,
    },
}

impl Principal {
    /// The role the principal holds in `app` as far as this credential reaches: `None`
    /// when it cannot see the app at all.
    pub fn role_in(&self, app: AppId) -> Option<AppRole> {
        if self.app_restriction.is_some_and(|only| only != app) {
            return None;
        }
        if self.instance_admin {
            return Some(AppRole::Owner);
        }
        self.roles.get(&app).copied()
    }

    /// Whether the principal can see `app` at all.
    pub fn can_see(&self, app: AppId) -> bool {
        self.role_in(app).is_some()
    }

    /// Decides whether the principal holds `capability`.
    pub fn authorize(&self, capability: &Capability) -> Result<(), AccessDenied> {
        let scope = capability.required_scope();
        let role_ok = match capability.app() {
            Some(app) => {
                let Some(role) = self.role_in(app) else {
                    return Err(AccessDenied::Hidden);
                };
                role_satisfies(role, capability)
            }
            None => self.instance_admin && self.app_restriction.is_none(),
        };
        if role_ok && self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(AccessDenied::Forbidden { scope })
        }
    }
}

/// What every PiCloud token's secret starts with, so a leaked one is recognisable (secret
/// scanners, logs, the header filter in front of scripts) as a PiCloud token.
pub const TOKEN_MARKER: &str = "pc_";

/// Whether an `Authorization` header value carries a PiCloud credential: a bearer token
/// with PiCloud's marker. Such a value is never handed to a script, whichever script it is
/// sent to: a script's own webhook credentials use another scheme or another shape.
pub fn carries_picloud_token(authorization: &str) -> bool {
    bearer_token(authorization).is_some_and(|token| token.starts_with(TOKEN_MARKER))
}

/// The token of an `Authorization` header value `Bearer <token>` (the scheme in any case).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A credential that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown, malformed, expired or revoked: answer 401 without saying which.
    #[error("invalid or expired credentials")]
    Invalid,
    /// The credential store could not be asked.
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

/// Turns a bearer token into the principal it stands for. Implemented by the manager over
/// its token and user tables; used by every HTTP layer that checks access.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// The principal behind `bearer_token` (the text after `Bearer `).
    async fn authenticate(&self, bearer_token: &str) -> Result<Principal, AuthError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_capability(app: AppId) -> Vec<Capability> {
        vec![
            Capability::AppRead(app),
            Capability::AppScriptsRead(app),
            Capability::AppScriptsWrite(app),
            Capability::AppScriptsExecute(app),
            Capability::AppKvRead(app),
            Capability::AppKvWrite(app),
            Capability::AppFilesRead(app),
            Capability::AppFilesWrite(app),
            Capability::AppPubsubPublish(app),
            Capability::AppQueueSend(app),
            Capability::AppManageTriggers(app),
            Capability::AppDeadLetterManage(app),
            Capability::AppAdmin(app),
            Capability::InstanceAdmin,
        ]
    }

    #[test]
    fn the_capability_to_scope_table_is_exactly_this() {
        let app = AppId::new();
        let expected = [
            Scope::ScriptRead,
            Scope::ScriptRead,
            Scope::ScriptWrite,
            Scope::ScriptExecute,
            Scope::DataRead,
            Scope::DataWrite,
            Scope::DataRead,
            Scope::DataWrite,
            Scope::DataWrite,
            Scope::DataWrite,
            Scope::TriggersManage,
            Scope::TriggersManage,
            Scope::AppAdmin,
            Scope::AppAdmin,
        ];
        let capabilities = every_capability(app);
        assert_eq!(capabilities.len(), expected.len());
        for (capability, scope) in capabilities.iter().zip(expected) {
            assert_eq!(capability.required_scope(), scope, "{capability:?}");
        }
        let used: BTreeSet<Scope> = capabilities
            .iter()
            .map(Capability::required_scope)
            .collect();
        assert_eq!(used.len(), 7, "every one of the seven scopes is used");
    }

    #[test]
    fn the_role_table_is_exactly_this() {
        let app = AppId::new();
        // (capability, viewer, developer, owner)
        let table = [
            (Capability::AppRead(app), true, true, true),
            (Capability::AppScriptsRead(app), true, true, true),
            (Capability::AppScriptsWrite(app), false, true, true),
            (Capability::AppScriptsExecute(app), true, true, true),
            (Capability::AppKvRead(app), true, true, true),
            (Capability::AppKvWrite(app), false, true, true),
            (Capability::AppFilesRead(app), true, true, true),
            (Capability::AppFilesWrite(app), false, true, true),
            (Capability::AppPubsubPublish(app), false, true, true),
            (Capability::AppQueueSend(app), false, true, true),
            (Capability::AppManageTriggers(app), false, true, true),
            (Capability::AppDeadLetterManage(app), false, true, true),
            (Capability::AppAdmin(app), false, false, true),
            (Capability::InstanceAdmin, false, false, false),
        ];
        assert_eq!(table.len(), every_capability(app).len());
        for (capability, viewer, developer, owner) in table {
            assert_eq!(
                role_satisfies(AppRole::Viewer, &capability),
                viewer,
                "{capability:?}"
            );
            assert_eq!(
                role_satisfies(AppRole::Developer, &capability),
                developer,
                "{capability:?}"
            );
            assert_eq!(
                role_satisfies(AppRole::Owner, &capability),
                owner,
                "{capability:?}"
            );
        }
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        assert_eq!(bearer_token("Bearer pc_abc"), Some("pc_abc"));
        assert_eq!(bearer_token("bearer  pc_abc "), Some("pc_abc"));
        assert_eq!(bearer_token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("pc_abc"), None);
    }

    #[test]
    fn only_bearer_values_with_the_marker_are_picloud_credentials() {
        assert!(carries_picloud_token("Bearer pc_abc"));
        assert!(carries_picloud_token("bearer   pc_abc"));
        assert!(!carries_picloud_token("Bearer sk_live_abc"));
        assert!(!carries_picloud_token("Basic cGNfYWJjOg=="));
        assert!(!carries_picloud_token("pc_abc"));
    }

    #[test]
    fn scopes_round_trip_through_their_names() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
            let json = serde_json::to_string(&scope).unwrap();
            assert_eq!(json, format!("\"{}\"", scope.as_str()));
        }
        assert!("script:delete".parse::<Scope>().is_err());
    }

    fn principal(roles: &[(AppId, AppRole)], scopes: &[Scope]) -> Principal {
        Principal {
            user_id: UserId::new(),
            username: Username::parse("ada").unwrap(),
            instance_admin: false,
            roles: roles.iter().copied().collect(),
            credential: Credential::Token {
                kind: CredentialKind::ApiToken,
                token_id: TokenId::new(),
            },
            scopes: scopes.iter().copied().collect(),
            app_restriction: None,
            token_name: Some("test".to_owned()),
        }
    }

    #[test]
    fn principals_round_trip_through_json() {
        let principal = principal(&[(AppId::new(), AppRole::Owner)], &[Scope::DataRead]);
        let json = serde_json::to_string(&principal).unwrap();
        assert_eq!(serde_json::from_str::<Principal>(&json).unwrap(), principal);
    }

    #[test]
    fn role_scope_and_app_must_all_agree() {
        let mine = AppId::new();
        let theirs = AppId::new();
        let dev = principal(&[(mine, AppRole::Developer)], &Scope::ALL);
        assert_eq!(dev.authorize(&Capability::AppScriptsWrite(mine)), Ok(()));
        assert_eq!(
            dev.authorize(&Capability::AppAdmin(mine)),
            Err(AccessDenied::Forbidden {
                scope: Scope::AppAdmin
            })
        );
        assert_eq!(
            dev.authorize(&Capability::AppScriptsRead(theirs)),
            Err(AccessDenied::Hidden)
        );
        assert!(dev.authorize(&Capability::InstanceAdmin).is_err());

        let read_only = principal(&[(mine, AppRole::Owner)], &[Scope::ScriptRead]);
        assert_eq!(
            read_only.authorize(&Capability::AppScriptsRead(mine)),
            Ok(())
        );
        assert_eq!(
            read_only.authorize(&Capability::AppScriptsWrite(mine)),
            Err(AccessDenied::Forbidden {
                scope: Scope::ScriptWrite
            })
        );
    }

    #[test]
    fn instance_admins_hold_every_role_unless_their_token_is_limited() {
        let app = AppId::new();
        let other = AppId::new();
        let mut admin = principal(&[], &Scope::ALL);
        admin.instance_admin = true;
        for capability in every_capability(app) {
            assert_eq!(admin.authorize(&capability), Ok(()), "{capability:?}");
        }
        admin.app_restriction = Some(app);
        assert_eq!(admin.authorize(&Capability::AppAdmin(app)), Ok(()));
        assert_eq!(
            admin.authorize(&Capability::AppScriptsRead(other)),
            Err(AccessDenied::Hidden)
        );
        assert!(admin.authorize(&Capability::InstanceAdmin).is_err());
    }
}
