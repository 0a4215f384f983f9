//! What the suites of the script-facing services (KV, files) share: the contexts calls are
//! made in and the principals they act as.

use std::collections::{BTreeSet, HashMap};

use picloud_shared::{
    AppId, AppRole, Credential, CredentialKind, ExecutionId, Principal, Scope, ServiceContext,
    TokenId, UserId, Username,
};

/// The context of an HTTP run of one of `app`'s scripts.
pub fn script_ctx(app: AppId) -> ServiceContext {
    ServiceContext {
        app_id: app,
        execution_id: Some(ExecutionId::new()),
        depth: 0,
        run_as: None,
    }
}

/// The context of a triggered run (depth 2) acting as `principal`.
pub fn run_as(app: AppId, principal: Principal) -> ServiceContext {
    ServiceContext {
        app_id: app,
        execution_id: Some(ExecutionId::new()),
        depth: 2,
        run_as: Some(principal),
    }
}

/// A user `ada` with `roles`, through an API token carrying `scopes`.
pub fn principal(roles: &[(AppId, AppRole)], scopes: &[Scope]) -> Principal {
    Principal {
        user_id: UserId::new(),
        username: Username::parse("ada").unwrap(),
        instance_admin: false,
        roles: roles.iter().copied().collect::<HashMap<_, _>>(),
        credential: Credential::Token {
            kind: CredentialKind::ApiToken,
            token_id: TokenId::new(),
        },
        scopes: scopes.iter().copied().collect::<BTreeSet<_>>(),
        app_restriction: None,
        token_name: None,
    }
}
