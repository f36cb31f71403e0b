//! The vault's errors and the id rule.
//!
//! Every message is a sentence a user can act on. None carries a record's field values: they
//! are protected personal data. Ids and names are fine.

use crate::domain::Migration;
use crate::keys::KeyError;
use crate::layout::LayoutProblem;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("invalid configuration: {}", list_problems(.0))]
    InvalidLayout(Vec<LayoutProblem>),

    /// `kind` names what was wrong ("subject id", "record key"); `reason` says why and what
    /// is allowed. The value itself is not repeated: it may be anything a client sent.
    #[error("invalid {kind}: {reason}")]
    InvalidId { kind: String, reason: String },

    #[error(
        "collection `{0}` is not declared: declare it under `collections.{0}` in the configuration"
    )]
    UnknownCollection(String),

    #[error("field `{field}` is not declared in collection `{collection}`")]
    UndeclaredField { collection: String, field: String },

    #[error("jurisdiction `{0}` is not declared: add it to `jurisdictions` in the configuration")]
    UnknownJurisdiction(String),

    #[error("no residency rule for jurisdiction `{0}`: add `residency.{0}` to the configuration")]
    NoResidencyRule(String),

    #[error("subject `{0}` is not registered: register it with its jurisdiction first")]
    SubjectNotFound(String),

    #[error(
        "subject `{id}` is already registered with jurisdiction `{existing}`, not `{requested}`: \
         a subject's jurisdiction cannot be changed by registering it again"
    )]
    SubjectConflict {
        id: String,
        existing: String,
        requested: String,
    },

    #[error(
        "subject `{subject}` of jurisdiction `{jurisdiction}` is held at site `{site}`, which the \
         residency rule for `{jurisdiction}` does not allow, so nothing was written: migrate the \
         subject to an allowed site first"
    )]
    ResidencyViolation {
        subject: String,
        site: String,
        jurisdiction: String,
    },

    #[error("site `{0}` is not declared: use one of the sites under `sites` in the configuration")]
    UnknownSite(String),

    /// Protected fields are stored encrypted, and this vault was opened without the
    /// custodian's keys.
    #[error(
        "protected fields need the custodian's key store: open the vault with an envelope (the \
         custodian's key manager and data key store) to write or read them"
    )]
    NoKeys,

    /// A data key could not be had (refused reason, destroyed key, wrong key file) or a
    /// protected value did not decrypt.
    #[error(transparent)]
    Key(#[from] KeyError),

    /// A malformed or foreign cursor, or a page size out of range.
    #[error("invalid page request: {0}")]
    InvalidPage(String),

    #[error(
        "subject `{subject}` is already held at site `{site}`: legacy data can only be seeded \
         for a subject held nowhere else"
    )]
    AlreadyHeld { subject: String, site: String },

    #[error(
        "subject `{subject}` cannot be migrated from site `{site}` to the same site: name another \
         site its residency rule allows"
    )]
    SameSite { subject: String, site: String },

    /// The copy read back at the destination is not what was read at the source; the source
    /// was left untouched. Carries the migration as far as it got, with both digests.
    #[error(
        "migration of subject `{}` from `{}` to `{}` stopped: the copy read back at `{}` (digest \
         {}) differs from the source (digest {}); the source was not changed, so check the \
         destination store and run the migration again",
        .0.subject, .0.from, .0.to, .0.to, .0.destination_digest, .0.source_digest
    )]
    MigrationMismatch(Box<Migration>),

    #[error(transparent)]
    Store(#[from] StoreError),
}

fn list_problems(problems: &[LayoutProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

const MAX_ID_LEN: usize = 128;
const ID_RULE: &str =
    "use 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-', not starting with '.'";

/// Checks a subject id or record key: 1 to 128 characters of `[A-Za-z0-9._:-]`, not starting
/// with `.`. Ids end up in URLs, log entries and file-like keys, so they are kept plain.
/// `kind` names the id in the error ("subject id", "record key").
pub fn validate_id(kind: &str, value: &str) -> Result<(), VaultError> {
    let invalid = |why: String| {
        Err(VaultError::InvalidId {
            kind: kind.to_string(),
            reason: format!("{why}; {ID_RULE}"),
        })
    };
    if value.is_empty() {
        return invalid("it is empty".into());
    }
    let len = value.chars().count();
    if len > MAX_ID_LEN {
        return invalid(format!("it has {len} characters"));
    }
    if value.starts_with('.') {
        return invalid("it starts with '.'".into());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if let Some(position) = value.chars().position(|c| !allowed(c)) {
        return invalid(format!("character {} is not allowed", position + 1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["a", "user-1", "A.b_c:d-e", "0", &"x".repeat(128)] {
            assert!(validate_id("subject id", good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "ü", "a\n", &"x".repeat(129)] {
            let err = validate_id("record key", bad).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("invalid record key: "), "{text}");
            assert!(text.contains("1 to 128 characters"), "{text}");
        }
    }

    #[test]
    fn messages_are_actionable() {
        assert_eq!(
            VaultError::UndeclaredField {
                collection: "profile".into(),
                field: "ssn".into()
            }
            .to_string(),
            "field `ssn` is not declared in collection `profile`"
        );
        assert_eq!(
            VaultError::NoResidencyRule("CN".into()).to_string(),
            "no residency rule for jurisdiction `CN`: add `residency.CN` to the configuration"
        );
        let layout = VaultError::InvalidLayout(vec![
            LayoutProblem {
                key: "residency.US[1]".into(),
                problem: "site `x` is not declared".into(),
            },
            LayoutProblem {
                key: "sites.a.operator".into(),
                problem: "empty".into(),
            },
        ]);
        assert_eq!(
            layout.to_string(),
            "invalid configuration: residency.US[1]: site `x` is not declared; sites.a.operator: empty"
        );
    }
}
