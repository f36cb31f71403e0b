//! Typed extractors: each refuses with the project's JSON error (`ApiError`) rather than
//! axum's plain-text rejection, so handlers take their inputs ready to use.
//!
//! Axum runs extractors in argument order, so handlers list them in the order errors should
//! win: the caller first (401 before anything about the request), then path, query, body.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::auth::Authenticated;
use crate::http::error::{ApiError, AppResult, ErrorCode};
use crate::state::AppState;

/// The authenticated caller: a verified bearer token turned into a principal (located by its
/// claim and the configured network zones). 401 `unauthenticated` or 403 `unknown_entity`
/// otherwise.
pub struct Caller(pub Authenticated);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> AppResult<Self> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .ok_or_else(|| ApiError::internal("a request without its peer address"))?;
        app.auth.authenticate(&parts.headers, peer).map(Caller)
    }
}

/// Path parameters; 400 `invalid_path` when they do not decode.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> AppResult<Self> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidPath, e.body_text()))
    }
}

/// The query string; 400 `invalid_query` when it does not parse (unknown parameters
/// included, where the type denies them).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> AppResult<Self> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text()))
    }
}

/// A JSON body, parsed strictly whatever its `Content-Type`: 400 `invalid_json` (not JSON) or
/// `invalid_body` (not the expected shape), with what is wrong; 413 over the body limit.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> AppResult<Self> {
        let bytes = body_bytes(Bytes::from_request(request, state).await)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A raw body (a signed note, an artifact); 413 over the body limit.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> AppResult<Self> {
        body_bytes(Bytes::from_request(request, state).await).map(RawBody)
    }
}

/// Parses a JSON body strictly, with errors that name what is wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> AppResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_data() {
            ErrorCode::InvalidBody
        } else {
            ErrorCode::InvalidJson
        };
        ApiError::bad_request(code, format!("request body: {e}"))
    })
}

/// A request body, or the error for one that could not be read: 413 `body_too_large` over
/// the limit.
fn body_bytes(body: Result<Bytes, BytesRejection>) -> AppResult<Bytes> {
    body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                ErrorCode::BodyTooLarge,
                "the request body is larger than the limit",
            )
        } else {
            ApiError::new(status, ErrorCode::InvalidBody, e.body_text())
        }
    })
}
