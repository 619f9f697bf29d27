//! Bounded text, pure: every string that reaches the status, an event or a
//! log line from outside (kubelet messages, hook output, names, API errors)
//! goes through here, so none can exceed what the API server accepts or grow
//! without limit. Cuts are at a character boundary, never inside a UTF-8
//! sequence (`String::truncate` at a byte count panics there).

pub mod explain;

/// Appended where a text was cut.
pub const ELLIPSIS: &str = "…";

/// Caps, in bytes, well under what the API server accepts (32 KiB for a
/// condition message, 1 KiB for an event note).
pub const CONDITION_MESSAGE: usize = 2048;
pub const EVENT_NOTE: usize = 1000;
pub const WORKLOAD_MESSAGE: usize = 512;
pub const FAILURE_MESSAGE: usize = 1024;
/// Names (pods, containers, workloads) are DNS names of at most 253 bytes;
/// anything longer did not come from the API server.
pub const NAME: usize = 253;

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` in at most `max` bytes: cut at a character boundary and marked with
/// [`ELLIPSIS`] when it was longer.
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    if max < ELLIPSIS.len() {
        return prefix(s, max).to_string();
    }
    format!("{}{ELLIPSIS}", prefix(s, max - ELLIPSIS.len()))
}

/// [`bounded`] in place.
pub fn bound(s: &mut String, max: usize) {
    if s.len() > max {
        *s = bounded(s, max);
    }
}

/// `s` within about `max` bytes (plus a note of at most 32): its first and
/// last halves around how much was left out, each cut at a character
/// boundary. For messages whose end says as much as their start (a
/// kubelet error: the command first, the exit code and output last).
pub fn head_and_tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let half = max / 2;
    let head = prefix(s, half);
    // The shortest suffix of at most `half` bytes starting on a boundary.
    let start = s
        .char_indices()
        .map(|(i, _)| i)
        .find(|i| s.len() - i <= half)
        .unwrap_or(s.len());
    let tail = &s[start..];
    format!("{head} [... {} bytes ...] {tail}", start - head.len())
}

/// Items joined with `sep` in at most `max` bytes: as many whole items as
/// fit, then `(and N more)`. An item too long on its own is cut.
pub fn list<S: AsRef<str>>(items: &[S], sep: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        let rest = items.len() - i;
        let more = if rest > 1 {
            format!(" (and {} more)", rest - 1)
        } else {
            String::new()
        };
        let lead = if i == 0 { "" } else { sep };
        let item = item.as_ref();
        // Room for this item and the tail that names the ones after it.
        let budget = max.saturating_sub(out.len() + lead.len() + more.len());
        if item.len() <= budget {
            out.push_str(lead);
            out.push_str(item);
            continue;
        }
        if i == 0 && budget > ELLIPSIS.len() {
            out.push_str(&bounded(item, budget));
            out.push_str(&more);
        } else {
            out.push_str(&format!(" (and {rest} more)"));
        }
        return bounded(&out, max);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: [&str; 5] = [
        "plain ascii text",
        "失败：脚本退出 # 中文注释",
        "emoji 🚀🔥 mixed ✓",
        "combining e\u{301}e\u{301}e\u{301} marks",
        "a\u{0}b\u{7f}\u{feff}",
    ];

    #[test]
    fn cuts_land_on_character_boundaries_at_every_position() {
        for s in SAMPLES {
            for max in 0..=s.len() + 2 {
                let p = prefix(s, max);
                assert!(p.len() <= max && s.starts_with(p), "{s:?} {max}");
                // The longest such prefix: one more character would not fit.
                if p.len() < s.len() {
                    let next = s[p.len()..].chars().next().unwrap();
                    assert!(p.len() + next.len_utf8() > max, "{s:?} {max}");
                }
                let b = bounded(s, max);
                assert!(b.len() <= max, "{s:?} {max}: {b:?}");
                if s.len() <= max {
                    assert_eq!(b, s);
                } else if max >= ELLIPSIS.len() {
                    assert!(b.ends_with(ELLIPSIS));
                }
                let mut m = s.to_string();
                bound(&mut m, max);
                assert_eq!(m, b);
            }
        }
    }

    #[test]
    fn head_and_tail_keeps_both_ends() {
        assert_eq!(head_and_tail("short", 100), "short");
        let s = format!(
            "Exec lifecycle hook {} exited with 3: oops",
            "x".repeat(10_000)
        );
        let m = head_and_tail(&s, 64);
        assert!(m.starts_with("Exec lifecycle hook xxx"), "{m}");
        assert!(m.ends_with("exited with 3: oops"), "{m}");
        assert!(m.len() <= 64 + 32, "{m}");
        for s in SAMPLES.iter().map(|s| s.repeat(40)) {
            for max in 0..80 {
                assert!(head_and_tail(&s, max).len() <= max + 32, "{max}");
            }
        }
    }

    #[test]
    fn lists_keep_whole_items_and_count_the_rest() {
        let names: Vec<String> = (1..=400).map(|i| format!("web-{i}")).collect();
        let s = list(&names, ", ", 40);
        assert!(s.len() <= 40, "{s}");
        assert!(s.starts_with("web-1, web-2"), "{s}");
        assert!(s.ends_with("more)"), "{s}");
        let shown = s.matches("web-").count();
        assert!(s.contains(&format!("(and {} more)", 400 - shown)), "{s}");
        assert_eq!(list(&["a", "b"], ", ", 40), "a, b");
        assert_eq!(list::<&str>(&[], ", ", 40), "");
    }

    #[test]
    fn lists_of_multibyte_items_stay_valid_at_every_budget() {
        let items = ["中文名字", "🚀🚀🚀🚀", "e\u{301}e\u{301}", "ascii"];
        for max in 0..80 {
            let s = list(&items, "; ", max);
            assert!(s.len() <= max, "{max}: {s:?}");
        }
    }
}
