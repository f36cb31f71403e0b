//! Algorithm runs held to the releases in force, as `audit replay` reads them from the log.
//!
//! The custody entries say which release of each algorithm is active: an
//! `algorithm-activated` entry carries the release's signers and its manifest (whose SHA-256
//! must be the one the custodian signed), and activating one version retires the others;
//! `algorithm-deactivated` ends it. Against that, every `algorithm-run` entry that got past
//! its decisions must name the active release (version, module and manifest digests) and
//! only fields its manifest reads; every `compute` access entry (a release as principal)
//! must be by the active release, on a collection and fields its manifest reads.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::entry::AccessV2;
use crate::problems::Problems;

/// The principal id of a release: `algorithm:<name>@<version>`.
const RELEASE_PREFIX: &str = "algorithm:";

/// One active release, as its activation entry says.
struct Active {
    version: String,
    sha256: String,
    manifest_sha256: String,
    /// Collection → the fields its manifest reads there.
    reads: BTreeMap<String, BTreeSet<String>>,
}

/// The releases in force and the runs checked against them.
#[derive(Default)]
pub struct Runs {
    active: BTreeMap<String, Active>,
    /// Runs by algorithm, then by outcome (`ok`, `failed`, `denied`, `stopped`).
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    pub(crate) problems: Problems,
}

impl Runs {
    /// A custody entry's event: activations and deactivations of releases change what is
    /// in force.
    pub fn custody(&mut self, index: u64, event: &str, details: &Value) {
        let text = |key: &str| details[key].as_str().unwrap_or_default().to_string();
        let name = text("name");
        match event {
            "algorithm-activated" => {
                let Some(manifest) = details["manifest"].as_str() else {
                    // Released as an opaque artifact: it can never run.
                    self.active.remove(&name);
                    return;
                };
                let manifest_sha256 = hex::encode(Sha256::digest(manifest));
                if text("manifest_sha256") != manifest_sha256 {
                    self.problems.push(format!(
                        "entry {index}: {name} {} was activated with a manifest whose SHA-256 is {manifest_sha256}, not the {} it names",
                        text("version"),
                        text("manifest_sha256")
                    ));
                    self.active.remove(&name);
                    return;
                }
                if details["signers"].as_array().is_none_or(Vec::is_empty) {
                    self.problems.push(format!(
                        "entry {index}: {name} {} was activated without a custodian signer",
                        text("version")
                    ));
                    self.active.remove(&name);
                    return;
                }
                let reads = match manifest_reads(manifest) {
                    Ok(reads) => reads,
                    Err(why) => {
                        self.problems.push(format!(
                            "entry {index}: {name} {} was activated with a manifest that cannot be read: {why}",
                            text("version")
                        ));
                        self.active.remove(&name);
                        return;
                    }
                };
                self.active.insert(
                    name,
                    Active {
                        version: text("version"),
                        sha256: text("sha256"),
                        manifest_sha256,
                        reads,
                    },
                );
            }
            "algorithm-deactivated"
                if self
                    .active
                    .get(&name)
                    .is_some_and(|a| a.version == text("version")) =>
            {
                self.active.remove(&name);
            }
            _ => {}
        }
    }

    /// An `algorithm-run` entry's details.
    pub fn run(&mut self, index: u64, details: &Value) {
        let text = |key: &str| details[key].as_str().unwrap_or_default();
        let (name, version, outcome) = (text("algorithm"), text("version"), text("outcome"));
        *self
            .counts
            .entry(name.to_string())
            .or_default()
            .entry(outcome.to_string())
            .or_default() += 1;
        // A denied run read nothing and ran nothing; a stopped one is logged because its
        // release was no longer in force (its output was withheld): the gateway says so.
        if matches!(outcome, "denied" | "stopped") {
            return;
        }
        let what = format!("entry {index}: a run of {name} {version}");
        let Some(active) = self.active.get(name) else {
            return self
                .problems
                .push(format!("{what}, which was not active and signed then"));
        };
        if active.version != version
            || active.sha256 != text("sha256")
            || active.manifest_sha256 != text("manifest_sha256")
        {
            return self.problems.push(format!(
                "{what} (module {}, manifest {}), but {name} {} (module {}, manifest {}) was the active release then",
                text("sha256"),
                text("manifest_sha256"),
                active.version,
                active.sha256,
                active.manifest_sha256
            ));
        }
        let fields = details["fields_read"].as_array().map(Vec::as_slice);
        for field in fields.unwrap_or_default() {
            let field = field.as_str().unwrap_or_default();
            let named = field
                .split_once('.')
                .is_some_and(|(c, f)| active.reads.get(c).is_some_and(|fs| fs.contains(f)));
            if !named {
                self.problems.push(format!(
                    "{what} read `{field}`, which its manifest does not name"
                ));
            }
        }
    }

    /// A `compute` access entry: a release's own decision to get a subject's fields.
    pub fn compute(&mut self, index: u64, access: &AccessV2) {
        let id = &access.principal.id;
        let what = format!("entry {index}: input for {id}");
        let Some((name, version)) = id
            .strip_prefix(RELEASE_PREFIX)
            .and_then(|r| r.split_once('@'))
        else {
            return self.problems.push(format!(
                "{what}: a compute decision for a principal that is not a release"
            ));
        };
        let Some(active) = self.active.get(name).filter(|a| a.version == version) else {
            return self.problems.push(format!(
                "{what}, which was not the active, signed release then"
            ));
        };
        let collection = access.collection.as_deref().unwrap_or_default();
        let Some(fields) = active.reads.get(collection) else {
            return self.problems.push(format!(
                "{what} on the collection `{collection}`, which its manifest does not read"
            ));
        };
        for field in &access.fields {
            if !fields.contains(field) {
                self.problems.push(format!(
                    "{what} names `{collection}.{field}`, which its manifest does not read"
                ));
            }
        }
    }

    /// Runs counted, and the runs and release decisions that broke their release.
    /// `{"counts": {algorithm: {outcome: n}}, "problems": {...}}` for `--json`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"counts": self.counts, "problems": self.problems.to_json()})
    }

    pub fn write(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.problems.write(out, "run:       ")?;
        if self.counts.is_empty() {
            return Ok(());
        }
        let per: Vec<String> = self
            .counts
            .iter()
            .map(|(name, outcomes)| {
                let outcomes: Vec<String> =
                    outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect();
                format!("{name} ({})", outcomes.join(", "))
            })
            .collect();
        writeln!(out, "runs:       {}", per.join("; "))
    }
}

/// A manifest's reads: collection → fields.
fn manifest_reads(manifest: &str) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let manifest: Value = serde_json::from_str(manifest).map_err(|e| e.to_string())?;
    let mut reads = BTreeMap::new();
    for read in manifest["reads"].as_array().ok_or("no `reads`")? {
        let collection = read["collection"]
            .as_str()
            .ok_or("a read without a collection")?;
        let fields = read["fields"].as_array().ok_or("a read without fields")?;
        let fields: BTreeSet<String> = fields
            .iter()
            .map(|f| {
                f.as_str()
                    .map(str::to_string)
                    .ok_or("a field that is not a string")
            })
            .collect::<Result<_, _>>()?;
        reads.insert(collection.to_string(), fields);
    }
    Ok(reads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MANIFEST: &str =
        r#"{"name":"ranker","reads":[{"collection":"activity","fields":["watch_history"]}]}"#;

    fn activated(version: &str, manifest: &str) -> Value {
        json!({
            "name": "ranker",
            "version": version,
            "sha256": "aa",
            "manifest_sha256": hex::encode(Sha256::digest(MANIFEST)),
            "manifest": manifest,
            "signers": ["custodian"],
        })
    }

    fn run(version: &str, fields: &[&str], outcome: &str) -> Value {
        json!({
            "algorithm": "ranker",
            "version": version,
            "sha256": "aa",
            "manifest_sha256": hex::encode(Sha256::digest(MANIFEST)),
            "fields_read": fields,
            "outcome": outcome,
        })
    }

    #[test]
    fn runs_are_held_to_the_release_in_force() {
        let mut runs = Runs::default();
        // Before any activation: a run is a problem, a denied one is not.
        runs.run(1, &run("1.0.0", &["activity.watch_history"], "ok"));
        runs.run(2, &run("1.0.0", &[], "denied"));
        runs.run(2, &run("1.0.0", &[], "stopped"));
        assert_eq!(runs.problems.count, 1);

        runs.custody(3, "algorithm-activated", &activated("1.0.0", MANIFEST));
        runs.run(4, &run("1.0.0", &["activity.watch_history"], "ok"));
        assert_eq!(runs.problems.count, 1, "a run of the active release");
        runs.run(5, &run("1.0.0", &["activity.location"], "ok"));
        assert_eq!(runs.problems.count, 2, "a field the manifest does not read");
        runs.run(6, &run("0.9.0", &[], "failed"));
        assert_eq!(
            runs.problems.count, 3,
            "another version than the active one"
        );

        runs.custody(7, "algorithm-deactivated", &activated("1.0.0", MANIFEST));
        runs.run(8, &run("1.0.0", &[], "ok"));
        assert_eq!(runs.problems.count, 4, "a run after deactivation");

        // A manifest that is not the one its digest names activates nothing.
        runs.custody(9, "algorithm-activated", &activated("1.0.0", "{}"));
        assert_eq!(runs.problems.count, 5);
        runs.run(10, &run("1.0.0", &[], "ok"));
        assert_eq!(runs.problems.count, 6);
        assert_eq!(runs.counts["ranker"]["ok"], 5);
        assert_eq!(runs.counts["ranker"]["denied"], 1);
        assert_eq!(runs.counts["ranker"]["stopped"], 1);
    }
}
