//! The OpenAPI document's shared parts: the bearer security scheme, the answers whole kinds
//! of operations share (added to every operation of the kind, so that each route's
//! annotation lists only what is particular to it), and the path and header parameters
//! several routes take. The routes themselves are registered with their descriptions in
//! `routes/mod.rs`, so the document and the router cannot drift.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::http::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sovereign",
        description = "Data-sovereignty gateway: residency-pinned vault with Cedar-decided access. Errors are JSON `ErrorBody` objects; the answers many routes share (401, 403 `unknown_entity`, 400 `invalid_path`, 413, 503) are added to every operation they apply to."
    ),
    modifiers(&BearerAuth),
        components(schemas(ErrorBody))
)]
pub struct ApiDoc;

pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The answers that whole kinds of operations share, added to each operation of the kind
/// (once every route is registered) so that the annotations list only what is particular
/// to a route. Where an operation documents the status already, its description gains the
/// shared one.
pub struct CommonResponses;

impl CommonResponses {
    /// Every operation: the request timeout, and the log on routes that write it.
    const UNAVAILABLE: &str = "`log_unavailable`: the transparency log cannot be written, so nothing was served or changed (routes that log); `custody_unverified`: the custody state failed its checks (custodian routes); `timeout`: the request took longer than `server.request_timeout_seconds`";
    /// Operations that need a bearer token.
    const UNAUTHENTICATED: &str = "`unauthenticated`: no valid bearer token; `reason` says why (`missing`, `malformed`, `expired`, `not_yet_valid`, `unknown_issuer`, `unknown_key`, `unsupported_algorithm`, `bad_signature`, `invalid_claims`)";
    const UNKNOWN_ENTITY: &str =
        "`unknown_entity`: the token's entity is not declared in the configuration";
    /// Operations with path parameters.
    const INVALID_PATH: &str = "`invalid_path`: a path parameter is not UTF-8 once percent-decoded";
    /// Operations with a request body.
    const BODY_TOO_LARGE: &str =
        "`body_too_large`: the body is larger than `server.body_limit_bytes` (1 MiB by default)";
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_path = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.parameter_in == ParameterIn::Path);
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                add_error(responses, 503, Self::UNAVAILABLE);
                if secured {
                    add_error(responses, 401, Self::UNAUTHENTICATED);
                    add_error(responses, 403, Self::UNKNOWN_ENTITY);
                }
                if has_path {
                    add_error(responses, 400, Self::INVALID_PATH);
                }
                if has_body {
                    add_error(responses, 413, Self::BODY_TOO_LARGE);
                }
            }
        }
    }
}

/// Documents `status` with an [`ErrorBody`], or adds `description` to the one documented.
fn add_error(
    responses: &mut std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::Response>,
    >,
    status: u16,
    description: &str,
) {
    match responses.get_mut(&status.to_string()) {
        Some(RefOr::T(response)) => {
            if !response.description.contains(description) {
                response.description = format!("{}. Also {description}", response.description);
            }
            if response.content.is_empty() {
                response.content.insert(
                    "application/json".into(),
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "ErrorBody",
                        ))))
                        .build(),
                );
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "ErrorBody",
                        ))))
                        .build(),
                )
                .build();
            responses.insert(status.to_string(), RefOr::T(response));
        }
    }
}

/// What subject ids and record keys look like (`vault::validate_id`), for schemas built in
/// code; the `#[param(...)]` attributes below spell it out, as they take only literals.
pub(crate) const ID_PATTERN: &str = r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,127}$";

/// A record as written: field name → value, at least one field (400 `empty_record`), each
/// declared by the collection (400 `undeclared_field`).
pub(crate) struct RecordFields;

impl utoipa::PartialSchema for RecordFields {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .description(Some(
                "field name → value, at least one; every field must be declared in the collection",
            ))
            .min_properties(Some(1))
            .examples([serde_json::json!({"email": "ada@example.com", "display_name": "Ada"})])
            .into()
    }
}

impl ToSchema for RecordFields {}

/// The subject id of a subject route.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // documentation only: the handlers take the path themselves
pub(crate) struct SubjectPath {
    /// Subject id: 1-128 of `A-Z a-z 0-9 . _ : -`, not starting with `.`.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,127}$",
        example = "u-1001"
    )]
    id: String,
}

/// The collection of a collection-wide route.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // documentation only: the handlers take the path themselves
pub(crate) struct CollectionPath {
    /// A configured collection (404 `unknown_collection` otherwise).
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = r"^[a-z][a-z0-9_-]{0,63}$",
        example = "profile"
    )]
    collection: String,
}

/// The key of a record (with [`SubjectPath`] and [`CollectionPath`], a record's path).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // documentation only: the handlers take the path themselves
pub(crate) struct KeyPath {
    /// Record key: 1-128 of `A-Z a-z 0-9 . _ : -`, not starting with `.`.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,127}$",
        example = "main"
    )]
    key: String,
}

/// The headers a data access may carry: claims about the request that the policy reads
/// (`context.purpose`, `context.reason_code`). Malformed ones are refused with 400
/// `invalid_header`.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documentation only: `access_context` reads the headers
pub(crate) struct AccessHeaders {
    /// Why this access is made: at most 256 bytes of printable ASCII (and tabs). The default
    /// policies require one for protected fields (403 `purpose_required` without).
    #[param(
        rename = "Sovereign-Purpose",
        required = false,
        max_length = 256,
        pattern = r"^[\t -~]*$",
        example = "support ticket 42"
    )]
    purpose: String,
    /// A reason code: at most 64 of lower-case letters, digits, `_` and `-`.
    #[param(
        rename = "Sovereign-Reason-Code",
        required = false,
        max_length = 64,
        pattern = r"^[a-z0-9_-]*$",
        example = "customer-initiated-support"
    )]
    reason_code: String,
}

/// Registers a route whose axum path cannot be the documented one (a wildcard), together
/// with the operation its `#[utoipa::path]` annotation (`P`) describes, so that it too is
/// never served undocumented.
pub fn route_documented<P: utoipa::Path, S: Clone + Send + Sync + 'static>(
    router: utoipa_axum::router::OpenApiRouter<S>,
    axum_path: &str,
    method_router: axum::routing::MethodRouter<S>,
) -> utoipa_axum::router::OpenApiRouter<S> {
    let mut router = router.route(axum_path, method_router);
    router
        .get_openapi_mut()
        .paths
        .add_path_operation(P::path(), P::methods(), P::operation());
    router
}
