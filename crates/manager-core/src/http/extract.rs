//! Extractors whose rejections answer in the admin API's error envelope instead of axum's
//! plain-text bodies.

use std::str::FromStr;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

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
