//! The manifest of an algorithm release: what it is, what it reads, what it outputs, what it
//! runs for and how much it may use. The custodian's signature covers it (issue 19), so a run
//! can be held to exactly what was reviewed.

use serde::{Deserialize, Serialize};

use crate::error::ManifestError;

/// The most fuel (roughly, WebAssembly instructions) a manifest may grant one run.
pub const MAX_FUEL: u64 = 10_000_000_000;
/// The most linear memory a manifest may grant one run.
pub const MAX_MEMORY_BYTES: u64 = 256 << 20;
/// The longest wall time a manifest may grant one run.
pub const MAX_WALL_MS: u64 = 60_000;
/// The largest output value a manifest may declare, in bytes of its JSON form.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// A release's manifest (JSON, unknown members refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The algorithm's name, as `POST /v1/algorithms/{name}/runs` names it.
    pub name: String,
    /// The release's version.
    pub version: String,
    /// SHA-256 of the WebAssembly module, hex.
    pub module_sha256: String,
    /// The purpose it runs for (stated in every run's decision, as a request's purpose is).
    pub purpose: String,
    /// The fields it reads, per collection.
    pub reads: Vec<Read>,
    /// The fields it outputs (all of class interoperable: they leave to the caller).
    pub outputs: Vec<Output>,
    /// What one run may use.
    pub limits: Limits,
}

/// Fields of one collection that a release reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Read {
    pub collection: String,
    pub fields: Vec<String>,
}

/// One output field: its name, type and size limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: OutputType,
    /// The most bytes the value may take, in its JSON form.
    pub max_bytes: usize,
}

/// The type of an output value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputType {
    String,
    Number,
    Boolean,
    StringList,
}

/// What one run may use. Runs are stopped, and fail, at the first limit reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Fuel: wasmtime's measure of work, about one unit per WebAssembly instruction.
    pub fuel: u64,
    /// Linear memory, in bytes (whole 64 KiB pages).
    pub memory_bytes: u64,
    /// Wall time, in milliseconds.
    pub wall_ms: u64,
}

impl Manifest {
    /// Parses a manifest and checks it (see [`Manifest::check`]).
    pub fn parse(json: &[u8]) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = serde_json::from_slice(json)
            .map_err(|e| ManifestError(format!("not a manifest: {e}")))?;
        manifest.check()?;
        Ok(manifest)
    }

    /// Checks what parsing cannot: names, a hex digest, at least one read and one output, no
    /// name twice, and limits within this build's bounds.
    pub fn check(&self) -> Result<(), ManifestError> {
        let bad = |what: String| Err(ManifestError(what));
        for (what, value) in [
            ("name", &self.name),
            ("version", &self.version),
            ("purpose", &self.purpose),
        ] {
            if value.trim().is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
                return bad(format!(
                    "`{what}` must be 1 to 256 characters without control characters"
                ));
            }
        }
        if !is_plain_name(&self.name) {
            return bad(format!(
                "`name` {:?} may hold only letters, digits, '-', '_' and '.'",
                self.name
            ));
        }
        if self.module_sha256.len() != 64
            || !self
                .module_sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return bad("`module_sha256` must be 64 lower-case hex digits".to_string());
        }
        if self.reads.is_empty() {
            return bad("`reads` must name at least one collection".to_string());
        }
        for (i, read) in self.reads.iter().enumerate() {
            if !is_plain_name(&read.collection) || read.fields.is_empty() {
                return bad(format!(
                    "`reads[{i}]` needs a collection name and at least one field"
                ));
            }
            if self.reads[..i]
                .iter()
                .any(|r| r.collection == read.collection)
            {
                return bad(format!(
                    "collection `{}` is read twice: list its fields once",
                    read.collection
                ));
            }
            if let Some(f) = read.fields.iter().find(|f| !is_plain_name(f)) {
                return bad(format!("`reads[{i}]`: field {f:?} is not a field name"));
            }
        }
        if self.outputs.is_empty() {
            return bad("`outputs` must declare at least one field".to_string());
        }
        for (i, out) in self.outputs.iter().enumerate() {
            if !is_plain_name(&out.name) {
                return bad(format!(
                    "`outputs[{i}]`: {:?} is not a field name",
                    out.name
                ));
            }
            if self.outputs[..i].iter().any(|o| o.name == out.name) {
                return bad(format!("output `{}` is declared twice", out.name));
            }
            if out.max_bytes == 0 || out.max_bytes > MAX_OUTPUT_BYTES {
                return bad(format!(
                    "output `{}`: `max_bytes` must be 1 to {MAX_OUTPUT_BYTES}",
                    out.name
                ));
            }
        }
        let l = self.limits;
        if l.fuel == 0 || l.fuel > MAX_FUEL {
            return bad(format!("`limits.fuel` must be 1 to {MAX_FUEL}"));
        }
        if l.memory_bytes < 65_536 || l.memory_bytes > MAX_MEMORY_BYTES {
            return bad(format!(
                "`limits.memory_bytes` must be 65536 to {MAX_MEMORY_BYTES}"
            ));
        }
        if l.wall_ms == 0 || l.wall_ms > MAX_WALL_MS {
            return bad(format!("`limits.wall_ms` must be 1 to {MAX_WALL_MS}"));
        }
        Ok(())
    }

    /// The declared output named `name`.
    pub fn output(&self, name: &str) -> Option<&Output> {
        self.outputs.iter().find(|o| o.name == name)
    }
}

/// Letters, digits, '-', '_' and '.', 1 to 128 of them.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn example() -> serde_json::Value {
        serde_json::json!({
            "name": "ranker",
            "version": "1.0.0",
            "module_sha256": "a".repeat(64),
            "purpose": "recommendations",
            "reads": [{"collection": "activity", "fields": ["watch_history"]}],
            "outputs": [{"name": "categories", "type": "string-list", "max_bytes": 256}],
            "limits": {"fuel": 1000000, "memory_bytes": 1048576, "wall_ms": 1000}
        })
    }

    #[test]
    fn a_good_manifest_parses() {
        let m = Manifest::parse(example().to_string().as_bytes()).unwrap();
        assert_eq!(m.output("categories").unwrap().kind, OutputType::StringList);
    }

    #[test]
    fn bad_manifests_are_refused_with_the_reason() {
        let cases: Vec<(&str, serde_json::Value)> = vec![
            ("unknown", serde_json::json!({"extra": 1})),
            ("module_sha256", serde_json::json!({"module_sha256": "ABC"})),
            ("reads", serde_json::json!({"reads": []})),
            ("outputs", serde_json::json!({"outputs": []})),
            (
                "twice",
                serde_json::json!({"outputs": [
                {"name": "a", "type": "number", "max_bytes": 8},
                {"name": "a", "type": "number", "max_bytes": 8}]}),
            ),
            (
                "limits.fuel",
                serde_json::json!({"limits": {"fuel": 0, "memory_bytes": 65536, "wall_ms": 1}}),
            ),
            (
                "limits.memory_bytes",
                serde_json::json!({"limits": {"fuel": 1, "memory_bytes": 1u64 << 40, "wall_ms": 1}}),
            ),
            ("name", serde_json::json!({"name": "../x"})),
        ];
        for (expected, change) in cases {
            let mut m = example();
            for (k, v) in change.as_object().unwrap() {
                m[k] = v.clone();
            }
            let err = Manifest::parse(m.to_string().as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}
