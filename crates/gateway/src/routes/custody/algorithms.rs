//! Algorithm releases: artifacts submitted by their authors, released by the custodian's
//! signature, activated, and fetched re-hashed.

use super::*;

/// The routes of this module.
pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(submit_algorithm))
        .routes(routes!(list_algorithms))
        .routes(routes!(active_algorithms))
        .routes(routes!(activate_algorithm))
        .routes(routes!(attach_manifest))
        .routes(routes!(deactivate_algorithm))
        .routes(routes!(fetch_algorithm))
}

/// An algorithm release.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct ReleasePath {
    /// The algorithm's name: 1-64 of `A-Z a-z 0-9 . _ -`.
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9._-]+$",
        example = "ranker"
    )]
    name: String,
    /// Its version: 1-64 of `A-Z a-z 0-9 . _ -`.
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9._-]+$",
        example = "1.0.0"
    )]
    version: String,
}

/// A release's state.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum ReleaseStatus {
    Submitted,
    Active,
    Retired,
}

/// An algorithm release.
#[derive(Serialize, ToSchema)]
struct ReleaseBody {
    name: String,
    version: String,
    sha256: String,
    size: u64,
    /// The SHA-256 of its manifest, which the custodian's statement names (none: it was
    /// released as an opaque artifact, and cannot run).
    manifest_sha256: Option<String>,
    /// Its manifest: what it reads and outputs, its purpose and limits.
    #[schema(value_type = Option<Object>)]
    manifest: Option<serde_json::Value>,
    #[schema(value_type = ReleaseStatus)]
    status: &'static str,
    submitted_by: PersonBody,
    submitted_at: String,
    activated_at: Option<String>,
    signers: Vec<String>,
    /// The signed release statement (active releases, and activation's answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
    /// The statement to sign (submission's answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    statement: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct Releases {
    releases: Vec<ReleaseBody>,
}

impl ReleaseBody {
    /// A release as listed; `with_signature` adds the custodian's signed statement.
    fn new(r: &custody::Release, with_signature: bool) -> Self {
        ReleaseBody {
            name: r.name.clone(),
            version: r.version.clone(),
            sha256: r.sha256.clone(),
            size: r.size,
            manifest_sha256: r.manifest_sha256.clone(),
            manifest: r
                .manifest
                .as_deref()
                .and_then(|m| serde_json::from_str(m).ok()),
            status: r.status(),
            submitted_by: PersonBody::new(&r.submitted_by),
            submitted_at: rfc3339(r.submitted_at),
            activated_at: r.activated_at.map(rfc3339),
            signers: r.signers.clone(),
            signature: if with_signature {
                r.signature.clone()
            } else {
                None
            },
            statement: None,
        }
    }
}

/// Submits an algorithm artifact (the raw bytes). It is stored under its SHA-256 and runs
/// nowhere until the custodian signs its release.
#[utoipa::path(post, path = "/v1/algorithms/{name}/{version}", tag = "custody",
    params(ReleasePath),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the artifact"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "stored: its digest and the statement to sign", body = ReleaseBody),
        (status = 200, description = "the identical artifact was already stored", body = ReleaseBody),
        (status = 400, description = "`invalid_request`: the name or version is not 1-64 of `A-Z a-z 0-9 . _ -`", body = ErrorBody),
        (status = 403, description = "`role_required` (algorithm-author or custodian-operator), `restricted_location`", body = ErrorBody),
        (status = 409, description = "`version_exists` with other bytes", body = ErrorBody),
        (status = 413, description = "`body_too_large`: larger than custody.max_artifact_bytes", body = ErrorBody),
    ))]
async fn submit_algorithm(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath((name, version)): ApiPath<(String, String)>,
    body: Body,
) -> AppResult<Response> {
    app.custodian(&who, &[ROLE_ALGORITHM_AUTHOR, ROLE_OPERATOR])?;
    custody::check_release_name("name", &name)?;
    custody::check_release_name("version", &version)?;
    // Artifacts have their own limit, larger than the API's body limit.
    let limit = app.config.custody.max_artifact_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            format!("the artifact is larger than custody.max_artifact_bytes ({limit} bytes), or the upload broke off"),
        )
    })?;
    let now = now_unix();
    let (release, index) = change(app, who, move |app, who| {
        app.custody.submit_algorithm(
            &name,
            &version,
            &bytes,
            &person(who),
            now,
            &app.log_custody(Some(who)),
        )
    })
    .await?;
    let body = ReleaseBody {
        statement: Some(release.statement().text()),
        ..ReleaseBody::new(&release, false)
    };
    Ok(created_or_known(index, body))
}

/// Attaches the manifest to a submitted release, before the custodian signs it: name,
/// version and the module's SHA-256 as submitted, the purpose, the fields read, the typed
/// and size-bounded outputs (all interoperable), the limits. Only a release with a manifest
/// runs; the statement to sign then names the manifest's digest too.
#[utoipa::path(put, path = "/v1/algorithms/{name}/{version}/manifest", tag = "custody",
    params(ReleasePath),
    request_body(content = Object, content_type = "application/json", description = "the manifest (`examples/algorithms/README.md`)"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "attached: the statement to sign", body = ReleaseBody),
        (status = 200, description = "the same manifest was attached already", body = ReleaseBody),
        (status = 400, description = "`invalid_manifest`: not a manifest of this release, or it reads a field the configuration does not declare; `invalid_request`: the release has another manifest or was activated", body = ErrorBody),
        (status = 403, description = "`role_required` (algorithm-author or custodian-operator), `restricted_location`", body = ErrorBody),
        (status = 404, description = "`unknown_release`", body = ErrorBody),
    ))]
async fn attach_manifest(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath((name, version)): ApiPath<(String, String)>,
    RawBody(body): RawBody,
) -> AppResult<Response> {
    app.custodian(&who, &[ROLE_ALGORITHM_AUTHOR, ROLE_OPERATOR])?;
    let text = String::from_utf8(body.to_vec()).map_err(|_| invalid_manifest("not UTF-8"))?;
    let manifest = algorithm::Manifest::parse(text.as_bytes())
        .map_err(|e| invalid_manifest(&e.to_string()))?;
    let release = app.custody.release(&name, &version)?;
    if manifest.name != name || manifest.version != version {
        return Err(invalid_manifest(&format!(
            "it is the manifest of {} {}, not of {name} {version}",
            manifest.name, manifest.version
        )));
    }
    if manifest.module_sha256 != release.sha256 {
        return Err(invalid_manifest(&format!(
            "it names the module {}, but {name} {version} was submitted as {}",
            manifest.module_sha256, release.sha256
        )));
    }
    crate::algorithms::check_reads(&app.config, &manifest).map_err(|e| invalid_manifest(&e))?;
    let (release, index) = change(app, who, move |app, who| {
        app.custody
            .attach_manifest(&name, &version, &text, &app.log_custody(Some(who)))
    })
    .await?;
    let body = ReleaseBody {
        statement: Some(release.statement().text()),
        ..ReleaseBody::new(&release, false)
    };
    Ok(created_or_known(index, body))
}

fn invalid_manifest(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidManifest,
        format!("invalid manifest: {why}"),
    )
}

/// Deactivates an active release: from this change on it runs no more. The custodian's
/// operator stops an algorithm without a signature; running it again needs a new signed
/// activation.
#[utoipa::path(post, path = "/v1/algorithms/{name}/{version}/deactivate", tag = "custody",
    params(ReleasePath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "deactivated (status `retired`)", body = ReleaseBody),
        (status = 400, description = "`invalid_request`: the release is not active", body = ErrorBody),
        (status = 403, description = "`role_required` (custodian-operator), `restricted_location`", body = ErrorBody),
        (status = 404, description = "`unknown_release`", body = ErrorBody),
    ))]
async fn deactivate_algorithm(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> AppResult<Logged<ReleaseBody>> {
    app.custodian(&who, &[ROLE_OPERATOR])?;
    let now = now_unix();
    let (release, index) = change(app, who, move |app, who| {
        app.custody
            .deactivate_algorithm(&name, &version, now, &app.log_custody(Some(who)))
    })
    .await?;
    Ok(Logged::ok(index, ReleaseBody::new(&release, false)))
}

/// Every algorithm version submitted.
#[utoipa::path(get, path = "/v1/algorithms", tag = "custody",
    responses((status = 200, description = "the releases", body = Releases)))]
async fn list_algorithms(State(app): Shared) -> Json<Releases> {
    let releases = app
        .custody
        .releases()
        .iter()
        .map(|r| ReleaseBody::new(r, false))
        .collect();
    Json(Releases { releases })
}

/// The active releases with the custodian's signed statements, for monitors.
#[utoipa::path(get, path = "/v1/algorithms/active", tag = "custody",
    responses((status = 200, description = "the active releases, with their signed statements", body = Releases)))]
async fn active_algorithms(State(app): Shared) -> Json<Releases> {
    let releases = app
        .custody
        .active_releases()
        .iter()
        .map(|r| ReleaseBody::new(r, true))
        .collect();
    Json(Releases { releases })
}

/// Activates a release. The body is the custodian's signed statement naming exactly this
/// name, version and digest; the stored artifact is re-hashed first.
#[utoipa::path(post, path = "/v1/algorithms/{name}/{version}/activate", tag = "custody",
    params(ReleasePath),
    request_body(content = String, content_type = "text/plain", description = "the signed statement (signed note)"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "active", body = ReleaseBody),
        (status = 400, description = "`invalid_signature` (not a valid signed statement for this release, or an empty body), `invalid_body`", body = ErrorBody),
        (status = 403, description = "`role_required` (custodian-operator), `restricted_location`, `threshold_not_met` (not enough custodian signatures)", body = ErrorBody),
        (status = 404, description = "`unknown_release`", body = ErrorBody),
        (status = 409, description = "`digest_mismatch`: the stored artifact no longer matches its digest", body = ErrorBody),
    ))]
async fn activate_algorithm(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath((name, version)): ApiPath<(String, String)>,
    RawBody(body): RawBody,
) -> AppResult<Logged<ReleaseBody>> {
    app.custodian(&who, &[ROLE_OPERATOR])?;
    let signed = note_body(body)?;
    let now = now_unix();
    let (release, index) = change(app, who, move |app, who| {
        app.custody
            .activate_algorithm(&name, &version, &signed, now, &app.log_custody(Some(who)))
    })
    .await?;
    Ok(Logged::ok(index, ReleaseBody::new(&release, true)))
}

/// An artifact's bytes, served only after they are checked against the recorded digest.
#[utoipa::path(get, path = "/v1/algorithms/{name}/{version}/artifact", tag = "custody",
    params(ReleasePath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the artifact; header Sovereign-Sha256 gives its digest", content_type = "application/octet-stream"),
        (status = 403, description = "`restricted_location`", body = ErrorBody),
        (status = 404, description = "`unknown_release`", body = ErrorBody),
        (status = 500, description = "`artifact_corrupt`: the stored artifact does not match its digest, so it is not served", body = ErrorBody),
    ))]
async fn fetch_algorithm(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> AppResult<Response> {
    app.custodian(&who, &[])?;
    let (release, bytes, index) = change(app, who, move |app, who| {
        app.custody
            .fetch_algorithm(&name, &version, &app.log_custody(Some(who)))
    })
    .await
    .map_err(|e| {
        if e.code == ErrorCode::DigestMismatch {
            tracing::error!("an algorithm artifact does not match its digest; not served");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::ArtifactCorrupt,
                e.message,
            )
        } else {
            e
        }
    })?;
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        SHA256_HEADER,
        HeaderValue::from_str(&release.sha256).expect("hex is a valid header value"),
    );
    headers.insert(LOG_INDEX_HEADER, HeaderValue::from(index));
    Ok(response)
}
