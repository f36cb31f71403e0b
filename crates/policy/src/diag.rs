//! Turning Cedar's diagnostics into one-line messages with line and column, for the policy
//! engine's errors and for any crate that parses Cedar text (the invariant prover).

use std::fmt::Write as _;

use cedar_policy::PolicyId;
use miette::Diagnostic;

/// One line per problem: Cedar's message, where it is (line and column in `src`), and Cedar's
/// hint when it has one.
pub fn describe(diagnostic: &dyn Diagnostic, src: &str) -> String {
    let mut lines = vec![describe_one(diagnostic, src)];
    if let Some(related) = diagnostic.related() {
        lines.extend(related.map(|d| describe_one(d, src)));
    }
    lines.join("\n")
}

fn describe_one(diagnostic: &dyn Diagnostic, src: &str) -> String {
    let mut out = String::new();
    let first_label = diagnostic.labels().and_then(|mut labels| labels.next());
    if let Some(label) = first_label
        && let Some((line, column)) = line_column(src, label.offset())
    {
        let _ = write!(out, "line {line}, column {column}: ");
    }
    let _ = write!(out, "{diagnostic}");
    if let Some(help) = diagnostic.help() {
        let _ = write!(out, " (hint: {help})");
    }
    out
}

/// 1-based line and column (in characters) of byte `offset` in `src`.
pub fn line_column(src: &str, offset: usize) -> Option<(usize, usize)> {
    let before = src.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    Some((line, column))
}

/// 1-based position of a policy in its source, from the id Cedar assigned while parsing.
pub fn position(id: &PolicyId) -> usize {
    AsRef::<str>::as_ref(id)
        .strip_prefix("policy")
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(usize::MAX, |n| n + 1)
}

/// The start of a policy's text on one line, to help a user find it.
pub fn excerpt(policy_text: &str) -> String {
    let flat: String = policy_text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(60) {
        Some((cut, _)) => format!("{}...", &flat[..cut]),
        None => flat,
    }
}
