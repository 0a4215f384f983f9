//! The OpenAPI description of the admin API, served at `/api/admin/openapi.json`; the
//! dashboard's TypeScript types are generated from it.

use axum::Router;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDoc, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::AdminState;
use crate::access::auth;
use crate::access::members::http as members;
use crate::access::tokens::http as tokens;
use crate::access::users::http as users;
use crate::apps::http as apps;
use crate::dead_letters::http as dead_letters;
use crate::executions::http as executions;
use crate::kv::http as kv;
use crate::scripts::http as scripts;
use crate::triggers::http as triggers;

/// The admin API's OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "PiCloud admin API",
        description = "Manage apps, scripts, users and tokens, and read execution records. \
            Every operation needs `Authorization: Bearer <token>` (a login session's token \
            from `POST /api/admin/auth/login`, or an API token) except logging in and this \
            document. Without a valid token the answer is 401; with one that lacks the \
            permission, 403 naming the scope; for another app's resources, 404."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    paths(
        auth::login,
        auth::logout,
        auth::me,
        apps::create_app,
        apps::list_apps,
        apps::get_app,
        apps::update_app,
        apps::delete_app,
        members::list_members,
        members::set_member,
        members::remove_member,
        kv::list_collections,
        kv::list_entries,
        kv::get_entry,
        kv::put_entry,
        kv::delete_entry,
        triggers::create_trigger,
        triggers::list_triggers,
        triggers::get_trigger,
        triggers::update_trigger,
        triggers::delete_trigger,
        dead_letters::list_dead_letters,
        dead_letters::count_dead_letters,
        dead_letters::replay_dead_letter,
        dead_letters::ignore_dead_letter,
        scripts::create_script,
        scripts::list_scripts,
        scripts::get_script,
        scripts::update_script,
        scripts::delete_script,
        executions::list_script_executions,
        executions::get_execution,
        users::create_user,
        users::list_users,
        users::get_user,
        users::delete_user,
        users::set_password,
        tokens::create_token,
        tokens::list_tokens,
        tokens::revoke_token,
        openapi_json,
    ),
    tags(
        (name = "auth", description = "Logging in and out; who am I"),
        (name = "apps", description = "Apps: the unit that groups scripts and their data"),
        (name = "members", description = "Who belongs to an app, in which role"),
        (name = "kv", description = "Apps' KV entries: browse, read, put, delete"),
        (name = "triggers", description = "Triggers: run a script when an event happens"),
        (name = "dead-letters", description = "Events whose delivery failed for good: replay or ignore them"),
        (name = "scripts", description = "Scripts: source, limits and versions"),
        (name = "executions", description = "Records of script runs"),
        (name = "users", description = "People who log in (instance admins)"),
        (name = "tokens", description = "Your API tokens"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme, and gives every operation that needs it the 401
/// answer it can always give, so no annotation can forget it.
#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A login session's token or an API token (`pc_…`)".to_owned(),
                    ))
                    .build(),
            ),
        );
        let unauthorized = ResponseBuilder::new()
            .description(
                "No bearer token, or one that is unknown, expired or revoked (`unauthorized`)",
            )
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                    .build(),
            )
            .header(
                "www-authenticate",
                utoipa::openapi::header::HeaderBuilder::new()
                    .description(Some("`Bearer`"))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                // Public operations declare an empty requirement (`security(())`).
                let public = operation
                    .security
                    .as_ref()
                    .is_some_and(|reqs| reqs.iter().all(|r| *r == Default::default()));
                if !public {
                    operation
                        .responses
                        .responses
                        .entry("401".to_owned())
                        .or_insert_with(|| unauthorized.clone().into());
                }
            }
        }
    }
}

pub(super) fn routes() -> Router<AdminState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/admin/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
pub(super) async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
