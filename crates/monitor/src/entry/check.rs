//! The format check: is an entry a v1 or v2 log entry, member by member?
//!
//! Every entry is checked in one pass of the JSON parser, without building a
//! tree: the monitor reads every entry of the log, so the check must cost about
//! what parsing does. Each object with known members (the entry, `principal`,
//! each decision) records what it saw of each known member; the checks then run
//! over those records in a fixed order, so the first problem reported does not
//! depend on the order of members in the entry.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// What a valid entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// The format version, `v`: 1 or 2.
    pub version: u8,
    /// `access` or `config`; with v2 also `custody`, `alert`, `egress`, `erasure`,
    /// `export` or `migration`.
    pub kind: &'static str,
    /// For `access`: `allow`, `deny` or `partial`.
    pub outcome: Option<&'static str>,
}

const ACTIONS: &[&str] = &[
    "register", "list", "read", "write", "delete", "export", "egress", "scan", "migrate", "run",
    "compute", "history",
];
const OUTCOMES: &[&str] = &["allow", "deny", "partial"];
const GRANT_KINDS: &[&str] = &["approved", "break-glass", "release"];
const SEVERITIES: &[&str] = &["high", "medium"];
/// The events of `custody` entries (format v2).
const CUSTODY_EVENTS: &[&str] = &[
    "access-request-created",
    "access-request-approved",
    "access-request-denied",
    "grant-revoked",
    "break-glass-started",
    "break-glass-reviewed",
    "policy-proposed",
    "policy-activated",
    "invariants-proposed",
    "invariants-activated",
    "algorithm-submitted",
    "algorithm-activated",
    "algorithm-fetched",
    "algorithm-deactivated",
    "jurisdiction-suspended",
    "jurisdiction-lifted",
];

/// Checks one log entry against the entry format, v1 or v2: a single JSON object
/// (no surrounding whitespace, no member twice in any object) with `v` = 1 or 2, a
/// known `kind`, an RFC 3339 UTC `time` with milliseconds, and every member its kind
/// (and version) requires, of the right type and form. Unknown extra members are
/// allowed. v2 adds members to `access` entries (what replay needs) and the kinds
/// `custody` and `alert`.
pub fn check_entry(entry: &[u8]) -> Result<EntryInfo, String> {
    if entry.first() != Some(&b'{') || entry.last() != Some(&b'}') {
        return Err("not a single JSON object (it must start with '{' and end with '}')".into());
    }
    let parsed = match std::str::from_utf8(entry) {
        // Checked once here, the parser need not check each string again: that was a tenth of
        // the work.
        Ok(text) => serde_json::from_str(text),
        // The parser's message says where the bad byte is.
        Err(_) => serde_json::from_slice(entry),
    };
    let TopLevel(seen) = parsed.map_err(|e| format!("not valid JSON: {e}"))?;
    let e = Members {
        table: TOP,
        seen: &seen,
        nested: false,
        last: Cell::new(0),
    };
    check_top(&e)
}

fn check_top(e: &Members<'_, '_>) -> Result<EntryInfo, String> {
    let version = match e.get("v")? {
        Seen::Number(Number::U(1)) => 1,
        Seen::Number(Number::U(2)) => 2,
        other => return Err(e.wrong("v", "the number 1 or 2", other).to_string()),
    };
    let kind = e.string("kind")?;
    let time = e.string("time")?;
    if !is_rfc3339_utc_millis(time) {
        return Err(format!(
            "member \"time\" must be an RFC 3339 UTC time with milliseconds (like 2026-11-22T00:16:08.439Z), not {}",
            show_str(time)
        ));
    }
    let (kind, outcome) = match (kind, version) {
        ("access", _) => ("access", Some(check_access(e, version)?)),
        ("config", _) => {
            check_config(e)?;
            ("config", None)
        }
        ("custody", 2) => {
            check_custody(e)?;
            ("custody", None)
        }
        ("alert", 2) => {
            check_alert(e)?;
            ("alert", None)
        }
        (data @ ("egress" | "erasure" | "export" | "migration" | "algorithm-run"), 2) => {
            check_data_event(e)?;
            (data_event_kind(data), None)
        }
        (
            "custody" | "alert" | "egress" | "erasure" | "export" | "migration" | "algorithm-run",
            _,
        ) => {
            return Err(format!(
                "kind {} exists from format v2 on; this entry says \"v\": {version}",
                show_str(kind)
            ));
        }
        (other, _) => return Err(format!("unknown kind {}", show_str(other))),
    };
    Ok(EntryInfo {
        version,
        kind,
        outcome,
    })
}

fn check_access(e: &Members<'_, '_>, version: u8) -> Result<&'static str, Bad> {
    e.object("principal")?;
    e.one_of("action", ACTIONS)?;
    // null on bulk actions (egress, scan), which concern no one subject.
    if !matches!(e.get("subject")?, Seen::Null) {
        e.hex("subject", 32)?;
    }
    // Members are asked for in the order of TOP (see `find`).
    let v2 = version >= 2;
    e.string("subject_jurisdiction")?;
    e.string("site")?;
    if v2 {
        e.string("site_jurisdiction")?;
    }
    e.string_or_null("collection")?;
    if v2 {
        e.bool("approval_required")?;
        e.bool("suspended")?;
    }
    e.strings("fields")?;
    let outcome = e.one_of("outcome", OUTCOMES)?;
    e.array("decisions")?;
    e.strings("policies")?;
    e.hex("policy_set", 64)?;
    e.string("purpose")?;
    e.string("reason_code")?;
    if v2 {
        e.integer("context_time")?;
        e.object_or_null("grant")?;
        e.optional_bool("own_data")?;
    }
    Ok(outcome)
}

fn check_grant(g: &Members<'_, '_>) -> Result<(), Bad> {
    g.string("id")?;
    g.one_of("kind", GRANT_KINDS)?;
    Ok(())
}

/// `custody` entries (v2): an event, who caused it, and what it concerned.
fn check_custody(e: &Members<'_, '_>) -> Result<(), Bad> {
    let event = e.one_of("event", CUSTODY_EVENTS)?;
    e.object_or_null("actor")?;
    if event == "policy-activated" {
        // Which policy set now decides, and on whose signatures.
        e.object("details")
    } else {
        e.any_object("details")
    }
}

/// Checked while parsing, wherever `details` appears; reported only for the
/// `policy-activated` event.
fn check_activation_details(d: &Members<'_, '_>) -> Result<(), Bad> {
    d.hex("policy_set", 64)?;
    // null when there was none: the first activation, of the set `sovereign init` wrote.
    if !matches!(d.get("previous")?, Seen::Null) {
        d.hex("previous", 64)?;
    }
    d.strings("signers")?;
    Ok(())
}

/// `alert` entries (v2).
/// `egress`, `erasure`, `export` and `migration`: who (or null) and an object of counts,
/// digests and pseudonyms.
fn check_data_event(e: &Members<'_, '_>) -> Result<(), Bad> {
    e.object_or_null("actor")?;
    e.any_object("details")
}

fn data_event_kind(kind: &str) -> &'static str {
    match kind {
        "egress" => "egress",
        "erasure" => "erasure",
        "export" => "export",
        "algorithm-run" => "algorithm-run",
        _ => "migration",
    }
}

fn check_alert(e: &Members<'_, '_>) -> Result<(), Bad> {
    e.string("alert")?;
    e.one_of("severity", SEVERITIES)?;
    e.object_or_null("actor")?;
    e.any_object("details")
}

/// Checked while parsing, wherever `principal` appears; reported only if the
/// entry's kind requires it.
fn check_principal(p: &Members<'_, '_>) -> Result<(), Bad> {
    p.string("id")?;
    p.string("entity")?;
    p.string("entity_country")?;
    let location = p.string("location")?;
    if !(location.len() == 2 && location.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(Bad {
            path: p.path("location"),
            what: format!("must be 2 upper-case letters, not {}", show_str(location)),
        });
    }
    p.strings("clearance")?;
    p.strings("roles")?;
    p.string("network_zone")?;
    Ok(())
}

fn check_decision(d: &Members<'_, '_>) -> Result<(), Bad> {
    d.string_or_null("field_class")?;
    d.bool("allowed")?;
    d.strings("policies")?;
    // Only on entries about every jurisdiction.
    d.optional_string("subject_jurisdiction")?;
    d.optional_bool("suspended")?;
    Ok(())
}

fn check_config(e: &Members<'_, '_>) -> Result<(), Bad> {
    e.string("event")?;
    e.hex("policy_set", 64)?;
    e.strings("policies")?;
    e.hex("config_sha256", 64)?;
    e.string("version")?;
    Ok(())
}

/// A member that is not what the format wants: where, and what is wrong.
#[derive(Debug)]
struct Bad {
    /// The member's path below the object that reports it: `outcome` at the top,
    /// `.location` or `[2].allowed` below.
    path: String,
    /// What is wrong, e.g. `is missing`, `must be a string, not null`.
    what: String,
}

impl Bad {
    /// The same problem, seen from the enclosing object or array.
    fn under(self, parent: &str) -> Bad {
        Bad {
            path: format!("{parent}{}", self.path),
            what: self.what,
        }
    }
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "member \"{}\" {}", self.path, self.what)
    }
}

impl From<Bad> for String {
    fn from(b: Bad) -> String {
        b.to_string()
    }
}

/// How a member's value is checked while parsing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Kept as is (scalars), or skipped (arrays and objects).
    Any,
    /// An array whose elements must all be strings.
    Strings,
    /// The `decisions` array.
    Decisions,
    /// The `principal` object.
    Principal,
    /// One element of `decisions`.
    Decision,
    /// The `grant` object of v2 access entries.
    Grant,
    /// The `details` object of v2 custody and alert entries.
    Details,
}

/// The checks of an object with known members, run once it is read.
type ObjectCheck = fn(&Members<'_, '_>) -> Result<(), Bad>;

/// Known members of each object, with how their values are checked. Members of
/// all kinds share one table: a name means the same thing in every kind.
type Table = &'static [(&'static str, Shape)];

const TOP: Table = &[
    // In the order a v2 access entry is written (the common case), so that each lookup
    // finds its name at the first place it looks; v1 names, then the other kinds', follow.
    ("v", Shape::Any),
    ("kind", Shape::Any),
    ("time", Shape::Any),
    ("principal", Shape::Principal),
    ("action", Shape::Any),
    ("subject", Shape::Any),
    ("subject_jurisdiction", Shape::Any),
    ("site", Shape::Any),
    ("site_jurisdiction", Shape::Any),
    ("collection", Shape::Any),
    ("approval_required", Shape::Any),
    ("suspended", Shape::Any),
    ("fields", Shape::Strings),
    ("outcome", Shape::Any),
    ("decisions", Shape::Decisions),
    ("policies", Shape::Strings),
    ("policy_set", Shape::Any),
    ("purpose", Shape::Any),
    ("reason_code", Shape::Any),
    ("context_time", Shape::Any),
    ("grant", Shape::Grant),
    ("own_data", Shape::Any),
    ("event", Shape::Any),
    ("config_sha256", Shape::Any),
    ("version", Shape::Any),
    ("actor", Shape::Principal),
    ("details", Shape::Details),
    ("alert", Shape::Any),
    ("severity", Shape::Any),
];
const PRINCIPAL: Table = &[
    ("id", Shape::Any),
    ("entity", Shape::Any),
    ("entity_country", Shape::Any),
    ("location", Shape::Any),
    ("clearance", Shape::Strings),
    ("roles", Shape::Strings),
    ("network_zone", Shape::Any),
];
const DECISION: Table = &[
    ("field_class", Shape::Any),
    ("allowed", Shape::Any),
    ("policies", Shape::Strings),
    ("subject_jurisdiction", Shape::Any),
    ("suspended", Shape::Any),
];
const GRANT: Table = &[("id", Shape::Any), ("kind", Shape::Any)];
const ACTIVATION_DETAILS: Table = &[
    ("policy_set", Shape::Any),
    ("previous", Shape::Any),
    ("signers", Shape::Strings),
];
/// The known members of the entry ([`TOP`]).
const MAX_KNOWN: usize = 29;
/// The most known members of an object below the entry ([`PRINCIPAL`] and the others): their
/// records are built for every decision, so they are kept small.
const MAX_NESTED: usize = 7;

const _: () = assert!(
    TOP.len() <= MAX_KNOWN
        && PRINCIPAL.len() <= MAX_NESTED
        && DECISION.len() <= MAX_NESTED
        && GRANT.len() <= MAX_NESTED
        && ACTIVATION_DETAILS.len() <= MAX_NESTED
);

/// Where member `name` is in `table`, looking from position `from` on (then from the start).
/// Looking names up was a fifth of the check's work: entries and the checks name members
/// in about the order of the tables, so the search starts after the last member found; the
/// length and first byte rule out most other names before their bytes are compared.
fn find(table: Table, name: &str, from: usize) -> Option<usize> {
    let first = name.as_bytes().first();
    let from = from.min(table.len());
    (from..table.len()).chain(0..from).find(|&i| {
        let n = table[i].0.as_bytes();
        // The checks name members with the same literals as the tables, which the compiler
        // usually stores once: then the same address settles it. Otherwise compared byte by
        // byte: names are short, and a call to `memcmp` cost more.
        n.len() == name.len()
            && (std::ptr::eq(n.as_ptr(), name.as_ptr())
                || (n.first() == first && n.iter().zip(name.as_bytes()).all(|(a, b)| a == b)))
    })
}

/// What the parser saw of a value, as far as the checks need it.
enum Seen<'de> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'de, str>),
    /// An array, and the first problem of its elements (for checked shapes).
    Array(Option<Box<Bad>>),
    /// An object, and the first problem of its members (for checked shapes).
    Object(Option<Box<Bad>>),
}

/// A JSON number, as the parser read it.
enum Number {
    U(u64),
    I(i64),
    F(f64),
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::U(n) => write!(f, "{n}"),
            Number::I(n) => write!(f, "{n}"),
            Number::F(n) => write!(f, "{n:?}"),
        }
    }
}

/// A value for a message: short strings quoted, other types by name.
fn show(v: &Seen<'_>) -> String {
    match v {
        Seen::Null => "null".into(),
        Seen::Bool(b) => b.to_string(),
        Seen::Number(n) => format!("the number {n}"),
        Seen::String(s) => show_str(s),
        Seen::Array(_) => "an array".into(),
        Seen::Object(_) => "an object".into(),
    }
}

/// The known members of one object, as seen.
struct Members<'s, 'de> {
    table: Table,
    seen: &'s [Option<Seen<'de>>],
    /// Whether the object is below the entry (paths then start with a dot).
    nested: bool,
    /// Where the last member looked up is in the table, plus one: where the next lookup starts.
    last: Cell<usize>,
}

impl<'s, 'de> Members<'s, 'de> {
    fn path(&self, name: &str) -> String {
        if self.nested {
            format!(".{name}")
        } else {
            name.to_string()
        }
    }

    /// Where member `name` is in the table (checks ask for known members only).
    fn slot(&self, name: &str) -> Option<&'s Option<Seen<'de>>> {
        let id = find(self.table, name, self.last.get())?;
        self.last.set(id + 1);
        self.seen.get(id)
    }

    fn get(&self, name: &str) -> Result<&'s Seen<'de>, Bad> {
        self.slot(name).and_then(Option::as_ref).ok_or_else(|| Bad {
            path: self.path(name),
            what: "is missing".into(),
        })
    }

    /// A member that may be absent (added to format v2 later); if present, of this type.
    fn optional(&self, name: &str) -> Option<&'s Seen<'de>> {
        self.slot(name).and_then(Option::as_ref)
    }

    fn optional_bool(&self, name: &str) -> Result<(), Bad> {
        match self.optional(name) {
            None | Some(Seen::Bool(_)) => Ok(()),
            Some(other) => Err(self.wrong(name, "true or false", other)),
        }
    }

    fn optional_string(&self, name: &str) -> Result<(), Bad> {
        match self.optional(name) {
            None | Some(Seen::String(_)) => Ok(()),
            Some(other) => Err(self.wrong(name, "a string", other)),
        }
    }

    fn wrong(&self, name: &str, want: &str, got: &Seen<'_>) -> Bad {
        Bad {
            path: self.path(name),
            what: format!("must be {want}, not {}", show(got)),
        }
    }

    fn string(&self, name: &str) -> Result<&'s str, Bad> {
        match self.get(name)? {
            Seen::String(s) => Ok(s),
            other => Err(self.wrong(name, "a string", other)),
        }
    }

    fn string_or_null(&self, name: &str) -> Result<Option<&'s str>, Bad> {
        match self.get(name)? {
            Seen::String(s) => Ok(Some(s)),
            Seen::Null => Ok(None),
            other => Err(self.wrong(name, "a string or null", other)),
        }
    }

    fn bool(&self, name: &str) -> Result<bool, Bad> {
        match self.get(name)? {
            Seen::Bool(b) => Ok(*b),
            other => Err(self.wrong(name, "true or false", other)),
        }
    }

    /// A checked object (its shape says how).
    fn object(&self, name: &str) -> Result<(), Bad> {
        match self.get(name)? {
            Seen::Object(None) => Ok(()),
            Seen::Object(Some(bad)) => Err(clone_bad(bad).under(&self.path(name))),
            other => Err(self.wrong(name, "an object", other)),
        }
    }

    /// A checked array (its shape says how).
    fn array(&self, name: &str) -> Result<(), Bad> {
        match self.get(name)? {
            Seen::Array(None) => Ok(()),
            Seen::Array(Some(bad)) => Err(clone_bad(bad).under(&self.path(name))),
            other => Err(self.wrong(name, "an array", other)),
        }
    }

    /// A checked object (its shape says how), or null.
    fn object_or_null(&self, name: &str) -> Result<(), Bad> {
        match self.get(name)? {
            Seen::Null => Ok(()),
            _ => self.object(name),
        }
    }

    /// An object, whatever its members.
    fn any_object(&self, name: &str) -> Result<(), Bad> {
        match self.get(name)? {
            Seen::Object(_) => Ok(()),
            other => Err(self.wrong(name, "an object", other)),
        }
    }

    /// A whole number (not a float).
    fn integer(&self, name: &str) -> Result<(), Bad> {
        match self.get(name)? {
            Seen::Number(Number::U(_) | Number::I(_)) => Ok(()),
            other => Err(self.wrong(name, "a whole number", other)),
        }
    }

    /// An array of strings (a member of shape [`Shape::Strings`]).
    fn strings(&self, name: &str) -> Result<(), Bad> {
        self.array(name)
    }

    fn one_of(&self, name: &str, allowed: &[&'static str]) -> Result<&'static str, Bad> {
        let s = self.string(name)?;
        allowed
            .iter()
            .copied()
            .find(|a| *a == s)
            .ok_or_else(|| Bad {
                path: self.path(name),
                what: format!("must be one of {}, not {}", allowed.join("|"), show_str(s)),
            })
    }

    fn hex(&self, name: &str, len: usize) -> Result<(), Bad> {
        let s = self.string(name)?;
        if s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(())
        } else {
            Err(Bad {
                path: self.path(name),
                what: format!("must be {len} lower-case hex digits, not {}", show_str(s)),
            })
        }
    }
}

fn clone_bad(b: &Bad) -> Bad {
    Bad {
        path: b.path.clone(),
        what: b.what.clone(),
    }
}

/// The entry's top-level object: what was seen of each member of [`TOP`].
struct TopLevel<'de>([Option<Seen<'de>>; MAX_KNOWN]);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TopLevel<'de>, D::Error> {
        struct TopVisitor;
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TopLevel<'de>, A::Error> {
                read_members(map, TOP).map(TopLevel)
            }
        }
        d.deserialize_map(TopVisitor)
    }
}

/// Reads an object's members: those of `table` are kept (as their shape says),
/// others are skipped. Any member name twice is an error: a generic JSON reader
/// would silently keep one of them, and a monitor must not read an entry
/// differently from another reader.
/// `N` is at least the table's length.
fn read_members<'de, A: MapAccess<'de>, const N: usize>(
    mut map: A,
    table: Table,
) -> Result<[Option<Seen<'de>>; N], A::Error> {
    let mut seen: [Option<Seen<'de>>; N] = std::array::from_fn(|_| None);
    let mut others: Vec<Cow<'de, str>> = Vec::new();
    // Where the next name is looked up first: after the last known one.
    let mut next = 0;
    let twice = |name: &str| de::Error::custom(format_args!("member {name:?} appears twice"));
    while let Some(MemberName(name)) = map.next_key()? {
        if let Some(id) = find(table, &name, next) {
            next = id + 1;
            if seen[id].is_some() {
                return Err(twice(&name));
            }
            seen[id] = Some(map.next_value_seed(ValueSeed(table[id].1))?);
        } else {
            // Linear while small; huge objects are checked by sorting, below.
            if others.len() < 32 && others.contains(&name) {
                return Err(twice(&name));
            }
            map.next_value_seed(ValueSeed(Shape::Any))?;
            others.push(name);
        }
    }
    if others.len() > 32 {
        let mut names: Vec<&str> = others.iter().map(|n| n.as_ref()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(twice(w[0]));
        }
    }
    Ok(seen)
}

/// Parses one value, checking it as `Shape` says.
#[derive(Clone, Copy)]
struct ValueSeed(Shape);

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Seen<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Seen<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Seen<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Seen<'de>, E> {
        Ok(Seen::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Seen<'de>, E> {
        Ok(Seen::Number(Number::I(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Seen<'de>, E> {
        Ok(Seen::Number(Number::U(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Seen<'de>, E> {
        Ok(Seen::Number(Number::F(v)))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Seen<'de>, E> {
        Ok(Seen::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Seen<'de>, E> {
        Ok(Seen::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Seen<'de>, E> {
        Ok(Seen::String(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Seen<'de>, E> {
        Ok(Seen::Null)
    }

    fn visit_none<E>(self) -> Result<Seen<'de>, E> {
        Ok(Seen::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Seen<'de>, A::Error> {
        let element = match self.0 {
            Shape::Strings => Shape::Any,
            Shape::Decisions => Shape::Decision,
            _ => Shape::Any,
        };
        let mut bad = None;
        let mut i = 0usize;
        while let Some(v) = seq.next_element_seed(ValueSeed(element))? {
            if bad.is_none() {
                bad = match (self.0, v) {
                    (Shape::Strings, Seen::String(_)) => None,
                    (Shape::Strings, other) => Some(Box::new(Bad {
                        path: format!("[{i}]"),
                        what: format!("must be a string, not {}", show(&other)),
                    })),
                    (Shape::Decisions, Seen::Object(None)) => None,
                    (Shape::Decisions, Seen::Object(Some(b))) => {
                        Some(Box::new(b.under(&format!("[{i}]"))))
                    }
                    (Shape::Decisions, other) => Some(Box::new(Bad {
                        path: format!("[{i}]"),
                        what: format!("must be an object, not {}", show(&other)),
                    })),
                    _ => None,
                };
            }
            i += 1;
        }
        Ok(Seen::Array(bad))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Seen<'de>, A::Error> {
        let (table, check): (Table, ObjectCheck) = match self.0 {
            Shape::Principal => (PRINCIPAL, check_principal),
            Shape::Decision => (DECISION, check_decision),
            Shape::Grant => (GRANT, check_grant),
            Shape::Details => (ACTIVATION_DETAILS, check_activation_details),
            _ => (&[], |_| Ok(())),
        };
        let seen = read_members::<_, MAX_NESTED>(map, table)?;
        let members = Members {
            table,
            seen: &seen,
            nested: true,
            last: Cell::new(0),
        };
        Ok(Seen::Object(check(&members).err().map(Box::new)))
    }
}

/// An object member's name, borrowed from the entry when it has no escapes.
struct MemberName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MemberName<'de>, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = MemberName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<MemberName<'de>, E> {
                Ok(MemberName(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<MemberName<'de>, E> {
                Ok(MemberName(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<MemberName<'de>, E> {
                Ok(MemberName(Cow::Owned(v)))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

fn show_str(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}...")
    }
}
fn is_rfc3339_utc_millis(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 24 {
        return false;
    }
    for (i, &c) in b.iter().enumerate() {
        let ok = match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        };
        if !ok {
            return false;
        }
    }
    let num = |from: usize, to: usize| {
        b[from..to]
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (num(0, 4), num(5, 7), num(8, 10));
    let (hour, minute, second) = (num(11, 13), num(14, 16), num(17, 19));
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day) && hour <= 23 && minute <= 59 && second <= 60
}
