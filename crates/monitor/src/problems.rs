//! Problems of one kind found in a log, bounded: each counted, the first kept to report.

use std::fmt;

/// Problem lines kept for the report; beyond this they are only counted, so memory
/// stays bounded however much of a log is wrong.
const MAX_LINES: usize = 1000;

/// Problems of one kind: every one counted, the first [`MAX_LINES`] kept to report.
#[derive(Default)]
pub(crate) struct Problems {
    lines: Vec<String>,
    pub(crate) count: u64,
}

impl Problems {
    pub(crate) fn push(&mut self, line: String) {
        self.count += 1;
        if self.lines.len() < MAX_LINES {
            self.lines.push(line);
        }
    }

    /// `{"count", "first": [line...]}` for a tool's `--json`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"count": self.count, "first": self.lines})
    }

    /// One line per kept problem, labelled, then how many more were only counted.
    pub(crate) fn write(&self, out: &mut fmt::Formatter<'_>, label: &str) -> fmt::Result {
        for line in &self.lines {
            writeln!(out, "{label} {line}")?;
        }
        if self.count > self.lines.len() as u64 {
            writeln!(
                out,
                "{label} ... and {} more",
                self.count - self.lines.len() as u64
            )?;
        }
        Ok(())
    }
}
