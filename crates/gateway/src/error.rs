//! Every error leaves the gateway as JSON `{"error": CODE, "message": TEXT, ...}` with a
//! fitting status. Codes are stable identifiers that clients may match on; messages are for
//! people. No message ever carries a field value.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// The header that names the log entry of a logged response.
pub const LOG_INDEX_HEADER: &str = "sovereign-log-index";

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra members of the JSON body (`policies`, `field`, `reason`, …).
    pub extra: Map<String, Value>,
    /// The log entry of the decision this error reports, if one was logged.
    pub log_index: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
            log_index: None,
        }
    }

    /// Marks the error as the answer to a logged decision.
    pub fn logged(mut self, index: u64) -> Self {
        self.log_index = Some(index);
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A failure of the gateway itself. The detail goes to the service log; the client gets
    /// a generic message, since internal errors may name paths and the like.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the gateway failed to complete the request; nothing was changed",
        )
    }

    /// 403 for a policy denial, naming the determining policies.
    pub fn denied(message: impl Into<String>, policies: Vec<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "denied", message).with("policies", policies)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        body.extend(self.extra);
        let mut response = (self.status, axum::Json(Value::Object(body))).into_response();
        if let Some(index) = self.log_index {
            response
                .headers_mut()
                .insert(LOG_INDEX_HEADER, HeaderValue::from(index));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

impl From<vault::VaultError> for ApiError {
    fn from(e: vault::VaultError) -> Self {
        use vault::VaultError as V;
        let message = e.to_string();
        match e {
            V::InvalidId { .. } => ApiError::bad_request("invalid_id", message),
            V::UnknownCollection(name) => {
                ApiError::not_found("unknown_collection", message).with("collection", name)
            }
            V::UndeclaredField { field, .. } => {
                ApiError::bad_request("undeclared_field", message).with("field", field)
            }
            V::UnknownJurisdiction(_) => ApiError::bad_request("unknown_jurisdiction", message),
            V::NoResidencyRule(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_residency_rule",
                message,
            ),
            V::SubjectNotFound(_) => ApiError::not_found("subject_not_found", message),
            V::SubjectConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "subject_conflict", message)
            }
            V::ResidencyViolation { site, .. } => {
                ApiError::new(StatusCode::CONFLICT, "residency_violation", message)
                    .with("site", site)
            }
            V::Key(vault::KeyError::ReasonNotAllowed { .. }) => {
                ApiError::new(StatusCode::FORBIDDEN, "key_policy", message)
            }
            V::Key(vault::KeyError::NoDataKey { .. }) => {
                ApiError::new(StatusCode::GONE, "key_destroyed", message)
            }
            V::InvalidPage(_) => ApiError::bad_request("invalid_cursor", message),
            V::UnknownSite(_) | V::SameSite { .. } => {
                ApiError::bad_request("invalid_site", message)
            }
            other => ApiError::internal(other),
        }
    }
}
