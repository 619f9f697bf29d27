//! `status` as text, pure: compact, one screen for the two-workload demo.

use std::fmt::Write as _;

use crate::plugin::pod::PodHook;
use crate::plugin::status::{HookTotals, StatusView};
use crate::plugin::style::Style;

/// The view as text.
pub fn text(v: &StatusView, style: &Style) -> String {
    let mut o = String::new();
    let p = &v.policy;
    let at = match &p.namespace {
        Some(ns) => format!("{ns}/{}", p.name),
        None => p.name.clone(),
    };
    let generation = match (p.generation, p.observed_generation) {
        (Some(g), Some(og)) if g == og => format!("generation {g}"),
        (Some(g), Some(og)) => format!("generation {g} (status is of {og})"),
        (Some(g), None) => format!("generation {g} (no status yet)"),
        _ => "no generation".into(),
    };
    let _ = writeln!(
        o,
        "{} {}  {generation}, {}, {} matched, {} patched",
        style.bold(&p.kind),
        style.bold(&at),
        p.mode,
        p.matched_workloads,
        p.patched_workloads
    );
    if !v.conditions.is_empty() {
        let _ = writeln!(o, "Conditions:");
        for c in &v.conditions {
            let status = style.status(&c.status);
            let msg = if c.message.is_empty() {
                String::new()
            } else {
                format!(": {}", c.message)
            };
            let _ = writeln!(o, "  {:<20} {status} {}{msg}", c.type_, c.reason);
        }
    }
    if let Some(r) = &v.rollout {
        let _ = writeln!(
            o,
            "Rollout: {} (generation {}, wave {}), {} rolled out, {} pending{}",
            style.phase(&r.phase),
            r.generation,
            r.waves,
            r.rolled_out,
            r.pending,
            if r.waiting_on.is_empty() {
                String::new()
            } else {
                format!(", waiting on {}", r.waiting_on.join(", "))
            }
        );
        if let Some(h) = &r.halted {
            let at = [h.workload.as_str(), h.pod.as_str(), h.container.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                o,
                "  {} {at}: {}: {}",
                style.bad("halted"),
                h.reason,
                h.message
            );
            if !h.reverted.is_empty() {
                let _ = writeln!(o, "  reverted: {}", h.reverted.join(", "));
            }
        }
    }
    for h in &v.hooks {
        let _ = writeln!(o, "{}", totals(h, style));
        if let Some(f) = &h.last_failure {
            let _ = writeln!(
                o,
                "  last failure: {} {}: {}: {}",
                f.pod, f.container, f.reason, f.message
            );
        }
    }
    if let Some(d) = &v.drain {
        let _ = write!(
            o,
            "Drain: {} observed, {} safe, {} unsafe",
            d.observed,
            d.safe,
            if d.unsafe_ > 0 {
                style.bad(&d.unsafe_.to_string())
            } else {
                d.unsafe_.to_string()
            }
        );
        if let Some(s) = d.recommended_pre_stop_seconds {
            let _ = write!(o, "; a preStop sleep of {s}s would do");
        }
        o.push('\n');
        if let Some(u) = &d.last_unsafe {
            let _ = writeln!(o, "  last unsafe: {u}");
        }
    }
    let _ = writeln!(o, "Workloads:");
    if v.workloads.is_empty() {
        let _ = writeln!(o, "  (none listed)");
    }
    for w in &v.workloads {
        let ns = w
            .namespace
            .as_ref()
            .map(|n| format!("{n}/"))
            .unwrap_or_default();
        let slots = match &w.slots {
            Some(s) if s.is_empty() => "  slots: none".to_string(),
            Some(s) => format!("  slots: {}", s.join(" ")),
            None => String::new(),
        };
        let _ = writeln!(
            o,
            "  {ns}{}/{}  {}{slots}",
            w.kind,
            w.name,
            style.state(&w.state)
        );
        if !w.message.is_empty() {
            let _ = writeln!(o, "    {}", w.message);
        }
        for p in &w.pods {
            let mut flags = vec![p.phase.clone()];
            if p.ready {
                flags.push("ready".into());
            }
            if p.terminating {
                flags.push("terminating".into());
            }
            let _ = writeln!(o, "    pod {}  {}", p.name, flags.join(", "));
            for c in &p.containers {
                let hooks: Vec<String> = c.hooks.iter().map(|h| hook(h, style)).collect();
                let restarts = if c.restarts > 0 {
                    format!(", {} restarts", c.restarts)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    o,
                    "      {} ({}{restarts})  {}",
                    c.name,
                    c.state,
                    hooks.join("  ")
                );
                for h in c
                    .hooks
                    .iter()
                    .filter(|h| h.outcome == "failed" || h.outcome == "cut short")
                {
                    let _ = writeln!(o, "        {}: {}", h.hook, h.detail);
                }
            }
        }
        if w.more_pods > 0 {
            let _ = writeln!(o, "    (and {} more pods)", w.more_pods);
        }
    }
    for n in &v.notes {
        let _ = writeln!(o, "Note: {n}");
    }
    o
}

fn totals(h: &HookTotals, style: &Style) -> String {
    let mut parts = vec![format!("{} ran", h.ran)];
    if h.hook == "postStart" {
        parts.push(format!("{} implied", h.implied));
    }
    let failed = format!("{} failed", h.failed);
    parts.push(if h.failed > 0 {
        style.bad(&failed)
    } else {
        failed
    });
    for (n, what) in [
        (h.timed_out, "timed out"),
        (h.not_triggered, "not triggered"),
        (h.unknown, "unknown"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    let mut s = format!(
        "{:<10} {:<6} {}",
        format!("{}:", h.hook),
        h.summary,
        parts.join(", ")
    );
    if !h.evidence.is_empty() {
        let _ = write!(s, "; evidence {}", h.evidence);
    }
    match (h.last_duration_seconds, h.max_duration_seconds) {
        (Some(l), Some(m)) => {
            let _ = write!(s, "; last {l:.3}s, max {m:.3}s");
        }
        (Some(l), None) => {
            let _ = write!(s, "; last {l:.3}s");
        }
        _ => {}
    }
    s
}

/// `preStop ran 5.007s (marker)`: one hook in a pod's line.
fn hook(h: &PodHook, style: &Style) -> String {
    let outcome = outcome(&h.outcome, style);
    let took = h
        .duration_seconds
        .map(|d| format!(" {d:.3}s"))
        .unwrap_or_default();
    format!("{} {outcome}{took} ({})", h.hook, h.evidence)
}

/// An outcome word, coloured: green for proof, red for failure.
pub fn outcome(word: &str, style: &Style) -> String {
    match word {
        "ran" | "implied" => style.good(word),
        "failed" | "cut short" => style.bad(word),
        _ => word.to_string(),
    }
}
