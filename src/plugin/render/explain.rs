//! `explain` as text, pure.

use std::fmt::Write as _;

use crate::plugin::explain::ExplainReport;
use crate::plugin::style::Style;

pub fn text(r: &ExplainReport, style: &Style) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}", style.bold(&r.workload));
    if !r.ledgers.is_empty() {
        let _ = writeln!(o, "Slots held (the ledger's recorded originals):");
    }
    for l in &r.ledgers {
        let gone = if l.live { "" } else { " (policy gone)" };
        let _ = writeln!(o, "  {}{gone}, via {}", style.bold(&l.policy), l.via);
        for s in &l.slots {
            let _ = writeln!(o, "    {:<32} original: {}", s.slot, s.original);
        }
        if let Some(c) = &l.contest {
            let _ = writeln!(o, "    {}: {c}", style.bad("contested"));
        }
    }
    if !r.owners.is_empty() {
        let _ = writeln!(o, "Field managers of the hooks (managedFields):");
    }
    for w in &r.owners {
        let _ = writeln!(
            o,
            "  {} ({}): {}",
            w.manager,
            w.operation,
            w.fields.join(", ")
        );
    }
    for rel in &r.releases {
        if rel.diff.is_empty() {
            let _ = writeln!(o, "Release of {}: changes nothing", rel.policy);
        } else {
            let _ = writeln!(o, "Release of {} would make:", rel.policy);
            o.push_str(&rel.diff);
        }
    }
    for n in &r.notes {
        let _ = writeln!(o, "Note: {n}");
    }
    o
}
