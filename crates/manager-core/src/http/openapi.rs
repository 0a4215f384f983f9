//! The OpenAPI description of the admin API, served at `/api/admin/openapi.json`; the
//! dashboard's TypeScript types are generated from it.

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;

use super::AdminState;
use super::{executions, scripts};

/// The admin API's OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "PiCloud admin API",
        description = "Manage scripts and read their execution records."
    ),
    paths(
        scripts::create_script,
        scripts::list_scripts,
        scripts::get_script,
        scripts::update_script,
        scripts::delete_script,
        executions::list_script_executions,
        executions::get_execution,
        openapi_json,
    ),
    tags(
        (name = "scripts", description = "Scripts: source, limits and versions"),
        (name = "executions", description = "Records of script runs"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

pub(super) fn routes() -> Router<AdminState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/admin/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
pub(super) async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
