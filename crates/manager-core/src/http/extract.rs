//! Extractors whose rejections answer in the admin API's error envelope instead of axum's
//! plain-text bodies.

use std::str::FromStr;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use picloud_shared::{AppId, CollectionName, ErrorCode};

use super::error::ApiError;

/// A JSON request body: `malformed_json` (400), `invalid_body` (422),
/// `unsupported_media_type` (415) or `payload_too_large` (413) when it does not fit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// A typed query string: `invalid_query` (400) when it does not parse.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// The one `{id}` segment of a route, parsed as a typed id: `invalid_id` (400) when it is
/// not one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathId<T>(pub T);

impl<S, T> FromRequestParts<S> for PathId<T>
where
    T: FromStr + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state).await?;
        raw.parse()
            .map(Self)
            .map_err(|_| ApiError::invalid_id(&raw))
    }
}

/// The two segments of a route like `/apps/{id}/members/{user_id}`, each parsed as a typed
/// id: `invalid_id` (400) naming the first one that is not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathIds<A, B>(pub A, pub B);

impl<S, A, B> FromRequestParts<S> for PathIds<A, B>
where
    A: FromStr + Send,
    B: FromStr + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path((first, second)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, state).await?;
        let a = first.parse().map_err(|_| ApiError::invalid_id(&first))?;
        let b = second.parse().map_err(|_| ApiError::invalid_id(&second))?;
        Ok(Self(a, b))
    }
}

/// The `{id}/<service>/{collection}` segments of an app's data routes (KV, files): the
/// app's id, parsed, and the collection as sent.
pub(crate) struct CollectionPath(pub AppId, pub String);

/// The `{id}/<service>/{collection}/{item}` segments of an app's data routes: the app's id,
/// parsed, the collection and the item (a KV key, a file name) as sent.
pub(crate) struct ItemPath(pub AppId, pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for CollectionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path((id, collection)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(undecodable)?;
        Ok(Self(parse_app_id(&id)?, collection))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ItemPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path((id, collection, item)) =
            axum::extract::Path::<(String, String, String)>::from_request_parts(parts, state)
                .await
                .map_err(undecodable)?;
        Ok(Self(parse_app_id(&id)?, collection, item))
    }
}

fn parse_app_id(raw: &str) -> Result<AppId, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid_id(raw))
}

/// A key or a file name is free text, so unlike other routes' segments it can be
/// percent-encoded into something that is not UTF-8: the client's mistake, not a routing
/// fault.
fn undecodable(rejection: axum::extract::rejection::PathRejection) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidPath,
        format!("the path could not be decoded: {}", rejection.body_text()),
    )
}

/// A collection name from a path, or 422 `invalid_name`.
pub(crate) fn collection_name(raw: &str) -> Result<CollectionName, ApiError> {
    CollectionName::parse(raw).map_err(|e| ApiError::new(ErrorCode::InvalidName, e.to_string()))
}
