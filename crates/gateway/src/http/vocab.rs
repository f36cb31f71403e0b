//! The names routes and clients share: roles that routes check themselves (custodian routes,
//! which change the policy and so are not guarded by it; data subjects; monitors) and the
//! headers of the API.

/// Approves and denies access requests; sees every request and the dashboard.
pub const ROLE_APPROVER: &str = "custodian-approver";
/// May open emergency access, reviewed afterwards.
pub const ROLE_BREAK_GLASS: &str = "break-glass";
/// Proposes policies and invariants, activates what the custodian signed, runs the kill switch.
pub const ROLE_OPERATOR: &str = "custodian-operator";
/// Submits algorithm artifacts for the custodian's release.
pub const ROLE_ALGORITHM_AUTHOR: &str = "algorithm-author";
/// The global platform's consumer of interoperable data.
pub const ROLE_EGRESS: &str = "egress";
/// The role a data subject's own token carries.
pub const ROLE_DATA_SUBJECT: &str = "data-subject";
/// Watches the dashboard and the analytics stream.
pub const ROLE_MONITOR: &str = "monitor";

/// The header that states the purpose of an access.
pub const PURPOSE_HEADER: &str = "sovereign-purpose";
/// The header that gives a reason code for an access.
pub const REASON_HEADER: &str = "sovereign-reason-code";
/// The header that names the log entry of a logged response.
pub const LOG_INDEX_HEADER: &str = "sovereign-log-index";
/// The header naming the cursor to resume an egress from.
pub const CURSOR_HEADER: &str = "sovereign-cursor";
/// The header carrying an algorithm artifact's SHA-256.
pub const SHA256_HEADER: &str = "sovereign-sha256";
