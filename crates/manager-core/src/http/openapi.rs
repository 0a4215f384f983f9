//! The OpenAPI description of the admin API, served at `/api/admin/openapi.json`. Its
//! paths come from the router itself (each feature's `OpenApiRouter`), so the document and
//! the routes are one list; clients (the dashboard's, once it lands) generate their types
//! from it.

use std::sync::LazyLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDoc, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AdminState;

/// The admin API's OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "PiCloud admin API",
        description = "Manage apps, scripts, KV data, files, triggers, dead letters, users \
            and tokens, and read execution records. \
            Every operation needs `Authorization: Bearer <token>` (a login session's token \
            from `POST /api/admin/auth/login`, or an API token) except logging in and this \
            document. Without a valid token the answer is 401; with one that lacks the \
            permission, 403 naming the scope; for another app's resources, 404."
    ),
    security(("bearer" = [])),
    tags(
        (name = "auth", description = "Logging in and out; who am I"),
        (name = "apps", description = "Apps: the unit that groups scripts and their data"),
        (name = "members", description = "Who belongs to an app, in which role"),
        (name = "kv", description = "Apps' KV entries: browse, read, put, delete"),
        (name = "files", description = "Apps' files: list, download (conditional, ranged), upload (streamed), delete; quota usage; the file sweep"),
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

/// The document's final touches once every route is in: the bearer scheme, and the 401
/// answer of every protected operation.
pub(super) fn finish(mut doc: OpenApiDoc) -> OpenApiDoc {
    BearerAuth.modify(&mut doc);
    doc
}

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// Built once, from the same routes the router serves.
static DOCUMENT: LazyLock<OpenApiDoc> = LazyLock::new(super::openapi);

/// This OpenAPI document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
pub(super) async fn openapi_json() -> axum::Json<OpenApiDoc> {
    axum::Json(DOCUMENT.clone())
}
