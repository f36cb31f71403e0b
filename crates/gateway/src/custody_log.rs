//! The custodian's changes in force, checked against the transparency log. The custody store
//! verifies signatures and thresholds itself, but approvers' names, proofs and log indices are
//! plain data there: whoever can write the store could invent a grant with two made-up
//! approvers, or take the `revoked` mark off one. The log cannot be rewritten unnoticed, so
//! each change in force must be the very event the log recorded at the record's `log_index`:
//! an activation of exactly that set, a kill-switch command of exactly that jurisdiction and
//! serial, an approval that granted exactly that request. A set's text must also hash to the
//! hash the custodian signed (hashes the custody crate cannot compute itself).

use std::sync::Arc;

use custody::InForce;
use serde_json::Value;

/// How long a custody record's log entry may take to reach this gateway's view of a shared
/// log (which each gateway takes up every 100 ms) before the record counts as not borne out.
const ENTRY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads custody entries from the log for [`custody::Custody::open_with_ledger`].
pub struct LogLedger {
    log: Arc<logstore::Log>,
}

impl LogLedger {
    pub fn new(log: Arc<logstore::Log>) -> LogLedger {
        LogLedger { log }
    }

    /// The custody entry at `index`: its event and details.
    fn custody_entry(&self, index: Option<u64>) -> Result<(String, Value), String> {
        let index = index.ok_or("it has no log index")?;
        let bytes = self
            .log
            // Another gateway's change may name an entry this gateway has not taken up yet.
            .entry_within(index, ENTRY_WAIT)
            .map_err(|e| format!("log entry {index} cannot be read: {e}"))?
            .ok_or_else(|| format!("the log has no entry {index}"))?;
        let entry: Value =
            serde_json::from_slice(&bytes).map_err(|_| format!("log entry {index} is not JSON"))?;
        if entry["kind"] != "custody" {
            return Err(format!("log entry {index} is not a custody entry"));
        }
        let event = entry["event"].as_str().unwrap_or_default().to_string();
        Ok((event, entry["details"].clone()))
    }
}

/// The custody crate verifies signatures over a set's hash but cannot compute Cedar's or the
/// prover's hash of its text: a set whose text was changed after the custodian signed it.
fn text_matches_hash(change: InForce<'_>) -> Result<(), String> {
    let (what, stored, computed) = match change {
        InForce::PolicySet(set) => (
            "policy set",
            &set.hash,
            policy::policy_set_hash(&set.schema, &set.policies),
        ),
        InForce::InvariantSet(set) => (
            "invariant set",
            &set.hash,
            prove::Invariants::parse(&set.text)
                .map_err(|e| format!("its text does not parse: {e}"))?
                .hash()
                .to_string(),
        ),
        _ => return Ok(()),
    };
    if *stored != computed {
        return Err(format!(
            "the {what}'s text hashes to {computed}: it was changed after the custodian signed it"
        ));
    }
    Ok(())
}

impl custody::Ledger for LogLedger {
    fn check(&self, change: InForce<'_>) -> Result<(), String> {
        text_matches_hash(change)?;
        let (index, expected, (event, details)) = match change {
            InForce::PolicySet(set) => (
                set.log_index,
                vec![(
                    "policy-activated",
                    vec![("policy_set", Value::from(set.hash.as_str()))],
                )],
                self.custody_entry(set.log_index)?,
            ),
            InForce::InvariantSet(set) => (
                set.log_index,
                vec![(
                    "invariants-activated",
                    vec![("invariant_set", Value::from(set.hash.as_str()))],
                )],
                self.custody_entry(set.log_index)?,
            ),
            InForce::Suspension(s) => (
                s.log_index,
                vec![(
                    if s.suspended {
                        "jurisdiction-suspended"
                    } else {
                        "jurisdiction-lifted"
                    },
                    vec![
                        ("jurisdiction", Value::from(s.jurisdiction.as_str())),
                        ("serial", Value::from(s.serial)),
                    ],
                )],
                self.custody_entry(s.log_index)?,
            ),
            InForce::Release(r) => (
                r.log_index,
                vec![(
                    "algorithm-activated",
                    vec![
                        ("name", Value::from(r.name.as_str())),
                        ("version", Value::from(r.version.as_str())),
                        ("sha256", Value::from(r.sha256.as_str())),
                        ("manifest_sha256", Value::from(r.manifest_sha256.clone())),
                    ],
                )],
                self.custody_entry(r.log_index)?,
            ),
            InForce::Grant(request) => {
                let id = || vec![("id", Value::from(request.id.as_str()))];
                let mut granted = id();
                granted.push(("granted", Value::from(true)));
                // The last write of a grant: its granting approval (or break-glass start or
                // review), or its revocation.
                let events = match request.kind {
                    custody::RequestKind::Request => vec![
                        ("access-request-approved", granted),
                        ("grant-revoked", id()),
                    ],
                    custody::RequestKind::BreakGlass => vec![
                        ("break-glass-started", id()),
                        ("break-glass-reviewed", id()),
                        ("grant-revoked", id()),
                    ],
                };
                (
                    request.log_index,
                    events,
                    self.custody_entry(request.log_index)?,
                )
            }
        };
        let index = index.unwrap_or_default();
        let Some((_, members)) = expected.iter().find(|(name, _)| *name == event) else {
            let names: Vec<&str> = expected.iter().map(|(name, _)| *name).collect();
            return Err(format!(
                "log entry {index} is a `{event}` event, not {}",
                names.join(" or ")
            ));
        };
        for (member, value) in members {
            if &details[*member] != value {
                return Err(format!(
                    "log entry {index} ({event}) has {member} {}, not {value}",
                    details[*member]
                ));
            }
        }
        Ok(())
    }
}
