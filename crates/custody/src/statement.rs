//! Custodian statements: the commands only the custodian's keys can give (activate a policy
//! set or an invariant set, release an algorithm, suspend or lift a jurisdiction), as C2SP
//! signed notes.
//!
//! The note text is a fixed first line and one `key value` line per field, in a fixed order,
//! so that a statement has exactly one text and a signature can never be moved to a statement
//! that merely parses alike. Several custodians sign the same text; [`verify`] counts distinct
//! known keys against the configured threshold.

use std::fmt;
use std::path::Path;

use tlog::note::{self, Signer, Verifier};

/// The first line of every statement: the format and its version.
pub const HEADER: &str = "sovereign/custody/v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// Make the policy set with this hash the active one.
    PolicyActivation { policy_set: String },
    /// Make the invariant set with this hash the one every policy set must be proven against.
    InvariantActivation { invariant_set: String },
    /// Release this algorithm artifact: `sha256` is the digest of its bytes, `manifest` that
    /// of its manifest (what it reads and outputs, its purpose and limits), when it has one.
    /// Only a release with a manifest runs.
    AlgorithmRelease {
        name: String,
        version: String,
        sha256: String,
        manifest: Option<String>,
    },
    /// Suspend or lift all access to one jurisdiction's data. `serial` must exceed the last
    /// serial applied for the jurisdiction, so an old command cannot be replayed.
    KillSwitch {
        command: KillCommand,
        jurisdiction: String,
        serial: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillCommand {
    Suspend,
    Lift,
}

impl KillCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            KillCommand::Suspend => "suspend",
            KillCommand::Lift => "lift",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatementError {
    #[error("not a custodian statement: {0}")]
    Malformed(String),
    #[error("the signed note is not valid: {0}")]
    Note(String),
    #[error(
        "signed by {got} custodian key(s) ({names}), but {need} are required",
        names = if .signers.is_empty() { "none".to_string() } else { .signers.join(", ") }
    )]
    ThresholdNotMet {
        got: usize,
        need: usize,
        signers: Vec<String>,
    },
    #[error("cannot read the key {path}: {problem}")]
    Key { path: String, problem: String },
}

impl Statement {
    /// The note text to sign: the header, then one `key value` line per field.
    pub fn text(&self) -> String {
        let mut lines = vec![HEADER.to_string()];
        for (key, value) in self.fields() {
            lines.push(format!("{key} {value}"));
        }
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        match self {
            Statement::PolicyActivation { policy_set } => vec![
                ("kind", "policy-activation".into()),
                ("policy-set", policy_set.clone()),
            ],
            Statement::InvariantActivation { invariant_set } => vec![
                ("kind", "invariant-activation".into()),
                ("invariant-set", invariant_set.clone()),
            ],
            Statement::AlgorithmRelease {
                name,
                version,
                sha256,
                manifest,
            } => {
                let mut fields = vec![
                    ("kind", "algorithm-release".into()),
                    ("name", name.clone()),
                    ("version", version.clone()),
                    ("sha256", sha256.clone()),
                ];
                if let Some(manifest) = manifest {
                    fields.push(("manifest", manifest.clone()));
                }
                fields
            }
            Statement::KillSwitch {
                command,
                jurisdiction,
                serial,
            } => vec![
                ("kind", "kill-switch".into()),
                ("command", command.as_str().into()),
                ("jurisdiction", jurisdiction.clone()),
                ("serial", serial.to_string()),
            ],
        }
    }

    /// Parses a statement's text, accepting only the exact form [`Statement::text`] writes.
    pub fn parse(text: &str) -> Result<Statement, StatementError> {
        let bad = |why: &str| StatementError::Malformed(why.to_string());
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("the text does not end in a newline"))?;
        let mut lines = body.split('\n');
        if lines.next() != Some(HEADER) {
            return Err(bad(&format!("the first line must be `{HEADER}`")));
        }
        let mut pairs = Vec::new();
        for line in lines {
            let (key, value) = line
                .split_once(' ')
                .ok_or_else(|| bad(&format!("line `{line}` is not `key value`")))?;
            if value.is_empty() || value.contains(char::is_whitespace) {
                return Err(bad(&format!("the value of `{key}` must be one word")));
            }
            pairs.push((key, value));
        }
        let value = |i: usize, key: &str| -> Result<String, StatementError> {
            match pairs.get(i) {
                Some((k, v)) if *k == key => Ok(v.to_string()),
                _ => Err(bad(&format!("line {} must be `{key} ...`", i + 2))),
            }
        };
        let statement = match value(0, "kind")?.as_str() {
            "policy-activation" => {
                let policy_set = value(1, "policy-set")?;
                check_hex64("policy-set", &policy_set)?;
                Statement::PolicyActivation { policy_set }
            }
            "invariant-activation" => {
                let invariant_set = value(1, "invariant-set")?;
                check_hex64("invariant-set", &invariant_set)?;
                Statement::InvariantActivation { invariant_set }
            }
            "algorithm-release" => {
                let sha256 = value(3, "sha256")?;
                check_hex64("sha256", &sha256)?;
                let manifest = match pairs.len() {
                    4 => None,
                    _ => {
                        let manifest = value(4, "manifest")?;
                        check_hex64("manifest", &manifest)?;
                        Some(manifest)
                    }
                };
                Statement::AlgorithmRelease {
                    name: value(1, "name")?,
                    version: value(2, "version")?,
                    sha256,
                    manifest,
                }
            }
            "kill-switch" => {
                let command = match value(1, "command")?.as_str() {
                    "suspend" => KillCommand::Suspend,
                    "lift" => KillCommand::Lift,
                    other => {
                        return Err(bad(&format!(
                            "command must be `suspend` or `lift`, not `{other}`"
                        )));
                    }
                };
                let serial = value(3, "serial")?
                    .parse()
                    .map_err(|_| bad("serial must be a whole number"))?;
                Statement::KillSwitch {
                    command,
                    jurisdiction: value(2, "jurisdiction")?,
                    serial,
                }
            }
            other => return Err(bad(&format!("unknown kind `{other}`"))),
        };
        // Re-rendering must give the same text: no extra lines, no other order.
        if statement.text() != text {
            return Err(bad("unexpected extra lines"));
        }
        Ok(statement)
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statement::PolicyActivation { policy_set } => {
                write!(f, "activate policy set {policy_set}")
            }
            Statement::InvariantActivation { invariant_set } => {
                write!(f, "activate invariant set {invariant_set}")
            }
            Statement::AlgorithmRelease {
                name,
                version,
                sha256,
                manifest,
            } => {
                write!(f, "release algorithm {name} {version} (sha256 {sha256}")?;
                match manifest {
                    Some(manifest) => write!(f, ", manifest {manifest})"),
                    None => write!(f, ")"),
                }
            }
            Statement::KillSwitch {
                command,
                jurisdiction,
                serial,
            } => write!(f, "{} {jurisdiction} (serial {serial})", command.as_str()),
        }
    }
}

fn check_hex64(key: &str, value: &str) -> Result<(), StatementError> {
    if value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(StatementError::Malformed(format!(
            "`{key}` must be 64 lower-case hex digits"
        )))
    }
}

/// Signs a statement: the signed note, ready to hand to the gateway.
pub fn sign(statement: &Statement, signer: &Signer) -> Result<Vec<u8>, StatementError> {
    note::sign(&statement.text(), [signer]).map_err(|e| StatementError::Note(e.to_string()))
}

/// Adds `signer`'s signature to a signed statement, keeping the signatures already there
/// (another custodian's, for an N-of-M threshold). Checks that the text is a statement.
pub fn cosign(signed: &[u8], signer: &Signer) -> Result<Vec<u8>, StatementError> {
    let text =
        std::str::from_utf8(signed).map_err(|_| StatementError::Note("not valid UTF-8".into()))?;
    let split = text
        .rfind("\n\n")
        .ok_or_else(|| StatementError::Note("no blank line before the signatures".into()))?;
    let (body, sigs) = (&text[..split + 1], &text[split + 2..]);
    Statement::parse(body)?;
    let mine = note::sign(body, [signer]).map_err(|e| StatementError::Note(e.to_string()))?;
    let mine = std::str::from_utf8(&mine[body.len() + 1..]).expect("signature lines are ASCII");
    if sigs.lines().any(|line| line == mine.trim_end()) {
        return Ok(signed.to_vec());
    }
    Ok(format!("{body}\n{sigs}{mine}").into_bytes())
}

/// A statement with the names of the known custodian keys that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub statement: Statement,
    pub signers: Vec<String>,
}

/// Opens a signed statement with the custodian's verifier keys and requires at least
/// `threshold` distinct known keys to have signed it. Signatures by unknown keys count for
/// nothing; a bad signature by a known key refuses the whole note.
pub fn verify(
    signed: &[u8],
    verifiers: &[Verifier],
    threshold: usize,
) -> Result<Verified, StatementError> {
    let opened = match note::open(signed, verifiers) {
        Ok(opened) => opened,
        Err(note::NoteError::Unverified(_)) => {
            return Err(StatementError::ThresholdNotMet {
                got: 0,
                need: threshold.max(1),
                signers: Vec::new(),
            });
        }
        Err(e) => return Err(StatementError::Note(e.to_string())),
    };
    let statement = Statement::parse(&opened.text)?;
    let mut signers: Vec<String> = opened.sigs.iter().map(|s| s.name.clone()).collect();
    signers.sort();
    signers.dedup();
    if signers.len() < threshold.max(1) {
        return Err(StatementError::ThresholdNotMet {
            got: signers.len(),
            need: threshold.max(1),
            signers,
        });
    }
    Ok(Verified { statement, signers })
}

/// Reads a signed-note signer key (`PRIVATE+KEY+name+id+base64`) from a file.
pub fn load_signer(path: &Path) -> Result<Signer, StatementError> {
    let key_error = |problem: String| StatementError::Key {
        path: path.display().to_string(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| key_error(e.to_string()))?;
    Signer::new(text.trim()).map_err(|e| key_error(format!("not a signed-note signer key: {e}")))
}

/// Reads a signed-note verifier key (`name+id+base64`) from a file.
pub fn load_verifier(path: &Path) -> Result<Verifier, StatementError> {
    let key_error = |problem: String| StatementError::Key {
        path: path.display().to_string(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| key_error(e.to_string()))?;
    Verifier::new(text.trim())
        .map_err(|e| key_error(format!("not a signed-note verifier key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> (Signer, Verifier) {
        let (skey, vkey) = note::generate_key(name).unwrap();
        (Signer::new(&skey).unwrap(), Verifier::new(&vkey).unwrap())
    }

    fn examples() -> Vec<Statement> {
        vec![
            Statement::PolicyActivation {
                policy_set: "ab".repeat(32),
            },
            Statement::InvariantActivation {
                invariant_set: "cd".repeat(32),
            },
            Statement::AlgorithmRelease {
                name: "ranker".into(),
                version: "1.2.0".into(),
                sha256: "0f".repeat(32),
                manifest: None,
            },
            Statement::AlgorithmRelease {
                name: "ranker".into(),
                version: "1.3.0".into(),
                sha256: "0f".repeat(32),
                manifest: Some("1e".repeat(32)),
            },
            Statement::KillSwitch {
                command: KillCommand::Suspend,
                jurisdiction: "US".into(),
                serial: 7,
            },
        ]
    }

    #[test]
    fn text_round_trips_and_is_the_only_form() {
        for s in examples() {
            assert_eq!(Statement::parse(&s.text()).unwrap(), s);
            let extra = format!("{}note hello\n", s.text());
            assert!(Statement::parse(&extra).is_err());
            assert!(Statement::parse(s.text().trim_end()).is_err());
        }
        let policy = "sovereign/custody/v1\nkind policy-activation\npolicy-set ABAB\n";
        assert!(Statement::parse(policy).is_err(), "hash must be lower hex");
        assert!(Statement::parse("other/v1\nkind policy-activation\n").is_err());
    }

    #[test]
    fn threshold_counts_distinct_known_keys() {
        let (a, va) = key("custodian-a");
        let (b, vb) = key("custodian-b");
        let (stranger, _) = key("stranger");
        let s = &examples()[0];
        let one = sign(s, &a).unwrap();
        let verified = verify(&one, &[va.clone(), vb.clone()], 1).unwrap();
        assert_eq!(verified.statement, *s);
        assert_eq!(verified.signers, ["custodian-a"]);
        assert!(matches!(
            verify(&one, &[va.clone(), vb.clone()], 2),
            Err(StatementError::ThresholdNotMet {
                got: 1,
                need: 2,
                ..
            })
        ));
        // The same key twice is still one signer.
        assert_eq!(cosign(&one, &a).unwrap(), one);
        let two = cosign(&one, &b).unwrap();
        assert_eq!(
            verify(&two, &[va.clone(), vb.clone()], 2).unwrap().signers,
            ["custodian-a", "custodian-b"]
        );
        // An unknown key adds nothing.
        let with_stranger = cosign(&one, &stranger).unwrap();
        assert!(verify(&with_stranger, &[va.clone(), vb.clone()], 2).is_err());
        // Nobody known signed.
        let only_stranger = sign(s, &stranger).unwrap();
        assert!(matches!(
            verify(&only_stranger, &[va, vb], 1),
            Err(StatementError::ThresholdNotMet { got: 0, .. })
        ));
    }

    #[test]
    fn tampered_text_is_refused() {
        let (a, va) = key("custodian-a");
        let kill_switch = examples()
            .into_iter()
            .find(|s| matches!(s, Statement::KillSwitch { .. }))
            .unwrap();
        let signed = sign(&kill_switch, &a).unwrap();
        let tampered = String::from_utf8(signed)
            .unwrap()
            .replace("suspend", "lift");
        assert!(matches!(
            verify(tampered.as_bytes(), &[va], 1),
            Err(StatementError::Note(_))
        ));
    }
}
