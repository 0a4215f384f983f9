//! Dead letters: an app's failed deliveries, newest first, the unresolved count (the
//! dashboard badge), and replaying or ignoring one.

use std::sync::Arc;

use axum::extract::State;
use picloud_shared::{AppId, Capability, DeadLetterId, ErrorCode, ErrorEnvelope};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::auth::Auth;
use crate::apps::AppRepository;
use crate::apps::http::{app_not_found, authorized_app};
use crate::dead_letters::{
    DeadLetter, DeadLetterActionError, DeadLetterCursor, DeadLetterRepository, ListDeadLetters,
};
use crate::http::error::ApiError;
use crate::http::extract::{PathId, Query};
use crate::http::{AdminState, Page, PageQuery};

/// What the dead-letter routes work with.
#[derive(Clone)]
pub struct DeadLettersState {
    /// Dead letters.
    pub dead_letters: Arc<dyn DeadLetterRepository>,
    /// Apps, to check the caller may see the one a path names.
    pub apps: Arc<dyn AppRepository>,
}

pub(crate) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_dead_letters))
        .routes(routes!(count_dead_letters))
        .routes(routes!(replay_dead_letter))
        .routes(routes!(ignore_dead_letter))
}

/// Query of `GET /api/admin/apps/{id}/dead-letters`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListDeadLettersQuery {
    /// Only unresolved dead letters; all when absent or false.
    pub unresolved: Option<bool>,
    /// Page size, 1 to 200; 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; the first page when absent.
    pub cursor: Option<String>,
}

/// How many unresolved dead letters an app has.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterCount {
    /// The count.
    pub unresolved: u64,
}

fn dead_letter_not_found(id: DeadLetterId) -> ApiError {
    ApiError::not_found(format!("dead letter {id} not found"))
}

/// List an app's dead letters, newest first.
#[utoipa::path(
    get,
    path = "/apps/{id}/dead-letters",
    tag = "dead-letters",
    params(
        ("id" = String, Path, format = Uuid, description = "App id"),
        ListDeadLettersQuery,
    ),
    responses(
        (status = 200, description = "One page of dead letters, newest first", body = Page<DeadLetter>),
        (status = 400, description = "The id is not a UUID, or bad query parameters", body = ErrorEnvelope),
        (status = 403, description = "Missing `script:read` or `data:read` for the app", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn list_dead_letters(
    State(state): State<DeadLettersState>,
    auth: Auth,
    PathId(id): PathId<AppId>,
    Query(query): Query<ListDeadLettersQuery>,
) -> Result<axum::Json<Page<DeadLetter>>, ApiError> {
    let request = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .request::<DeadLetterCursor>()?;
    authorized_app(state.apps.as_ref(), &auth, id, Capability::AppRead).await?;
    require_event_values(&auth, id)?;
    let letters = state
        .dead_letters
        .list(ListDeadLetters {
            app: id,
            unresolved_only: query.unresolved.unwrap_or(false),
            limit: request.fetch(),
            before: request.after,
        })
        .await?;
    Ok(axum::Json(request.page(
        letters,
        |letter: &DeadLetter| DeadLetterCursor::from(letter),
        |letter| letter,
    )))
}

/// Count an app's unresolved dead letters (the dashboard badge).
#[utoipa::path(
    get,
    path = "/apps/{id}/dead-letters/count",
    tag = "dead-letters",
    params(("id" = String, Path, format = Uuid, description = "App id")),
    responses(
        (status = 200, description = "The unresolved count", body = DeadLetterCount),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "No `script:read` for the app", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn count_dead_letters(
    State(state): State<DeadLettersState>,
    auth: Auth,
    PathId(id): PathId<AppId>,
) -> Result<axum::Json<DeadLetterCount>, ApiError> {
    authorized_app(state.apps.as_ref(), &auth, id, Capability::AppRead).await?;
    let unresolved = state.dead_letters.count_unresolved(id).await?;
    Ok(axum::Json(DeadLetterCount { unresolved }))
}

/// The dead letter if the principal may manage its app's dead letters; another app's is
/// "not found", exactly like a missing one.
async fn authorized_dead_letter(
    state: &DeadLettersState,
    auth: &Auth,
    id: DeadLetterId,
) -> Result<DeadLetter, ApiError> {
    let letter = state
        .dead_letters
        .get(id)
        .await?
        .ok_or_else(|| dead_letter_not_found(id))?;
    auth.require(Capability::AppDeadLetterManage(letter.app_id), || {
        dead_letter_not_found(id)
    })?;
    require_event_values(auth, letter.app_id)?;
    Ok(letter)
}

/// A dead letter carries the event that failed, and so the values it changed (a KV
/// entry's new value): whoever is shown one needs `data:read` in its app, as for the
/// values themselves. Asked once the app is known to be visible, so this refusal is a 403.
fn require_event_values(auth: &Auth, app: AppId) -> Result<(), ApiError> {
    auth.require(Capability::AppKvRead(app), || app_not_found(app))
}

fn action_error(err: DeadLetterActionError) -> ApiError {
    match err {
        DeadLetterActionError::NotFound(id) => dead_letter_not_found(id),
        DeadLetterActionError::AlreadyResolved { .. } => {
            ApiError::new(ErrorCode::AlreadyResolved, err.to_string())
        }
        DeadLetterActionError::NoTrigger(_) => {
            ApiError::new(ErrorCode::TriggerGone, err.to_string())
        }
        DeadLetterActionError::Repo(err) => err.into(),
    }
}

/// Deliver a dead letter's event again: a fresh delivery to its trigger (attempts from
/// zero, the original event and depth), and the dead letter is resolved as `replayed`.
#[utoipa::path(
    post,
    path = "/dead-letters/{id}/replay",
    tag = "dead-letters",
    params(("id" = String, Path, format = Uuid, description = "Dead letter id")),
    responses(
        (status = 200, description = "The dead letter, resolved as `replayed`", body = DeadLetter),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "Missing `triggers:manage` or `data:read` for the app", body = ErrorEnvelope),
        (status = 404, description = "No such dead letter (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 409, description = "Already resolved (`already_resolved`), or there is no trigger to replay to (`trigger_gone`)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn replay_dead_letter(
    State(state): State<DeadLettersState>,
    auth: Auth,
    PathId(id): PathId<DeadLetterId>,
) -> Result<axum::Json<DeadLetter>, ApiError> {
    authorized_dead_letter(&state, &auth, id).await?;
    let replayed = state.dead_letters.replay(id).await.map_err(action_error)?;
    tracing::info!(dead_letter_id = %id, user = %auth.username, "dead letter replayed");
    Ok(axum::Json(replayed))
}

/// Dismiss a dead letter: it is resolved as `ignored` and leaves the unresolved count.
#[utoipa::path(
    post,
    path = "/dead-letters/{id}/ignore",
    tag = "dead-letters",
    params(("id" = String, Path, format = Uuid, description = "Dead letter id")),
    responses(
        (status = 200, description = "The dead letter, resolved as `ignored`", body = DeadLetter),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "Missing `triggers:manage` or `data:read` for the app", body = ErrorEnvelope),
        (status = 404, description = "No such dead letter (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 409, description = "Already resolved (`already_resolved`)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn ignore_dead_letter(
    State(state): State<DeadLettersState>,
    auth: Auth,
    PathId(id): PathId<DeadLetterId>,
) -> Result<axum::Json<DeadLetter>, ApiError> {
    authorized_dead_letter(&state, &auth, id).await?;
    let ignored = state.dead_letters.ignore(id).await.map_err(action_error)?;
    tracing::info!(dead_letter_id = %id, user = %auth.username, "dead letter ignored");
    Ok(axum::Json(ignored))
}
