//! Answers to logged requests: they carry `Sovereign-Log-Index`, the index of the entry that
//! recorded the decision, so a client can fetch its proof.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::http::vocab::LOG_INDEX_HEADER;

/// A JSON answer to a logged request.
pub struct Logged<T> {
    pub index: u64,
    pub status: StatusCode,
    pub body: T,
}

impl<T> Logged<T> {
    /// 200 with `body`, logged at `index`.
    pub fn ok(index: u64, body: T) -> Self {
        Logged {
            index,
            status: StatusCode::OK,
            body,
        }
    }

    /// `status` with `body`, logged at `index`.
    pub fn with_status(index: u64, status: StatusCode, body: T) -> Self {
        Logged {
            index,
            status,
            body,
        }
    }
}

impl<T: Serialize> IntoResponse for Logged<T> {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        response
            .headers_mut()
            .insert(LOG_INDEX_HEADER, HeaderValue::from(self.index));
        response
    }
}

/// The answer to a submission stored once (a policy or invariant set, an artifact): 201 with
/// the index of the entry that logged it, or 200 when the same was stored already and
/// nothing was logged.
pub fn created_or_known<T: Serialize>(index: Option<u64>, body: T) -> Response {
    match index {
        Some(index) => Logged::with_status(index, StatusCode::CREATED, body).into_response(),
        None => (StatusCode::OK, Json(body)).into_response(),
    }
}
