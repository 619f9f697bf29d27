//! `diff` as text, pure: the unified diffs first (what `kubectl diff`
//! users read), then the rollout order and the conflicts.

use std::fmt::Write as _;

use crate::plugin::diff::DiffReport;
use crate::plugin::style::Style;

pub fn text(r: &DiffReport, style: &Style) -> String {
    let mut o = String::new();
    for c in &r.changes {
        for line in c.diff.lines() {
            let painted = if line.starts_with("+++") || line.starts_with("---") {
                style.bold(line)
            } else if line.starts_with('+') {
                style.good(line)
            } else if line.starts_with('-') {
                style.bad(line)
            } else {
                line.to_string()
            };
            let _ = writeln!(o, "{painted}");
        }
    }
    let verb = if r.exists { "now" } else { "once created" };
    let restarts = r.changes.iter().filter(|c| c.restarts_pods).count();
    let _ = writeln!(
        o,
        "{} ({}, {verb}): changes {} of {} matched workloads ({restarts} restart their pods)",
        r.policy,
        r.mode,
        r.changes.len(),
        r.changes.len() + r.unchanged.len()
    );
    for (i, w) in r.waves.iter().enumerate() {
        let label = match (i, r.canary_first) {
            (0, true) => "canary".to_string(),
            (_, true) => format!("wave {i}"),
            (_, false) => format!("wave {}", i + 1),
        };
        let _ = writeln!(o, "  {label}: {}", w.join(", "));
    }
    if !r.conflicts.is_empty() {
        let _ = writeln!(o, "Conflicts:");
        for c in &r.conflicts {
            let _ = writeln!(o, "  {}", style.warn(c));
        }
    }
    for n in &r.notes {
        let _ = writeln!(o, "Note: {n}");
    }
    o
}
