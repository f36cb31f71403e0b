//! The configured shape of the vault: jurisdictions, sites, residency rules and collections.
//!
//! The gateway deserialises these pieces from its TOML configuration; [`Layout::validate`]
//! checks them as a whole and reports every problem at once, each under the TOML path a user
//! has to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

/// How a field is classified in its collection.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FieldClass {
    /// Personal data that must stay inside the subject's jurisdiction.
    Protected,
    /// Allow-listed, non-sensitive data that may flow out to the global platform.
    Interoperable,
}

impl FieldClass {
    /// The name used in configuration and policies.
    pub fn as_str(&self) -> &'static str {
        match self {
            FieldClass::Protected => "protected",
            FieldClass::Interoperable => "interoperable",
        }
    }
}

impl fmt::Display for FieldClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One storage location.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The jurisdiction the site's servers are in.
    pub jurisdiction: String,
    /// Who runs the site.
    pub operator: String,
    /// `sqlite:PATH` (relative paths are relative to the data folder) or `postgres://…`.
    pub store: String,
}

/// The declared fields of one collection and their classes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    pub fields: BTreeMap<String, FieldClass>,
    /// Access to this collection's protected fields needs a custodian grant (an approved
    /// access request or a break-glass use); Cedar sees it as `resource.approval_required`.
    #[serde(default)]
    pub approval: bool,
    /// How many custodian approvers must approve an access request that covers this
    /// collection (N of the M approvers).
    #[serde(default = "one_approval")]
    pub approvals: u32,
}

fn one_approval() -> u32 {
    1
}

impl CollectionConfig {
    /// A collection of these fields that needs no approval.
    pub fn of(fields: BTreeMap<String, FieldClass>) -> CollectionConfig {
        CollectionConfig {
            fields,
            approval: false,
            approvals: one_approval(),
        }
    }
}

/// The whole vault configuration.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub jurisdictions: BTreeSet<String>,
    /// Site name -> config.
    pub sites: BTreeMap<String, SiteConfig>,
    /// Jurisdiction -> allowed site names, in order of preference. A jurisdiction without an
    /// entry has no rule, and none of its subjects can be placed anywhere.
    pub residency: BTreeMap<String, Vec<String>>,
    pub collections: BTreeMap<String, CollectionConfig>,
}

/// One thing wrong with a [`Layout`], under the TOML path to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutProblem {
    /// A TOML path such as `residency.US[1]` or `sites.us-east.jurisdiction`.
    pub key: String,
    pub problem: String,
}

impl fmt::Display for LayoutProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

/// The store URL schemes that name a PostgreSQL database.
pub(crate) const POSTGRES_PREFIXES: [&str; 2] = ["postgres://", "postgresql://"];
pub(crate) const SQLITE_PREFIX: &str = "sqlite:";

/// What a store URL names, as far as validation needs to know.
pub(crate) enum StoreUrl<'a> {
    Sqlite(&'a str),
    /// The whole URL.
    Postgres(&'a str),
    Other,
}

pub(crate) fn parse_store_url(url: &str) -> StoreUrl<'_> {
    if let Some(path) = url.strip_prefix(SQLITE_PREFIX) {
        StoreUrl::Sqlite(path)
    } else if POSTGRES_PREFIXES.iter().any(|p| url.starts_with(p)) {
        StoreUrl::Postgres(url)
    } else {
        StoreUrl::Other
    }
}

/// Two upper-case ASCII letters, as in ISO 3166-1 alpha-2.
pub(crate) fn is_jurisdiction_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// Site, collection and field names: `[a-z0-9_-]`, 1 to 64 characters, starting with a letter.
/// They appear in TOML keys, policies and URLs, so they are kept plain.
pub(crate) fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

const NAME_RULE: &str =
    "names are 1 to 64 characters of a-z, 0-9, '_' or '-', starting with a lower-case letter";

/// A lexical form of a store path, so that `a/b` and `./a//b` count as the same file.
pub(crate) fn normalised_path(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect()
}

impl Layout {
    /// Every problem with this layout; empty when it is usable.
    pub fn validate(&self) -> Vec<LayoutProblem> {
        let mut problems = Vec::new();
        let mut report =
            |key: String, problem: String| problems.push(LayoutProblem { key, problem });

        for code in &self.jurisdictions {
            if !is_jurisdiction_code(code) {
                report(
                    "jurisdictions".into(),
                    format!(
                        "`{code}` is not a jurisdiction code: use two upper-case letters (ISO 3166-1 alpha-2), like `US`"
                    ),
                );
            }
        }

        // Store identity, to refuse two sites writing the same file (their rules would mix).
        let mut store_owner: BTreeMap<Vec<String>, &str> = BTreeMap::new();
        for (name, site) in &self.sites {
            let key = format!("sites.{name}");
            if !is_name(name) {
                report(
                    key.clone(),
                    format!("`{name}` is not a valid site name: {NAME_RULE}"),
                );
            }
            if !self.jurisdictions.contains(&site.jurisdiction) {
                report(
                    format!("{key}.jurisdiction"),
                    format!(
                        "jurisdiction `{}` is not declared: add it to `jurisdictions`",
                        site.jurisdiction
                    ),
                );
            }
            if site.operator.trim().is_empty() {
                report(
                    format!("{key}.operator"),
                    "the operator is empty: name who runs this site".into(),
                );
            }
            let identity = match parse_store_url(&site.store) {
                StoreUrl::Sqlite(path) if !path.trim().is_empty() => Some(normalised_path(path)),
                StoreUrl::Sqlite(_) => {
                    report(
                        format!("{key}.store"),
                        "the SQLite store has no path: use `sqlite:PATH`".into(),
                    );
                    None
                }
                // Compared verbatim: two spellings of one database are not caught here.
                StoreUrl::Postgres(_) => Some(vec![site.store.clone()]),
                StoreUrl::Other if site.store.starts_with("redb:") => {
                    report(
                        format!("{key}.store"),
                        "`redb:` stores are not implemented yet: use `sqlite:PATH` or `postgres://…`"
                            .into(),
                    );
                    None
                }
                StoreUrl::Other => {
                    report(
                        format!("{key}.store"),
                        "unsupported store: use `sqlite:PATH` or `postgres://…`".into(),
                    );
                    None
                }
            };
            if let Some(identity) = identity {
                if let Some(other) = store_owner.get(&identity) {
                    report(
                        format!("{key}.store"),
                        format!(
                            "site `{name}` uses the same store as site `{other}`: each site needs its own"
                        ),
                    );
                } else {
                    store_owner.insert(identity, name);
                }
            }
        }

        for (jurisdiction, sites) in &self.residency {
            let key = format!("residency.{jurisdiction}");
            if !self.jurisdictions.contains(jurisdiction) {
                report(
                    key.clone(),
                    format!(
                        "jurisdiction `{jurisdiction}` is not declared: add it to `jurisdictions`"
                    ),
                );
            }
            if sites.is_empty() {
                report(
                    key.clone(),
                    "the rule allows no site: list at least one, or remove the rule".into(),
                );
            }
            let mut seen = BTreeSet::new();
            for (i, site) in sites.iter().enumerate() {
                // Whether the site lies in the jurisdiction is the configuration's decision
                // (a custodian may run a site abroad), so it is not checked here.
                if !self.sites.contains_key(site) {
                    report(
                        format!("{key}[{i}]"),
                        format!("site `{site}` is not declared: add `sites.{site}`"),
                    );
                }
                if !seen.insert(site) {
                    report(
                        format!("{key}[{i}]"),
                        format!("site `{site}` is listed twice"),
                    );
                }
            }
        }

        for (name, collection) in &self.collections {
            let key = format!("collections.{name}");
            if !is_name(name) {
                report(
                    key.clone(),
                    format!("`{name}` is not a valid collection name: {NAME_RULE}"),
                );
            }
            if collection.fields.is_empty() {
                report(
                    format!("{key}.fields"),
                    "the collection declares no field: declare at least one".into(),
                );
            }
            for field in collection.fields.keys() {
                if !is_name(field) {
                    report(
                        format!("{key}.fields.{field}"),
                        format!("`{field}` is not a valid field name: {NAME_RULE}"),
                    );
                }
            }
        }

        problems
    }

    /// Whether the residency rule of `jurisdiction` allows `site`. No rule allows nothing.
    pub fn allows(&self, jurisdiction: &str, site: &str) -> bool {
        // Checked in full even though `validate` implies some of it: this answer is what
        // placement rests on, so it must hold for an unvalidated layout too.
        self.jurisdictions.contains(jurisdiction)
            && self.sites.contains_key(site)
            && self
                .residency
                .get(jurisdiction)
                .is_some_and(|allowed| allowed.iter().any(|s| s == site))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(jurisdiction: &str, operator: &str, store: &str) -> SiteConfig {
        SiteConfig {
            jurisdiction: jurisdiction.into(),
            operator: operator.into(),
            store: store.into(),
        }
    }

    /// The reference scenario.
    fn reference() -> Layout {
        Layout {
            jurisdictions: ["US", "SG", "CN"].map(String::from).into(),
            sites: [
                (
                    "us-east".to_string(),
                    site("US", "custodian", "sqlite:sites/us-east.db"),
                ),
                (
                    "sg-legacy".to_string(),
                    site("SG", "platform", "sqlite:sites/sg-legacy.db"),
                ),
            ]
            .into(),
            residency: [("US".to_string(), vec!["us-east".to_string()])].into(),
            collections: [(
                "profile".to_string(),
                CollectionConfig::of(
                    [
                        ("email".to_string(), FieldClass::Protected),
                        ("display_name".to_string(), FieldClass::Interoperable),
                    ]
                    .into(),
                ),
            )]
            .into(),
        }
    }

    fn keys(layout: &Layout) -> Vec<String> {
        layout.validate().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn reference_layout_is_valid() {
        let layout = reference();
        assert_eq!(layout.validate(), vec![]);
        assert!(layout.allows("US", "us-east"));
        assert!(!layout.allows("US", "sg-legacy"));
        assert!(!layout.allows("SG", "sg-legacy"), "no rule allows nothing");
        assert!(!layout.allows("CN", "us-east"));
        assert!(!layout.allows("XX", "us-east"));
        assert!(!layout.allows("US", "nowhere"));
    }

    #[test]
    fn a_site_abroad_may_be_allowed() {
        let mut layout = reference();
        layout
            .residency
            .insert("US".into(), vec!["us-east".into(), "sg-legacy".into()]);
        assert_eq!(layout.validate(), vec![]);
        assert!(layout.allows("US", "sg-legacy"));
    }

    #[test]
    fn names_are_checked() {
        let mut layout = reference();
        layout.jurisdictions.insert("usa".into());
        layout
            .sites
            .insert("Bad Site".into(), site("US", "x", "sqlite:b.db"));
        layout.collections.insert(
            "9lives".into(),
            CollectionConfig::of([("Email".to_string(), FieldClass::Protected)].into()),
        );
        assert_eq!(
            keys(&layout),
            vec![
                "jurisdictions",
                "sites.Bad Site",
                "collections.9lives",
                "collections.9lives.fields.Email"
            ]
        );
        assert!(is_name("a"));
        assert!(is_name(&format!("a{}", "-".repeat(63))));
        assert!(!is_name(&format!("a{}", "-".repeat(64))));
        assert!(!is_name("_a"));
        assert!(!is_name(""));
        assert!(is_jurisdiction_code("US"));
        assert!(!is_jurisdiction_code("Us"));
        assert!(!is_jurisdiction_code("USA"));
    }

    #[test]
    fn sites_are_checked() {
        let mut layout = reference();
        layout.sites.insert("a".into(), site("XX", " ", "sqlite:"));
        layout
            .sites
            .insert("b".into(), site("US", "p", "mysql://x"));
        layout
            .sites
            .insert("c".into(), site("US", "p", "sqlite:./sites//us-east.db"));
        layout
            .sites
            .insert("d".into(), site("US", "p", "postgres://db/d"));
        layout
            .sites
            .insert("e".into(), site("US", "p", "postgresql://db/d"));
        layout
            .sites
            .insert("f".into(), site("US", "p", "postgres://db/d"));
        assert_eq!(
            keys(&layout),
            vec![
                "sites.a.jurisdiction",
                "sites.a.operator",
                "sites.a.store",
                "sites.b.store",
                "sites.f.store",
                "sites.us-east.store",
            ]
        );
        let problems = layout.validate();
        assert!(problems[5].problem.contains("site `c`"), "{}", problems[5]);
    }

    #[test]
    fn redb_stores_are_refused_as_not_implemented() {
        let mut layout = reference();
        layout
            .sites
            .insert("r".into(), site("US", "p", "redb:sites/r.redb"));
        let problems = layout.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "sites.r.store");
        assert!(
            problems[0].problem.contains("not implemented"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn residency_is_checked() {
        let mut layout = reference();
        layout.residency.insert(
            "US".into(),
            vec!["us-east".into(), "nowhere".into(), "us-east".into()],
        );
        layout.residency.insert("SG".into(), vec![]);
        layout.residency.insert("XX".into(), vec!["us-east".into()]);
        assert_eq!(
            layout.validate(),
            vec![
                LayoutProblem {
                    key: "residency.SG".into(),
                    problem: "the rule allows no site: list at least one, or remove the rule"
                        .into()
                },
                LayoutProblem {
                    key: "residency.US[1]".into(),
                    problem: "site `nowhere` is not declared: add `sites.nowhere`".into()
                },
                LayoutProblem {
                    key: "residency.US[2]".into(),
                    problem: "site `us-east` is listed twice".into()
                },
                LayoutProblem {
                    key: "residency.XX".into(),
                    problem: "jurisdiction `XX` is not declared: add it to `jurisdictions`".into()
                },
            ]
        );
    }

    #[test]
    fn collections_need_a_field() {
        let mut layout = reference();
        layout
            .collections
            .insert("empty".into(), CollectionConfig::of(BTreeMap::new()));
        assert_eq!(keys(&layout), vec!["collections.empty.fields"]);
    }

    #[test]
    fn config_pieces_deserialise_strictly() {
        let site: SiteConfig = serde_json::from_str(
            r#"{"jurisdiction":"US","operator":"custodian","store":"sqlite:a.db"}"#,
        )
        .unwrap();
        assert_eq!(site.store, "sqlite:a.db");
        assert!(
            serde_json::from_str::<SiteConfig>(
                r#"{"jurisdiction":"US","operator":"c","store":"sqlite:a","extra":1}"#
            )
            .is_err()
        );
        let collection: CollectionConfig =
            serde_json::from_str(r#"{"fields":{"email":"protected","name":"interoperable"}}"#)
                .unwrap();
        assert_eq!(collection.fields["email"], FieldClass::Protected);
        assert_eq!(collection.fields["name"].as_str(), "interoperable");
        assert!(serde_json::from_str::<CollectionConfig>(r#"{"fields":{"a":"secret"}}"#).is_err());
    }
}
