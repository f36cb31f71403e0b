//! A data subject's own history in the log (`GET /v1/subjects/{id}/accesses`,
//! `sovereign subject accesses` and `sovereign subject verify`): which entries are about a
//! subject, what the history shows of each, and the check of a history against the log.
//!
//! The gateway answers with pages. Each page holds a signed checkpoint, the subject's log
//! pseudonym and the entries about that pseudonym since the subject's last erasure and below
//! an index (`before`, or the checkpoint's size), newest first, each with its exact bytes and
//! its inclusion proof. [`check_history`] checks:
//!
//! - every checkpoint is signed by the log (and cosigned by a quorum, when one is asked), and
//!   the checkpoints of the pages are linked by consistency proofs (or left to the mirror);
//! - every entry is in the tree at its index (RFC 6962 inclusion proof), is about the
//!   pseudonym, and is shown as it is (what the page shows equals [`shown`] of its bytes);
//! - each page continues the one before, entries run newest first without overlap, and a
//!   finished history lists as many entries as its first page says there are;
//! - with a mirror of the log (a directory or a URL), after verifying the mirror whole:
//!   that its tree has the pages' checkpoints as prefixes, that the subject's last erasure
//!   is just before where the history starts, and that the entries about the pseudonym it
//!   holds in the range the pages cover are exactly those listed. An entry left out is then
//!   named, with its index: proof that the gateway withheld it.
//!
//! Which entries are about a subject is [`pseudonyms_named`], used alike by the gateway's
//! index, by `audit search --subject` and by the mirror's side of the check.

use std::collections::BTreeMap;

use anyhow::anyhow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tlog::checkpoint::{Checkpoint, open_checkpoint};
use tlog::cosignature::WitnessPolicy;
use tlog::note::Verifier;
use tlog::{
    FetcherTileReader, Hash, TileFetcher, check_record, hash_from_base64, leaf_hash,
    tile_hash_reader, tree_hash,
};

use crate::failure::{check_failed, usage};
use crate::progress::Progress;
use crate::verify::verify_entries;

/// The subject pseudonyms an entry names: an access entry's `subject`, a data event's, run's
/// or alert's `details.subject`, and an access request's `details.subjects` (custody entries).
pub fn pseudonyms_named(entry: &Value) -> Vec<&str> {
    let details = &entry["details"];
    let mut named: Vec<&str> = [&entry["subject"], &details["subject"]]
        .into_iter()
        .filter_map(Value::as_str)
        .collect();
    if let Some(list) = details["subjects"].as_array() {
        named.extend(list.iter().filter_map(Value::as_str));
    }
    // An alert about a bulk action names no subject (`""`).
    named.retain(|p| !p.is_empty());
    named.sort_unstable();
    named.dedup();
    named
}

/// The members of an entry that [`pseudonyms_named`] and [`erased`] read (`kind`, `subject`
/// and `details`), as an object holding only those; `None` where the bytes are not a JSON
/// object in UTF-8 (which name no subject). The gateway's subject index reads every entry the
/// log takes through this: most of an access entry is its decisions, which building the whole
/// entry as a `Value` allocated member by member (about a third of the index's cost).
/// The rule stays the one above: it is applied to these members, which keep their values.
/// A member given twice keeps its last value, as in a `Value`.
///
/// It answers as the whole entry parsed as a `Value` does, with one exception. The members it
/// skips are only checked to be well-formed JSON, so an entry that `Value` refuses only for
/// what such a member holds still names its subject here. That covers a number out of `f64`'s
/// range, a lone UTF-16 surrogate escape, or nesting deeper than 128. serde_json never writes
/// these, so no gateway's entry holds one. A log that does fails every monitor's check of it
/// ("not JSON"), and the history of that subject fails to read at that entry.
pub fn about_subjects(entry: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(entry).ok()?;
    serde_json::from_str::<AboutSubjects>(text)
        .ok()
        .map(|about| Value::Object(about.0))
}

/// See [`about_subjects`].
struct AboutSubjects(serde_json::Map<String, Value>);

impl<'de> Deserialize<'de> for AboutSubjects {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(AboutSubjects(serde_json::Map::new()))
    }
}

impl<'de> serde::de::Visitor<'de> for AboutSubjects {
    type Value = AboutSubjects;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a log entry (a JSON object)")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(mut self, mut map: M) -> Result<Self, M::Error> {
        while let Some(name) = map.next_key::<MemberName>()? {
            match name.0 {
                Some(name) => {
                    self.0.insert(name.to_string(), map.next_value()?);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(self)
    }
}

/// A member's name: one [`about_subjects`] keeps, or `None` for any other (not copied).
struct MemberName(Option<&'static str>);

impl<'de> Deserialize<'de> for MemberName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = MemberName;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<MemberName, E> {
                Ok(MemberName(
                    ["kind", "subject", "details"]
                        .into_iter()
                        .find(|kept| *kept == name),
                ))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// Whether `entry` is about the subject of log pseudonym `pseudonym`.
pub fn names(entry: &Value, pseudonym: &str) -> bool {
    pseudonyms_named(entry).contains(&pseudonym)
}

/// The pseudonym a subject's erasure entry erased, if `entry` is one. An id registered again
/// after its erasure has the same pseudonym: its history starts after the last erasure, so
/// that nobody is shown the history of the subject the id named before.
pub fn erased(entry: &Value) -> Option<&str> {
    (entry["kind"] == "erasure")
        .then(|| entry["details"]["subject"].as_str())
        .flatten()
        .filter(|p| !p.is_empty())
}

/// Who did what, as a subject's history shows it: the accessor by entity, location and
/// roles, and by id only where the gateway is configured to show ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accessor {
    pub entity: String,
    pub location: String,
    pub roles: Vec<String>,
    /// The accessor's id (the token's `sub`), only where the gateway's `history.show_accessor_ids`
    /// is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The custodian grant an access used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrantShown {
    pub id: String,
    pub kind: String,
}

/// What a subject's history shows of one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Shown {
    pub time: String,
    /// The entry's kind: `access`, `custody`, `alert`, `erasure`, `export`, `migration`,
    /// `algorithm-run`.
    pub kind: String,
    /// An access's action (`read`, `write`, ...), a custody entry's event
    /// (`access-request-approved`, ...), an alert's name, or the kind of a data event.
    pub action: String,
    pub collections: Vec<String>,
    /// The field classes decided (access entries).
    pub field_classes: Vec<String>,
    /// The fields by name (access entries, access requests).
    pub fields: Vec<String>,
    /// `allow`, `deny` or `partial` for an access; a data event's or run's outcome if it
    /// records one.
    pub outcome: Option<String>,
    /// Who acted: an access's principal, another entry's actor.
    pub accessor: Option<Accessor>,
    pub purpose: String,
    pub reason_code: String,
    pub grant: Option<GrantShown>,
}

/// What the history shows of `entry` (a parsed log entry), with the accessor's id only if
/// `with_ids`.
pub fn shown(entry: &Value, with_ids: bool) -> Shown {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let texts = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let details = &entry["details"];
    let kind = text(&entry["kind"]);
    let who = if entry["principal"].is_object() {
        &entry["principal"]
    } else {
        &entry["actor"]
    };
    let accessor = who.is_object().then(|| Accessor {
        entity: text(&who["entity"]),
        location: text(&who["location"]),
        roles: texts(&who["roles"]),
        id: with_ids.then(|| text(&who["id"])),
    });
    let action = [&entry["action"], &entry["event"], &entry["alert"]]
        .into_iter()
        .find_map(Value::as_str)
        .map_or_else(|| kind.clone(), str::to_string);
    let mut collections: Vec<String> = entry["collection"]
        .as_str()
        .or_else(|| details["collection"].as_str())
        .map(|c| vec![c.to_string()])
        .unwrap_or_else(|| texts(&details["collections"]));
    collections.sort();
    collections.dedup();
    let mut field_classes: Vec<String> = entry["decisions"]
        .as_array()
        .map(|decisions| {
            decisions
                .iter()
                .filter_map(|d| d["field_class"].as_str())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    field_classes.sort();
    field_classes.dedup();
    let grant_of = |g: &Value| {
        g.is_object().then(|| GrantShown {
            id: text(&g["id"]),
            kind: text(&g["kind"]),
        })
    };
    let either = |name: &str| {
        entry[name]
            .as_str()
            .or_else(|| details[name].as_str())
            .map(str::to_string)
    };
    Shown {
        time: text(&entry["time"]),
        kind,
        action,
        collections,
        field_classes,
        fields: if entry["fields"].is_array() {
            texts(&entry["fields"])
        } else {
            texts(&details["fields"])
        },
        outcome: either("outcome"),
        accessor,
        purpose: either("purpose").unwrap_or_default(),
        reason_code: either("reason_code").unwrap_or_default(),
        grant: grant_of(&entry["grant"]).or_else(|| grant_of(&details["grant"])),
    }
}

/// One entry of a history page: what it shows, the entry's exact bytes (UTF-8 JSON, as in
/// the log) and its inclusion proof against the page's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    /// The entry's index in the log.
    pub index: u64,
    #[serde(flatten)]
    pub shown: Shown,
    /// The entry exactly as the log holds it (its SHA-256 leaf hash is in the tree).
    pub entry: String,
    /// The RFC 6962 inclusion proof of the entry in the page's checkpoint: base64 hashes,
    /// from the leaf up.
    pub proof: Vec<String>,
}

/// One page of a subject's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPage {
    /// The subject's log pseudonym: every entry about the subject names it, so anyone with
    /// a copy of the public log can list them all.
    pub pseudonym: String,
    /// The signed checkpoint (C2SP signed note) every proof of the page is against.
    pub checkpoint: String,
    /// Its tree size.
    pub size: u64,
    /// The page lists entries below this index: the request's `before`, or `size`.
    pub below: u64,
    /// The history starts at this index: 0, or the entry after the subject's last erasure
    /// below `size` (an id registered again names another subject).
    pub since: u64,
    /// How many entries about the subject are in `since..size`.
    pub total: u64,
    /// Newest first.
    pub entries: Vec<HistoryEntry>,
    /// Where the next page starts (`?before=`), or none when this page reaches the oldest.
    pub next_before: Option<u64>,
}

/// Several pages of one history, in the order they were fetched (`subject accesses --all`),
/// with the consistency proofs between their checkpoints (the log grows while they are
/// fetched), so that offline too they are shown to be views of one log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    pub pages: Vec<HistoryPage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consistency: Vec<Consistency>,
}

/// An RFC 6962 consistency proof between two tree sizes, as `/log/proof/consistency`
/// answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consistency {
    pub from: u64,
    pub to: u64,
    /// Base64 hashes.
    pub hashes: Vec<String>,
}

/// The pairs of checkpoint sizes, smaller then larger, that consecutive distinct sizes of
/// `pages` form: the consistency proofs a history of those pages needs.
pub fn sizes_to_link(pages: &[HistoryPage]) -> Vec<(u64, u64)> {
    let mut sizes: Vec<u64> = pages.iter().map(|p| p.size).filter(|s| *s > 0).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes.windows(2).map(|w| (w[0], w[1])).collect()
}

impl History {
    /// Reads a history as `subject accesses --json` writes it: one page, or `{"pages": [...]}`.
    pub fn from_json(bytes: &[u8]) -> anyhow::Result<History> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| usage(format!("not JSON: {e}")))?;
        if value.get("pages").is_some() {
            serde_json::from_value(value).map_err(|e| check_failed(format!("not a history: {e}")))
        } else {
            let page = serde_json::from_value(value)
                .map_err(|e| check_failed(format!("not a history page: {e}")))?;
            Ok(History {
                pages: vec![page],
                consistency: Vec::new(),
            })
        }
    }
}

/// What a history's check found.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryCheck {
    pub pseudonym: String,
    /// The first page's checkpoint size.
    pub size: u64,
    /// Where the history starts: 0, or after the subject's last erasure.
    pub since: u64,
    pub entries: u64,
    /// Entries the subject made themself (principal `subject:` and the pseudonym): every
    /// request of theirs is logged under this pseudonym, so finding them here ties it to them.
    pub own_requests: u64,
    /// The range the history covers whole: `covers_from..covers_below`. A history of
    /// unfinished pages covers only down to its last page's oldest entry.
    pub covers_from: u64,
    pub covers_below: u64,
    /// With a mirror: its verified size, and that it lists exactly these entries there.
    pub mirror_size: Option<u64>,
}

impl std::fmt::Display for HistoryCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "history of pseudonym {}: {} entries, each proven in the log's signed checkpoint and shown as logged; {} of them the subject's own requests",
            self.pseudonym, self.entries, self.own_requests
        )?;
        let range = format!("entries {}..{}", self.covers_from, self.covers_below);
        let since = if self.since > 0 {
            format!(
                " (the history starts after the subject's erasure at {})",
                self.since - 1
            )
        } else {
            String::new()
        };
        match self.mirror_size {
            Some(m) => write!(
                f,
                "complete: the mirror (verified, {m} entries) has no other entry about this pseudonym among {range}{since}"
            ),
            None => write!(
                f,
                "completeness not checked: give --mirror DIR|URL, a copy of the public log, to compare {range}{since}"
            ),
        }
    }
}

/// How a history is trusted: the log's key, a witness quorum if asked, and the subject's
/// pseudonym if they know it already (the gateway's word otherwise).
pub struct Trust<'a> {
    pub log: &'a Verifier,
    pub witnesses: Option<&'a WitnessPolicy>,
    pub pseudonym: Option<&'a str>,
}

impl Trust<'_> {
    fn open(&self, note: &str) -> anyhow::Result<Checkpoint> {
        if let Some(policy) = self.witnesses {
            crate::witness::check_quorum(note.as_bytes(), self.log, policy)
                .map_err(|e| anyhow!("its checkpoint is not witnessed: {e}"))?;
        }
        open_checkpoint(note.as_bytes(), self.log)
            .map_err(|e| anyhow!("its checkpoint is not the log's: {e}"))
    }
}

/// Checks a history (see the module documentation); with `mirror`, also its completeness.
pub fn check_history(
    history: &History,
    trust: &Trust<'_>,
    mirror: Option<&dyn TileFetcher>,
    progress: &mut dyn Progress,
) -> anyhow::Result<HistoryCheck> {
    let first = history
        .pages
        .first()
        .ok_or_else(|| check_failed("the history has no page"))?;
    let pseudonym = first.pseudonym.clone();
    if let Some(pinned) = trust.pseudonym
        && pinned != pseudonym
    {
        return Err(check_failed(format!(
            "the history is of pseudonym {pseudonym}, not of yours ({pinned})"
        )));
    }
    let since = first.since;
    let mut roots: BTreeMap<u64, Hash> = BTreeMap::new();
    let mut listed: BTreeMap<u64, Hash> = BTreeMap::new();
    let mut own_requests = 0;
    let mut below = first.below;
    let mut previous: Option<&HistoryPage> = None;
    for (number, page) in history.pages.iter().enumerate() {
        let at = |what: String| check_failed(format!("page {}: {what}", number + 1));
        if page.pseudonym != pseudonym {
            return Err(at(format!(
                "it is the history of pseudonym {}, not {pseudonym}",
                page.pseudonym
            )));
        }
        if page.since != since {
            return Err(at(format!(
                "it starts the history at {}, the first page at {since}",
                page.since
            )));
        }
        if let Some(previous) = previous
            && previous.next_before != Some(page.below)
        {
            return Err(at(format!(
                "it lists entries below {}, which does not continue the page before it (next: {:?})",
                page.below, previous.next_before
            )));
        }
        if page.below > page.size || page.size < first.size {
            return Err(at(format!(
                "it lists entries below {} under a checkpoint of {} (the first page's: {})",
                page.below, page.size, first.size
            )));
        }
        let checkpoint = trust
            .open(&page.checkpoint)
            .map_err(|e| at(format!("{e:#}")))?;
        if checkpoint.size != page.size {
            return Err(at(format!(
                "it says its checkpoint has {} entries; the checkpoint says {}",
                page.size, checkpoint.size
            )));
        }
        if roots
            .insert(checkpoint.size, checkpoint.hash)
            .is_some_and(|h| h != checkpoint.hash)
        {
            return Err(at(format!(
                "two checkpoints of size {} with different roots: the log forked",
                checkpoint.size
            )));
        }
        for item in &page.entries {
            let index = item.index;
            if index >= below || index < since {
                return Err(at(format!(
                    "entry {index} is out of place (entries come newest first, each below {below}, none before {since})"
                )));
            }
            below = index;
            if check_item(item, &checkpoint, &pseudonym).map_err(|e| at(format!("{e:#}")))? {
                own_requests += 1;
            }
            listed.insert(index, leaf_hash(item.entry.as_bytes()));
        }
        if let Some(next) = page.next_before
            && page.entries.last().map(|e| e.index) != Some(next)
        {
            return Err(at(format!(
                "its next page starts before {next}, which is not its oldest entry"
            )));
        }
        previous = Some(page);
    }
    check_consistency(&roots, &history.consistency, mirror.is_some())?;
    let finished = previous.is_some_and(|last| last.next_before.is_none());
    let covers_from = if finished { since } else { below };
    if finished && first.below == first.size && listed.len() as u64 != first.total {
        return Err(check_failed(format!(
            "the history lists {} entries but its first page says there are {} in {since}..{}",
            listed.len(),
            first.total,
            first.size
        )));
    }
    let mirror_size = match mirror {
        None => None,
        Some(log) => {
            let expected = Expected {
                pseudonym: &pseudonym,
                roots: &roots,
                listed: &listed,
                range: (covers_from, first.below),
                since,
                size: first.size,
            };
            Some(compare_with_mirror(log, trust.log, &expected, progress)?)
        }
    };
    Ok(HistoryCheck {
        pseudonym,
        size: first.size,
        since,
        entries: listed.len() as u64,
        own_requests,
        covers_from,
        covers_below: first.below,
        mirror_size,
    })
}

/// The pages' checkpoints are views of one log: each consecutive pair of sizes is linked by
/// a consistency proof. A pair without one passes only if a mirror is to check them (the
/// mirror's tree must have every checkpoint as a prefix).
fn check_consistency(
    roots: &BTreeMap<u64, Hash>,
    proofs: &[Consistency],
    mirror: bool,
) -> anyhow::Result<()> {
    let sizes: Vec<(&u64, &Hash)> = roots.iter().filter(|(s, _)| **s > 0).collect();
    for pair in sizes.windows(2) {
        let ((&from, from_root), (&to, to_root)) = (pair[0], pair[1]);
        let Some(proof) = proofs.iter().find(|p| p.from == from && p.to == to) else {
            if mirror {
                continue;
            }
            return Err(check_failed(format!(
                "the pages' checkpoints of {from} and {to} entries are not shown to be of one log: fetch the history with `subject accesses --all` (which adds the proofs), or give --mirror"
            )));
        };
        let hashes = proof
            .hashes
            .iter()
            .map(|h| hash_from_base64(h))
            .collect::<Option<Vec<Hash>>>()
            .ok_or_else(|| check_failed("a consistency proof is not base64 hashes"))?;
        tlog::check_tree(&hashes, to, to_root, from, from_root).map_err(|e| {
            check_failed(format!(
                "the pages' checkpoints of {from} and {to} entries are not of one log (it forked): {e}"
            ))
        })?;
    }
    Ok(())
}

/// One listed entry: in the tree at its index, about the pseudonym, shown as logged. Answers
/// whether the subject made it themself.
fn check_item(
    item: &HistoryEntry,
    checkpoint: &Checkpoint,
    pseudonym: &str,
) -> anyhow::Result<bool> {
    let index = item.index;
    let proof = item
        .proof
        .iter()
        .map(|h| hash_from_base64(h))
        .collect::<Option<Vec<Hash>>>()
        .ok_or_else(|| anyhow!("entry {index}: its proof is not base64 hashes"))?;
    check_record(
        &proof,
        checkpoint.size,
        &checkpoint.hash,
        index,
        &leaf_hash(item.entry.as_bytes()),
    )
    .map_err(|e| anyhow!("entry {index} is not in the log at that index as given: {e}"))?;
    let entry: Value =
        serde_json::from_str(&item.entry).map_err(|e| anyhow!("entry {index} is not JSON: {e}"))?;
    if !names(&entry, pseudonym) {
        return Err(anyhow!("entry {index} is not about pseudonym {pseudonym}"));
    }
    let with_ids = item.shown.accessor.as_ref().is_some_and(|a| a.id.is_some());
    let logged = shown(&entry, with_ids);
    if logged != item.shown {
        return Err(anyhow!(
            "entry {index} is not shown as logged: {}",
            difference(&item.shown, &logged)
        ));
    }
    Ok(entry["principal"]["id"].as_str() == Some(&format!("subject:{pseudonym}")))
}

/// The first member where what was shown differs from what is logged.
fn difference(given: &Shown, logged: &Shown) -> String {
    let (given, logged) = (
        serde_json::to_value(given).unwrap_or_default(),
        serde_json::to_value(logged).unwrap_or_default(),
    );
    let empty = serde_json::Map::new();
    let logged = logged.as_object().unwrap_or(&empty);
    for (name, value) in given.as_object().unwrap_or(&empty) {
        let other = logged.get(name).unwrap_or(&Value::Null);
        if value != other {
            return format!("`{name}` shows {value} but the entry says {other}");
        }
    }
    "a member differs".into()
}

/// What a history says the log holds, for the mirror's side of the check.
struct Expected<'a> {
    pseudonym: &'a str,
    /// The pages' checkpoints: size → root.
    roots: &'a BTreeMap<u64, Hash>,
    /// The entries listed: index → leaf hash.
    listed: &'a BTreeMap<u64, Hash>,
    /// The range the history covers whole.
    range: (u64, u64),
    /// Where it says the history starts, and the checkpoint that start is relative to.
    since: u64,
    size: u64,
}

/// Verifies the mirror whole, then compares: the pages' checkpoints are prefixes of its tree,
/// the subject's last erasure below the first checkpoint is just before `since`, and the
/// entries about the pseudonym in the range covered are exactly those listed.
fn compare_with_mirror(
    log: &dyn TileFetcher,
    verifier: &Verifier,
    expected: &Expected<'_>,
    progress: &mut dyn Progress,
) -> anyhow::Result<u64> {
    let (from, to) = expected.range;
    let pseudonym = expected.pseudonym;
    let mut found: BTreeMap<u64, Hash> = BTreeMap::new();
    let mut last_erasure: Option<u64> = None;
    let checkpoint = verify_entries(log, verifier, None, progress, &mut |index, _, bytes| {
        // The range covered ends at or below the first checkpoint: nothing above it counts.
        if index >= expected.size {
            return Ok(());
        }
        // Only the members the subject rule reads, as the gateway's index reads them; the
        // whole entry is checked strictly by `verify_entries` itself.
        let entry =
            about_subjects(bytes).ok_or_else(|| format!("entry {index} is not a JSON object"))?;
        if erased(&entry) == Some(pseudonym) {
            last_erasure = Some(index);
        }
        if (from..to).contains(&index) && names(&entry, pseudonym) {
            found.insert(index, leaf_hash(bytes));
        }
        Ok(())
    })?;
    let biggest = expected.roots.keys().next_back().copied().unwrap_or(0);
    if checkpoint.size < biggest {
        return Err(usage(format!(
            "the mirror has {} entries, fewer than the history's checkpoint of {biggest}: bring it up to date",
            checkpoint.size
        )));
    }
    let reader = tile_hash_reader(checkpoint.size, checkpoint.hash, FetcherTileReader(log));
    for (&size, root) in expected.roots {
        let mirrored = tree_hash(size, &reader)
            .map_err(|e| check_failed(format!("the mirror's tree at size {size}: {e}")))?;
        if &mirrored != root {
            return Err(check_failed(format!(
                "the history's checkpoint of size {size} is not a prefix of the mirror's log: the log forked"
            )));
        }
    }
    let since = last_erasure.map_or(0, |i| i + 1);
    if since != expected.since {
        return Err(check_failed(format!(
            "the history starts at {} but the subject's last erasure below {} {}",
            expected.since,
            expected.size,
            match last_erasure {
                Some(i) => format!("is entry {i}"),
                None => "does not exist: it starts at 0".into(),
            }
        )));
    }
    let listed = expected.listed;
    if let Some((index, _)) = found.iter().rev().find(|(i, _)| !listed.contains_key(i)) {
        let missing = found.keys().filter(|i| !listed.contains_key(i)).count();
        return Err(check_failed(format!(
            "the history left out {missing} entr{} about pseudonym {pseudonym} that the log holds, the newest at index {index}",
            if missing == 1 { "y" } else { "ies" }
        )));
    }
    if let Some((index, _)) = listed.iter().find(|(i, h)| found.get(i) != Some(h)) {
        return Err(check_failed(format!(
            "entry {index} of the history is not the mirror's entry {index}"
        )));
    }
    Ok(checkpoint.size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_name_subjects_in_three_places() {
        let access = json!({"kind": "access", "subject": "p1"});
        let run = json!({"kind": "algorithm-run", "details": {"subject": "p2"}});
        let request = json!({"kind": "custody", "details": {"subjects": ["p3", "p1"]}});
        let egress = json!({"kind": "egress", "subject": null, "details": {"rows": 3}});
        assert_eq!(pseudonyms_named(&access), ["p1"]);
        assert_eq!(pseudonyms_named(&run), ["p2"]);
        assert_eq!(pseudonyms_named(&request), ["p1", "p3"]);
        assert!(pseudonyms_named(&egress).is_empty());
        assert!(names(&request, "p3") && !names(&run, "p1"));
    }

    #[test]
    fn the_members_read_alone_name_what_the_whole_entry_names() {
        let entries: &[&[u8]] = &[
            br#"{"kind":"access","time":"t","subject":"p1","decisions":[{"subject":"no"}]}"#,
            br#"{"kind":"erasure","details":{"subject":"p2","stores":["a"]}}"#,
            br#"{"kind":"custody","details":{"subjects":["p3","p1",7,""]},"subject":null}"#,
            // A member given twice keeps its last value; escaped names are names.
            br#"{"subject":"first","s\u0075bject":"last","kind":"access"}"#,
            br#"{"kind":"access","subject":{"nested":"p9"},"details":[1,2]}"#,
            br#"["not", "an", "object"]"#,
            br#"{"kind":"access","subject":"p1""#,
            b"{\"kind\":\"access\",\"subject\":\"p1\",\"x\":\"\xff\"}",
            br#" {"kind":"access","subject":"p1"} "#,
        ];
        for bytes in entries {
            let whole: Option<Value> = std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| serde_json::from_str(text).ok());
            let about = about_subjects(bytes);
            let named = |entry: &Option<Value>| {
                entry.as_ref().map(|e| {
                    let erased = erased(e).map(str::to_string);
                    (pseudonyms_named(e).join(","), erased)
                })
            };
            let whole_named =
                named(&whole).filter(|_| whole.as_ref().is_some_and(Value::is_object));
            assert_eq!(
                named(&about),
                whole_named,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(
            pseudonyms_named(&about_subjects(entries[3]).unwrap()),
            ["last"]
        );
        // The exception the documentation names: a skipped member `Value` refuses.
        let deep = format!(
            r#"{{"subject":"p1","x":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for refused in [
            br#"{"subject":"p1","x":1e400}"#.as_slice(),
            br#"{"subject":"p1","x":"\ud800"}"#,
            deep.as_bytes(),
        ] {
            assert!(serde_json::from_slice::<Value>(refused).is_err());
            assert_eq!(pseudonyms_named(&about_subjects(refused).unwrap()), ["p1"]);
        }
    }

    #[test]
    fn an_access_shows_who_by_entity_location_and_roles() {
        let access = json!({"kind": "access", "time": "2026-12-07T10:00:00.000Z",
            "principal": {"id": "ana", "entity": "usds", "location": "US", "roles": ["support"]},
            "action": "read", "subject": "p1", "collection": "profile", "outcome": "partial",
            "decisions": [{"field_class": "protected"}, {"field_class": "interoperable"}],
            "purpose": "support", "reason_code": "ticket", "grant": {"id": "r-1", "kind": "approved"}});
        let seen = shown(&access, false);
        assert_eq!(seen.action, "read");
        assert_eq!(seen.collections, ["profile"]);
        assert_eq!(seen.field_classes, ["interoperable", "protected"]);
        assert_eq!(seen.outcome.as_deref(), Some("partial"));
        let accessor = seen.accessor.unwrap();
        assert_eq!((accessor.entity.as_str(), accessor.id), ("usds", None));
        assert_eq!(seen.grant.unwrap().kind, "approved");
        assert_eq!(
            shown(&access, true).accessor.unwrap().id.as_deref(),
            Some("ana")
        );
        let approved = json!({"kind": "custody", "event": "access-request-approved",
            "actor": {"id": "cu", "entity": "custodian", "location": "US", "roles": []},
            "details": {"subjects": ["p1"], "collections": ["profile"], "fields": ["ssn"],
                "purpose": "fraud"}});
        let seen = shown(&approved, false);
        assert_eq!(seen.action, "access-request-approved");
        assert!(seen.field_classes.is_empty());
        assert_eq!(seen.fields, ["ssn"]);
        assert_eq!(seen.purpose, "fraud");
    }
}
