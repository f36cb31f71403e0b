//! Every error leaves the gateway as JSON `{"error": CODE, "message": TEXT, ...}` with a
//! fitting status. Codes are stable identifiers that clients may match on; messages are for
//! people. No message ever carries a field value.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::http::vocab::LOG_INDEX_HEADER;

/// What handlers and the pipeline return.
pub type AppResult<T> = Result<T, ApiError>;

/// The error body every failing route answers with. Besides `error` and `message`, some
/// errors carry members of their own, listed here.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code, such as `denied`, `undeclared_field` or `unauthenticated`.
    error: String,
    /// What went wrong, for people.
    message: String,
    /// On a denial (403 `denied`, `purpose_required`, `approval_required`): the ids of the
    /// policies that decided it.
    #[serde(skip_serializing_if = "Option::is_none")]
    policies: Option<Vec<String>>,
    /// On 401 `unauthenticated`: why the token was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<UnauthenticatedReason>)]
    reason: Option<String>,
    /// On 400 `undeclared_field`: the field the collection does not declare.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// On 404 `unknown_collection`: the collection.
    #[serde(skip_serializing_if = "Option::is_none")]
    collection: Option<String>,
    /// On 409 `residency_violation`: the site that holds the subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<String>,
    /// On 422 `policy_not_proven`: the proof report, counterexamples included.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    proof: Option<Value>,
}

/// Why a bearer token was refused (`ErrorBody.reason` of a 401).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // documentation only: `auth.rs` writes these as strings
pub enum UnauthenticatedReason {
    Missing,
    Malformed,
    Expired,
    NotYetValid,
    UnknownIssuer,
    UnknownKey,
    UnsupportedAlgorithm,
    BadSignature,
    InvalidClaims,
}

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
