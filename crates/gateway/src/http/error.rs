//! Every error leaves the gateway as JSON `{"error": CODE, "message": TEXT, ...}` with a
//! fitting status. Codes are stable identifiers that clients may match on; messages are for
//! people. No message ever carries a field value.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::http::vocab::LOG_INDEX_HEADER;

/// Every error code the API answers with: stable identifiers clients may match on. The
/// OpenAPI document lists them as the values of `ErrorBody.error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// This approver has approved the request already.
    AlreadyApproved,
    /// The break-glass use has been reviewed already.
    AlreadyReviewed,
    /// A released algorithm failed: it reached a limit of its manifest (fuel, memory, wall
    /// time), trapped, or wrote an output its manifest does not allow; nothing of it is served.
    AlgorithmFailed,
    /// This gateway runs no algorithms (`algorithms.location` is not set).
    AlgorithmsNotConfigured,
    /// The policy needs an approved access request for this access.
    ApprovalRequired,
    /// A stored algorithm artifact does not match its digest, so it is not served.
    ArtifactCorrupt,
    /// The body is larger than `server.body_limit_bytes`.
    BodyTooLarge,
    /// Another gateway of the fleet changed the custody state at the same moment; nothing
    /// was changed: try again.
    ConcurrentChange,
    /// No checkpoint has the witnesses' quorum of cosignatures yet.
    CheckpointUnwitnessed,
    /// The custody store cannot be reached, or was not reached lately.
    CustodyUnreachable,
    /// The custody state failed its own checks.
    CustodyUnverified,
    /// Denied by policy (the body names the determining `policies`).
    Denied,
    /// An artifact does not match the digest it was submitted or signed with.
    DigestMismatch,
    /// A record must hold at least one field.
    EmptyRecord,
    /// A subject's history cannot be answered yet: the log has no checkpoint, or the index
    /// of its entries by subject is still being built (the message says how far; retry).
    HistoryUnavailable,
    /// The gateway failed; nothing was changed.
    Internal,
    /// The body is JSON but not of the expected shape.
    InvalidBody,
    /// An egress cursor that this gateway did not seal, or altered.
    InvalidCursor,
    /// A malformed `Sovereign-Purpose` or `Sovereign-Reason-Code`.
    InvalidHeader,
    /// A subject id or record key outside the allowed alphabet or length.
    InvalidId,
    /// Invariants that do not parse or check against the schema.
    InvalidInvariants,
    /// An algorithm manifest that does not parse, or is not of its release.
    InvalidManifest,
    /// The body is not JSON.
    InvalidJson,
    /// A path parameter does not decode.
    InvalidPath,
    /// A policy set that does not validate against the schema.
    InvalidPolicy,
    /// An unknown or malformed query parameter.
    InvalidQuery,
    /// An access request the custody rules refuse.
    InvalidRequest,
    /// A signed statement that is empty, malformed, or not over this change.
    InvalidSignature,
    /// An unknown site, or the site the subject is at already.
    InvalidSite,
    /// Not a C2SP tlog-tiles path.
    InvalidTilePath,
    /// The subject's data key at this site was destroyed.
    KeyDestroyed,
    /// The custodian's key policy does not allow the unwrap.
    KeyPolicy,
    /// The transparency log cannot be written; nothing was served or changed.
    LogUnavailable,
    /// The route does not accept that method.
    MethodNotAllowed,
    /// The jurisdiction has no residency rule.
    NoResidencyRule,
    /// No such route.
    NoRoute,
    /// The release is not active.
    NotActive,
    /// The field is not an interoperable field of the collection.
    NotInteroperable,
    /// The request is no longer pending.
    NotPending,
    /// A proof asked for outside the signed tree.
    OutOfRange,
    /// The policy set does not provably keep the invariants (the body holds the `proof` report).
    PolicyNotProven,
    /// The policy needs a stated purpose (`Sovereign-Purpose`).
    PurposeRequired,
    /// The subject has no such record.
    RecordNotFound,
    /// The subject is held at a site its residency rule does not allow.
    ResidencyViolation,
    /// The caller is located in a restricted country.
    RestrictedLocation,
    /// The caller lacks the role the route needs.
    RoleRequired,
    /// An approver of the requester's own entity.
    SameEntity,
    /// Nobody approves their own request.
    SelfApproval,
    /// The solver that proves policy sets cannot run.
    SolverUnavailable,
    /// A kill-switch command older than the one in force.
    StaleSerial,
    /// Registered already with another jurisdiction.
    SubjectConflict,
    /// No such subject.
    SubjectNotFound,
    /// The subject's jurisdiction is suspended by the kill switch.
    Suspended,
    /// Fewer custodian signatures than the threshold.
    ThresholdNotMet,
    /// Not in the log (yet).
    TileNotFound,
    /// The request took longer than `server.request_timeout_seconds`.
    Timeout,
    /// No valid bearer token (`reason` says why).
    Unauthenticated,
    /// A field the collection does not declare (named in `field`).
    UndeclaredField,
    /// A collection the configuration does not declare.
    UnknownCollection,
    /// The token's entity is not declared in the configuration.
    UnknownEntity,
    /// No such invariant set.
    UnknownInvariantSet,
    /// A jurisdiction the configuration does not declare.
    UnknownJurisdiction,
    /// No such policy set.
    UnknownPolicySet,
    /// No such algorithm release.
    UnknownRelease,
    /// No such access request.
    UnknownRequest,
    /// A site the configuration does not declare.
    UnknownSite,
    /// That algorithm version was submitted already.
    VersionExists,
    /// An access request where a break-glass use was meant, or the reverse.
    WrongKind,
}

/// What handlers and the pipeline return.
pub type AppResult<T> = Result<T, ApiError>;

/// The error body every failing route answers with. Besides `error` and `message`, some
/// errors carry members of their own, listed here.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code, such as `denied`, `undeclared_field` or `unauthenticated`.
    error: ErrorCode,
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
    pub code: ErrorCode,
    pub message: String,
    /// Extra members of the JSON body (`policies`, `field`, `reason`, …).
    pub extra: Map<String, Value>,
    /// The log entry of the decision this error reports, if one was logged.
    pub log_index: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
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

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A failure of the gateway itself. The detail goes to the service log; the client gets
    /// a generic message, since internal errors may name paths and the like.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "the gateway failed to complete the request; nothing was changed",
        )
    }

    /// 503 when the custody store cannot be reached (or was not lately): nothing that needs
    /// a custody answer (the kill switch, a grant, a custodian change) is decided.
    pub fn custody_unreachable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::CustodyUnreachable,
            "the custody store cannot be reached; nothing was decided or changed",
        )
    }

    /// 403 for a policy denial, naming the determining policies.
    pub fn denied(message: impl Into<String>, policies: Vec<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Denied, message).with("policies", policies)
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
            V::InvalidId { .. } => ApiError::bad_request(ErrorCode::InvalidId, message),
            V::UnknownCollection(name) => {
                ApiError::not_found(ErrorCode::UnknownCollection, message).with("collection", name)
            }
            V::UndeclaredField { field, .. } => {
                ApiError::bad_request(ErrorCode::UndeclaredField, message).with("field", field)
            }
            V::UnknownJurisdiction(_) => {
                ApiError::bad_request(ErrorCode::UnknownJurisdiction, message)
            }
            V::NoResidencyRule(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::NoResidencyRule,
                message,
            ),
            V::SubjectNotFound(_) => ApiError::not_found(ErrorCode::SubjectNotFound, message),
            V::SubjectConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::SubjectConflict, message)
            }
            V::ResidencyViolation { site, .. } => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::ResidencyViolation, message)
                    .with("site", site)
            }
            V::Key(vault::KeyError::ReasonNotAllowed { .. }) => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::KeyPolicy, message)
            }
            V::Key(vault::KeyError::NoDataKey { .. }) => {
                ApiError::new(StatusCode::GONE, ErrorCode::KeyDestroyed, message)
            }
            V::InvalidPage(_) => ApiError::bad_request(ErrorCode::InvalidCursor, message),
            V::UnknownSite(_) | V::SameSite { .. } => {
                ApiError::bad_request(ErrorCode::InvalidSite, message)
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<custody::CustodyError> for ApiError {
    fn from(e: custody::CustodyError) -> ApiError {
        use custody::CustodyError as E;
        let message = e.to_string();
        let (status, code) = match &e {
            E::UnknownRequest(_) => (StatusCode::NOT_FOUND, ErrorCode::UnknownRequest),
            E::UnknownPolicySet(_) => (StatusCode::NOT_FOUND, ErrorCode::UnknownPolicySet),
            E::UnknownInvariantSet(_) => (StatusCode::NOT_FOUND, ErrorCode::UnknownInvariantSet),
            E::UnknownRelease { .. } => (StatusCode::NOT_FOUND, ErrorCode::UnknownRelease),
            E::NotPending { .. } => (StatusCode::CONFLICT, ErrorCode::NotPending),
            E::NotActive { .. } => (StatusCode::CONFLICT, ErrorCode::NotActive),
            E::NotARequest(_) | E::NotBreakGlass(_) => (StatusCode::CONFLICT, ErrorCode::WrongKind),
            E::AlreadyReviewed(_) => (StatusCode::CONFLICT, ErrorCode::AlreadyReviewed),
            E::AlreadyApproved(_) => (StatusCode::CONFLICT, ErrorCode::AlreadyApproved),
            E::SelfApproval => (StatusCode::FORBIDDEN, ErrorCode::SelfApproval),
            E::SameEntity(_) => (StatusCode::FORBIDDEN, ErrorCode::SameEntity),
            E::Invalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest),
            E::VersionExists { .. } => (StatusCode::CONFLICT, ErrorCode::VersionExists),
            E::DigestMismatch { .. } => (StatusCode::CONFLICT, ErrorCode::DigestMismatch),
            E::WrongStatement(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidSignature),
            E::NotProven(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::PolicyNotProven),
            E::Statement(custody::statement::StatementError::ThresholdNotMet { .. }) => {
                (StatusCode::FORBIDDEN, ErrorCode::ThresholdNotMet)
            }
            E::Statement(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidSignature),
            E::StaleSerial { .. } => (StatusCode::CONFLICT, ErrorCode::StaleSerial),
            E::Conflict => (StatusCode::CONFLICT, ErrorCode::ConcurrentChange),
            E::LogUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::LogUnavailable),
            E::FleetMismatch(_) => return ApiError::internal(message),
            E::Store { .. } => {
                tracing::error!(error = %message, "cannot use the custody store");
                return ApiError::custody_unreachable();
            }
            // The stored custody state failed its own checks: nothing can be decided on it.
            E::Unverified { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::CustodyUnverified,
            ),
        };
        ApiError::new(status, code, message)
    }
}
