//! `/apps/{id}/kv`: the KV browser. Collections with their key counts, a collection's
//! keys page by page, and one key's value to read, replace or delete.
//!
//! Changes made here go through the same [`KvService`](picloud_shared::KvService) scripts
//! use, so they fire the app's triggers (at depth 1) like any other change.
//!
//! A key's version is its entity tag (`ETag: "<version>"`): a `PUT` with
//! `If-Match: "<version>"` writes only while the key still holds that version, and one with
//! `If-None-Match: *` only while the key holds nothing, each checked and written in one
//! step by the service, so two editors cannot overwrite each other unknowingly.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use picloud_shared::kv::{DEFAULT_KV_LIST_LIMIT, MAX_KV_LIST_LIMIT};
use picloud_shared::{
    AppId, Capability, CollectionInfo, CollectionName, ErrorCode, ErrorEnvelope, KvCondition,
    KvEntry, KvKey, KvListOptions, KvService,
};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::auth::Auth;
use crate::apps::AppRepository;
use crate::apps::http::authorized_app;
use crate::http::error::ApiError;
use crate::http::extract::{CollectionPath, ItemPath, Json, PathId, Query, collection_name};
use crate::http::{AdminState, Page};

/// What the KV browser works with.
#[derive(Clone)]
pub struct KvState {
    /// Apps' KV entries, read and changed as the caller.
    pub kv: Arc<dyn KvService>,
    /// Apps, to check the caller may see the one a path names.
    pub apps: Arc<dyn AppRepository>,
}

pub(crate) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_collections))
        .routes(routes!(list_entries))
        .routes(routes!(get_entry, put_entry, delete_entry))
}

/// Query of `GET /api/admin/apps/{id}/kv/{collection}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListKvQuery {
    /// Only keys starting with this text.
    pub prefix: Option<String>,
    /// Page size, 1 to 1000; 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Continue after this key (the previous page's `next_cursor`).
    pub cursor: Option<String>,
}

fn kv_key(raw: &str) -> Result<KvKey, ApiError> {
    KvKey::parse(raw).map_err(|e| ApiError::new(ErrorCode::InvalidName, e.to_string()))
}

/// List an app's KV collections with their key counts.
#[utoipa::path(
    get,
    path = "/apps/{id}/kv",
    tag = "kv",
    params(("id" = String, Path, format = Uuid, description = "App id")),
    responses(
        (status = 200, description = "The collections that hold at least one key, by name, all on one page", body = Page<CollectionInfo>),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "No `data:read`", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn list_collections(
    State(state): State<KvState>,
    auth: Auth,
    PathId(id): PathId<AppId>,
) -> Result<axum::Json<Page<CollectionInfo>>, ApiError> {
    authorized_app(state.apps.as_ref(), &auth, id, Capability::AppKvRead).await?;
    let items = state.kv.collections(&auth.acting_in(id)).await?;
    Ok(axum::Json(Page {
        items,
        next_cursor: None,
    }))
}

/// List a collection's entries in key order (bytewise), a page at a time.
#[utoipa::path(
    get,
    path = "/apps/{id}/kv/{collection}",
    tag = "kv",
    params(
        ("id" = String, Path, format = Uuid, description = "App id"),
        ("collection" = String, Path, description = "Collection name", pattern = "^[A-Za-z0-9_.:-]{1,128}$"),
        ListKvQuery,
    ),
    responses(
        (status = 200, description = "One page of entries", body = Page<KvEntry>),
        (status = 400, description = "The id is not a UUID, or bad query parameters", body = ErrorEnvelope),
        (status = 403, description = "No `data:read`", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 422, description = "Invalid collection name, prefix or cursor", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn list_entries(
    State(state): State<KvState>,
    auth: Auth,
    CollectionPath(id, collection): CollectionPath,
    Query(query): Query<ListKvQuery>,
) -> Result<axum::Json<Page<KvEntry>>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_KV_LIST_LIMIT);
    if !(1..=MAX_KV_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_query(format!(
            "limit must be between 1 and {MAX_KV_LIST_LIMIT}"
        )));
    }
    authorized_app(state.apps.as_ref(), &auth, id, Capability::AppKvRead).await?;
    let collection = collection_name(&collection)?;
    let options = KvListOptions {
        prefix: query.prefix,
        limit,
        cursor: query.cursor,
    };
    let page = state
        .kv
        .list(&auth.acting_in(id), &collection, options)
        .await?;
    // The KV service's own cursor (the last key) is already what the page shape wants.
    Ok(axum::Json(Page {
        items: page.entries,
        next_cursor: page.next_cursor,
    }))
}

/// Read one key's value: the stored JSON, exactly as it was put, with its version as the
/// entity tag.
#[utoipa::path(
    get,
    path = "/apps/{id}/kv/{collection}/{key}",
    tag = "kv",
    params(
        ("id" = String, Path, format = Uuid, description = "App id"),
        ("collection" = String, Path, description = "Collection name", pattern = "^[A-Za-z0-9_.:-]{1,128}$"),
        ("key" = String, Path, description = "Key (percent-encoded)"),
    ),
    responses(
        (status = 200, description = "The stored value", body = Value,
            headers(("etag" = String, description = "The entry's version, quoted: `\"<version>\"` (for `If-Match` on a `PUT`)"))),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "No `data:read`", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see), or no such key", body = ErrorEnvelope),
        (status = 422, description = "Invalid collection name or key", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn get_entry(
    State(state): State<KvState>,
    auth: Auth,
    ItemPath(id, collection, key): ItemPath,
) -> Result<Response, ApiError> {
    authorized_app(state.apps.as_ref(), &auth, id, Capability::AppKvRead).await?;
    let collection = collection_name(&collection)?;
    let key = kv_key(&key)?;
    let entry = state
        .kv
        .get_entry(&auth.acting_in(id), &collection, &key)
        .await?
        .ok_or_else(|| key_not_found(&collection, &key))?;
    Ok((
        [(header::ETAG, etag(entry.version))],
        axum::Json(entry.value),
    )
        .into_response())
}

/// A version as an entity tag: `"<version>"`.
fn etag(version: i64) -> HeaderValue {
    #[expect(
        clippy::expect_used,
        reason = "an integer between quotes is visible ASCII, always a valid header value"
    )]
    HeaderValue::try_from(format!("\"{version}\"")).expect("a quoted integer")
}

fn key_not_found(collection: &CollectionName, key: &KvKey) -> ApiError {
    ApiError::not_found(format!(
        "key '{key}' not found in collection '{collection}'"
    ))
}

/// Store a value under a key, replacing any value there. The body is the value itself,
/// any JSON up to 64 KiB. With `If-Match: "<version>"` only while the key holds that
/// version, with `If-None-Match: *` only while it holds nothing; the check and the write are
/// one step. Fires the app's matching KV triggers.
///
/// (The two headers are described here rather than as parameters: a header value with a
/// control character is refused by the HTTP layer itself, a bare 400, before any route.)
#[utoipa::path(
    put,
    path = "/apps/{id}/kv/{collection}/{key}",
    tag = "kv",
    params(
        ("id" = String, Path, format = Uuid, description = "App id"),
        ("collection" = String, Path, description = "Collection name", pattern = "^[A-Za-z0-9_.:-]{1,128}$"),
        ("key" = String, Path, description = "Key (percent-encoded)"),
    ),
    request_body(content = Value, description = "The value to store: any JSON", content_type = "application/json"),
    responses(
        (status = 204, description = "The value is stored",
            headers(("etag" = String, description = "The entry's new version, quoted: `\"<version>\"`"))),
        (status = 400, description = "The id is not a UUID, or malformed JSON", body = ErrorEnvelope),
        (status = 403, description = "No `data:write`, or not a developer of the app", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 412, description = "`If-Match` and the key holds another version or none, or `If-None-Match: *` and the key exists (`precondition_failed`); nothing was stored", body = ErrorEnvelope),
        (status = 413, description = "The value is over 64 KiB (`value_too_large`)", body = ErrorEnvelope),
        (status = 415, description = "Body is not declared as JSON", body = ErrorEnvelope),
        (status = 422, description = "Invalid collection name or key (`invalid_name`); a value that cannot be stored, or an `If-Match` that is not one quoted version or an `If-None-Match` other than `*` (`invalid_argument`)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn put_entry(
    State(state): State<KvState>,
    auth: Auth,
    ItemPath(id, collection, key): ItemPath,
    headers: HeaderMap,
    Json(value): Json<Value>,
) -> Result<Response, ApiError> {
    authorized_app(state.apps.as_ref(), &auth, id, Capability::AppKvWrite).await?;
    let collection = collection_name(&collection)?;
    let key = kv_key(&key)?;
    let condition = write_condition(&headers)?;
    let ctx = auth.acting_in(id);
    let version = match condition {
        None => state.kv.set(&ctx, &collection, &key, value).await?,
        Some(condition) => state
            .kv
            .set_if(&ctx, &collection, &key, value, condition)
            .await?
            .ok_or_else(|| condition_failed(&collection, &key, condition))?,
    };
    tracing::info!(app_id = %id, %collection, version, user = %auth.username, "kv entry put");
    Ok((StatusCode::NO_CONTENT, [(header::ETAG, etag(version))]).into_response())
}

/// The condition a `PUT`'s headers ask for: `If-Match: "<version>"` or `If-None-Match: *`.
/// Anything else in them is refused rather than ignored: dropping a precondition silently
/// would lose the protection it asks for.
fn write_condition(headers: &HeaderMap) -> Result<Option<KvCondition>, ApiError> {
    let if_match = headers
        .get(header::IF_MATCH)
        .map(|value| {
            quoted_version(value.as_bytes())
                .map(KvCondition::IfVersion)
                .ok_or_else(|| {
                    ApiError::invalid_argument(
                        "if-match must be one entity tag holding a version, such as '\"3\"' \
                     (the etag a read answered)",
                    )
                })
        })
        .transpose()?;
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .map(|value| {
            if value.as_bytes().trim_ascii() == b"*" {
                Ok(KvCondition::IfAbsent)
            } else {
                Err(ApiError::invalid_argument(
                    "only 'if-none-match: *' is supported on a put",
                ))
            }
        })
        .transpose()?;
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err(ApiError::new(
            ErrorCode::PreconditionFailed,
            "'if-match' and 'if-none-match: *' cannot both hold",
        )),
        (condition, None) | (None, condition) => Ok(condition),
    }
}

/// The version in a strong entity tag of decimal digits (`"42"`); `None` for anything
/// else: a weak tag, a list, `*`, or a tag that was never a version.
fn quoted_version(raw: &[u8]) -> Option<i64> {
    let digits = raw.trim_ascii().strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn condition_failed(collection: &CollectionName, key: &KvKey, condition: KvCondition) -> ApiError {
    let message = match condition {
        KvCondition::IfVersion(version) => {
            format!("key '{key}' in collection '{collection}' is not at version {version}")
        }
        KvCondition::IfAbsent => {
            format!("key '{key}' already exists in collection '{collection}'")
        }
    };
    ApiError::new(ErrorCode::PreconditionFailed, message)
}

/// Delete a key. Fires the app's matching KV triggers.
#[utoipa::path(
    delete,
    path = "/apps/{id}/kv/{collection}/{key}",
    tag = "kv",
    params(
        ("id" = String, Path, format = Uuid, description = "App id"),
        ("collection" = String, Path, description = "Collection name", pattern = "^[A-Za-z0-9_.:-]{1,128}$"),
        ("key" = String, Path, description = "Key (percent-encoded)"),
    ),
    responses(
        (status = 204, description = "The key is gone"),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "No `data:write`, or not a developer of the app", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see), or no such key", body = ErrorEnvelope),
        (status = 422, description = "Invalid collection name or key", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn delete_entry(
    State(state): State<KvState>,
    auth: Auth,
    ItemPath(id, collection, key): ItemPath,
) -> Result<StatusCode, ApiError> {
    authorized_app(state.apps.as_ref(), &auth, id, Capability::AppKvWrite).await?;
    let collection = collection_name(&collection)?;
    let key = kv_key(&key)?;
    let existed = state
        .kv
        .delete(&auth.acting_in(id), &collection, &key)
        .await?;
    if !existed {
        return Err(key_not_found(&collection, &key));
    }
    tracing::info!(app_id = %id, %collection, user = %auth.username, "kv entry deleted");
    Ok(StatusCode::NO_CONTENT)
}
