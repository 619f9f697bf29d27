//! `pod` as text, pure.

use std::fmt::Write as _;

use crate::plugin::pod::{PodHook, PodReport};
use crate::plugin::style::Style;

pub fn text(r: &PodReport, style: &Style) -> String {
    let mut o = String::new();
    let mut head = format!(
        "{} {}/{}  {}",
        style.bold("Pod"),
        r.namespace,
        style.bold(&r.name),
        r.phase
    );
    if let Some(w) = &r.workload {
        let _ = write!(head, ", of {w}");
    }
    let _ = write!(head, ", grace period {}s", r.grace_seconds);
    if let Some(d) = &r.deletion_requested {
        let _ = write!(head, ", {} at {d}", style.warn("deletion requested"));
    }
    let _ = writeln!(o, "{head}");
    for c in &r.containers {
        let restarts = if c.restarts > 0 {
            format!(", {} restarts", c.restarts)
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "Container {} ({}{restarts})",
            style.bold(&c.name),
            c.state
        );
        for e in &c.exits {
            let at = e
                .finished_at
                .as_deref()
                .map(|f| format!(" at {f}"))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  exit ({} container): code {} {}{at}",
                e.container, e.code, e.reason
            );
        }
        if c.hooks.is_empty() {
            let _ = writeln!(o, "  no hooks");
        }
        for h in &c.hooks {
            hook(&mut o, h, style);
        }
    }
    for n in &r.notes {
        let _ = writeln!(o, "Note: {n}");
    }
    o
}

fn hook(o: &mut String, h: &PodHook, style: &Style) {
    let outcome = super::status::outcome(&h.outcome, style);
    let detail = if h.detail.is_empty() {
        String::new()
    } else {
        format!(": {}", h.detail)
    };
    let _ = writeln!(o, "  {:<10} {outcome}{detail}", format!("{}:", h.hook));
    let _ = writeln!(o, "    owner     {}", h.owner);
    let _ = writeln!(o, "    handler   {}", h.handler);
    let _ = writeln!(o, "    evidence  {}", h.evidence);
    for r in &h.runs {
        let mut line = format!(
            "    run       {} log: started {}",
            r.log,
            r.started_at.as_deref().unwrap_or("?")
        );
        match (r.rc, r.duration_seconds) {
            (Some(rc), Some(d)) => {
                let _ = write!(line, ", exit code {rc} after {d:.3}s");
            }
            (Some(rc), None) => {
                let _ = write!(line, ", exit code {rc}");
            }
            _ => line.push_str(", no end line"),
        }
        let _ = writeln!(o, "{line}");
    }
    for e in &h.events {
        let count = if e.count > 1 {
            format!(" (x{})", e.count)
        } else {
            String::new()
        };
        let _ = writeln!(o, "    event     {}{count}: {}", e.reason, e.message);
    }
}
