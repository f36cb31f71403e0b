//! The kill switch: suspending and restoring a jurisdiction's data, by signed command.

use super::*;

/// The routes of this module.
pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(kill_switch_status, apply_kill_switch))
}

/// The kill switch's state for one jurisdiction.
#[derive(Serialize, ToSchema)]
struct JurisdictionState {
    jurisdiction: String,
    suspended: bool,
    /// The serial of the last command applied (0: none).
    serial: u64,
    /// When it was applied, RFC 3339.
    since: Option<String>,
    signers: Vec<String>,
}

#[derive(Serialize, ToSchema)]
struct KillSwitchState {
    jurisdictions: Vec<JurisdictionState>,
}

impl KillSwitchState {
    /// The state now, for every configured jurisdiction.
    fn now(app: &AppState) -> Self {
        let suspensions = app.custody.suspensions();
        let jurisdictions = app
            .config
            .jurisdictions
            .iter()
            .map(
                |j| match suspensions.iter().find(|s| &s.jurisdiction == j) {
                    Some(s) => JurisdictionState {
                        jurisdiction: j.clone(),
                        suspended: s.suspended,
                        serial: s.serial,
                        since: Some(rfc3339(s.since)),
                        signers: s.signers.clone(),
                    },
                    None => JurisdictionState {
                        jurisdiction: j.clone(),
                        suspended: false,
                        serial: 0,
                        since: None,
                        signers: Vec::new(),
                    },
                },
            )
            .collect();
        KillSwitchState { jurisdictions }
    }
}

/// The kill switch's state for every jurisdiction.
#[utoipa::path(get, path = "/v1/kill-switch", tag = "custody",
    responses((status = 200, description = "per jurisdiction: suspended or not, the last serial", body = KillSwitchState)))]
async fn kill_switch_status(State(app): Shared) -> Json<KillSwitchState> {
    Json(KillSwitchState::now(&app))
}

/// Applies a signed kill-switch command: suspend or lift all access to one jurisdiction's
/// data. Its serial must be above the last one applied, so old commands cannot be replayed.
#[utoipa::path(post, path = "/v1/kill-switch", tag = "custody",
    request_body(content = String, content_type = "text/plain", description = "the signed statement (signed note)"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "applied; the new state", body = KillSwitchState),
        (status = 400, description = "`invalid_signature` (not a valid signed kill-switch command for a configured jurisdiction, or an empty body), `invalid_body`", body = ErrorBody),
        (status = 403, description = "`role_required` (custodian-operator), `restricted_location`, `threshold_not_met` (not enough custodian signatures)", body = ErrorBody),
        (status = 409, description = "`stale_serial`: not above the last serial applied", body = ErrorBody),
    ))]
async fn apply_kill_switch(
    State(app): Shared,
    Caller(who): Caller,
    RawBody(body): RawBody,
) -> AppResult<Logged<KillSwitchState>> {
    app.custodian(&who, &[ROLE_OPERATOR])?;
    let signed = note_body(body)?;
    let now = now_unix();
    let (suspension, index) = change(app.clone(), who, move |app, who| {
        app.custody.apply_kill_switch(
            &signed,
            |j| app.config.jurisdictions.contains(j),
            now,
            &app.log_custody(Some(who)),
        )
    })
    .await?;
    tracing::warn!(
        jurisdiction = %suspension.jurisdiction,
        suspended = suspension.suspended,
        serial = suspension.serial,
        "kill switch applied"
    );
    Ok(Logged::ok(index, KillSwitchState::now(&app)))
}
