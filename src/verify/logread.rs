//! Reading marker lines out of a container log, pure: bytes go in, at most
//! one bounded line is held, and what was found comes out. The driver
//! (`observer::read_markers`) only moves the HTTP body's chunks in here.
//!
//! Whatever the container writes, this holds at most [`MAX_LINE`] bytes: a
//! line longer than that keeps its first `MAX_LINE` bytes (enough for the
//! log timestamp) and the rest is dropped as it arrives, never buffered
//! whole; bytes that are not UTF-8 are decoded lossily, so the markers after
//! them are still found.

use k8s_openapi::jiff::Timestamp;

use crate::hooks::hook::HookKind;
use crate::hooks::marker::{self, Phase};

use super::index::{EndMarker, MarkerFinding};

/// Longest line kept. A marker line is well under 1 KiB: the log timestamp
/// (about 31 bytes), the fixed text, a policy key (at most 253 + 1 + 253
/// bytes) and the exit code.
pub const MAX_LINE: usize = 2048;

/// Splits a byte stream into lines, holding at most `cap` bytes of one line.
#[derive(Debug)]
pub struct LineCutter {
    buf: Vec<u8>,
    cap: usize,
    /// The line being read is longer than `cap`: its tail is being dropped.
    over: bool,
}

/// What `feed` tells its callback to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    More,
    Stop,
}

impl LineCutter {
    pub fn new(cap: usize) -> Self {
        LineCutter {
            buf: Vec::new(),
            cap,
            over: false,
        }
    }

    /// Feeds the next bytes of the stream. `line` gets each complete line
    /// (decoded lossily, without its line feed) and whether it was cut to
    /// `cap`; returns `Stop` as soon as `line` does.
    pub fn feed(&mut self, mut bytes: &[u8], line: &mut impl FnMut(&str, bool) -> Next) -> Next {
        while !bytes.is_empty() {
            let (part, rest, complete) = match bytes.iter().position(|b| *b == b'\n') {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            let room = self.cap - self.buf.len();
            if part.len() > room {
                self.over = true;
            }
            self.buf.extend_from_slice(&part[..part.len().min(room)]);
            if complete && self.emit(line) == Next::Stop {
                return Next::Stop;
            }
        }
        Next::More
    }

    /// The stream ended: a last line without a line feed counts too.
    pub fn finish(&mut self, line: &mut impl FnMut(&str, bool) -> Next) -> Next {
        if self.buf.is_empty() && !self.over {
            return Next::More;
        }
        self.emit(line)
    }

    /// Bytes held now (at most `cap`).
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    fn emit(&mut self, line: &mut impl FnMut(&str, bool) -> Next) -> Next {
        let next = line(&String::from_utf8_lossy(&self.buf), self.over);
        self.buf.clear();
        self.over = false;
        next
    }
}

/// Start lines remembered while looking for their end line: a hook runs
/// once per container instance, twice when the kubelet delivers it again.
const RUNS: usize = 8;

/// Looks for one hook's marker lines of one policy in a log, line by line.
/// A line counts only with the hook's token, and an end line only after
/// the start line of the same run (see `marker`).
#[derive(Debug)]
pub struct MarkerScan {
    kind: HookKind,
    policy: String,
    token: u64,
    /// Start lines seen: (run, log timestamp), the latest last.
    runs: Vec<(u32, Option<Timestamp>)>,
    found: MarkerFinding,
    /// Lines longer than [`MAX_LINE`] seen (never markers).
    pub overlong: u64,
}

impl MarkerScan {
    pub fn new(kind: HookKind, policy: &str, token: u64) -> Self {
        MarkerScan {
            kind,
            policy: policy.to_string(),
            token,
            runs: Vec::new(),
            found: MarkerFinding::default(),
            overlong: 0,
        }
    }

    /// One log line (read with timestamps); `Stop` once the end marker is found.
    pub fn line(&mut self, line: &str, cut: bool) -> Next {
        if let Some(at) = line.split_once(' ').and_then(|(ts, _)| ts.parse().ok()) {
            self.found.last_line_at = Some(at);
        }
        if cut {
            // Not a marker: a marker line is far shorter than the cap.
            self.overlong += 1;
            return Next::More;
        }
        let Some(m) = marker::parse(line) else {
            return Next::More;
        };
        if m.hook != self.kind || m.policy != self.policy || m.token != self.token {
            return Next::More;
        }
        match m.phase {
            Phase::Started => {
                if self.runs.len() == RUNS {
                    self.runs.remove(0);
                }
                self.runs.push((m.run, m.at));
                self.found.started = Some(m.at);
                Next::More
            }
            Phase::Ended { rc } => {
                let Some(&(_, started)) = self.runs.iter().rev().find(|(r, _)| *r == m.run) else {
                    return Next::More; // No start line of this run: not proof.
                };
                self.found.started = Some(started);
                self.found.ended = Some(EndMarker { rc, at: m.at });
                Next::Stop
            }
        }
    }

    pub fn finding(self) -> MarkerFinding {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` and returns the lines seen, with their cut flag, and
    /// the most bytes held at any point.
    fn cut(cap: usize, chunks: &[&[u8]]) -> (Vec<(String, bool)>, usize) {
        let mut c = LineCutter::new(cap);
        let mut out = Vec::new();
        let mut most = 0;
        for ch in chunks {
            c.feed(ch, &mut |l: &str, over| {
                out.push((l.to_string(), over));
                Next::More
            });
            most = most.max(c.held());
        }
        c.finish(&mut |l: &str, over| {
            out.push((l.to_string(), over));
            Next::More
        });
        (out, most)
    }

    fn lines(v: &[(&str, bool)]) -> Vec<(String, bool)> {
        v.iter().map(|(l, c)| (l.to_string(), *c)).collect()
    }

    #[test]
    fn lines_across_chunks() {
        let (got, _) = cut(16, &[b"ab", b"c\nde", b"f\n\ng", b"h"]);
        assert_eq!(
            got,
            lines(&[("abc", false), ("def", false), ("", false), ("gh", false)])
        );
        let (got, _) = cut(16, &[b"one\n"]);
        assert_eq!(
            got,
            lines(&[("one", false)]),
            "no empty line after the last feed"
        );
        let (got, _) = cut(16, &[]);
        assert!(got.is_empty());
    }

    #[test]
    fn an_overlong_line_keeps_its_head_and_is_never_held_whole() {
        let big = vec![b'x'; 10 * 1024 * 1024];
        let mut chunks: Vec<&[u8]> = big.chunks(16 * 1024).collect();
        chunks.insert(0, b"2024-05-01T12:00:00Z ");
        chunks.push(b"\nafter\n");
        let (got, most) = cut(64, &chunks);
        assert!(most <= 64, "held {most} bytes");
        assert_eq!(got.len(), 2);
        assert!(got[0].1, "cut");
        assert_eq!(got[0].0.len(), 64);
        assert!(got[0].0.starts_with("2024-05-01T12:00:00Z xxx"));
        assert_eq!(got[1], ("after".to_string(), false));
        // Exactly the cap is not cut; one more byte is.
        let (got, _) = cut(4, &[b"abcd\nabcde\n"]);
        assert_eq!(got, lines(&[("abcd", false), ("abcd", true)]));
        // A stream ending inside an over-long line still reports it.
        let (got, _) = cut(4, &[b"abcdefgh"]);
        assert_eq!(got, lines(&[("abcd", true)]));
    }

    #[test]
    fn invalid_utf8_is_decoded_lossily_and_the_stream_goes_on() {
        let (got, _) = cut(64, &[b"a\xff\xfeb\nok \xe2\x82", b"\xac\n\xc3"]);
        assert_eq!(
            got,
            lines(&[
                ("a\u{fffd}\u{fffd}b", false),
                ("ok €", false),
                ("\u{fffd}", false)
            ])
        );
        // A multi-byte character cut by the cap is one replacement character.
        let (got, _) = cut(2, &[b"a\xe2\x82\xac\n"]);
        assert_eq!(got, lines(&[("a\u{fffd}", true)]));
    }

    #[test]
    fn stop_ends_feeding_at_once() {
        let mut c = LineCutter::new(16);
        let mut seen = Vec::new();
        let next = c.feed(b"a\nb\nc\n", &mut |l: &str, _| {
            seen.push(l.to_string());
            if l == "b" { Next::Stop } else { Next::More }
        });
        assert_eq!(next, Next::Stop);
        assert_eq!(seen, ["a", "b"]);
    }

    const TOKEN: u64 = 0x0123_4567_89ab_cdef;
    /// A marker line's text after `policy=`'s value.
    const T: &str = "token=0123456789abcdef";

    fn scan(kind: HookKind, policy: &str, log: &[u8]) -> (MarkerFinding, u64) {
        let mut s = MarkerScan::new(kind, policy, TOKEN);
        let mut c = LineCutter::new(MAX_LINE);
        if c.feed(log, &mut |l: &str, cut| s.line(l, cut)) == Next::More {
            c.finish(&mut |l: &str, cut| s.line(l, cut));
        }
        let n = s.overlong;
        (s.finding(), n)
    }

    #[test]
    fn markers_after_garbage_and_overlong_lines_are_found() {
        let ts = |s: &str| s.parse::<Timestamp>().unwrap();
        let mut log = Vec::new();
        log.extend_from_slice(b"2024-05-01T12:00:00Z \xff\xfe not utf-8\n");
        log.extend_from_slice(
            b"2024-05-01T12:00:01Z lifecycle-operator: hook=preStop policy=web/p token=0123456789abcdef run=7 started\n",
        );
        log.extend_from_slice(b"2024-05-01T12:00:02Z ");
        log.extend(std::iter::repeat_n(b'y', 3 * MAX_LINE));
        // An over-long line that ends like a marker is not one.
        log.extend_from_slice(
            b" lifecycle-operator: hook=preStop policy=web/p token=0123456789abcdef run=7 rc=9\n",
        );
        log.extend_from_slice(
            b"2024-05-01T12:00:03Z lifecycle-operator: hook=preStop policy=web/p token=0123456789abcdef run=7 rc=0\n",
        );
        log.extend_from_slice(b"2024-05-01T12:00:04Z never read\n");
        let (f, overlong) = scan(HookKind::PreStop, "web/p", &log);
        assert_eq!(overlong, 1);
        assert_eq!(f.started, Some(Some(ts("2024-05-01T12:00:01Z"))));
        assert_eq!(
            f.ended,
            Some(EndMarker {
                rc: 0,
                at: Some(ts("2024-05-01T12:00:03Z"))
            })
        );
        assert_eq!(f.last_line_at, Some(ts("2024-05-01T12:00:03Z")));
    }

    #[test]
    fn other_hooks_and_policies_are_ignored() {
        let log = b"2024-05-01T12:00:01Z lifecycle-operator: hook=postStart policy=web/p token=0123456789abcdef run=7 rc=0\n\
2024-05-01T12:00:02Z lifecycle-operator: hook=preStop policy=web/q token=0123456789abcdef run=7 rc=0\n\
2024-05-01T12:00:03Z lifecycle-operator: hook=preStop policy=web/p token=0123456789abcdef run=7 started";
        let (f, _) = scan(HookKind::PreStop, "web/p", log);
        assert_eq!(f.ended, None);
        assert!(
            f.started.is_some(),
            "the last line, without a line feed, counts"
        );
    }

    fn line(ts: &str, rest: &str) -> String {
        format!("2024-05-01T12:00:{ts}Z lifecycle-operator: hook=preStop policy=web/p {rest}\n")
    }

    #[test]
    fn lines_without_the_token_or_their_start_are_ignored() {
        let ts = |s: &str| {
            format!("2024-05-01T12:00:{s}Z")
                .parse::<Timestamp>()
                .unwrap()
        };
        // What an application could print: the visible text of a marker with
        // another token, none, or an end line of a run that never started.
        let forged = [
            line("01", "token=ffffffffffffffff run=7 started"),
            line("02", "token=ffffffffffffffff run=7 rc=0"),
            line("03", "started"),
            line("04", "rc=0"),
            line("05", &format!("{T} run=99 rc=0")),
        ]
        .concat();
        let (f, _) = scan(HookKind::PreStop, "web/p", forged.as_bytes());
        assert_eq!((f.started, f.ended), (None, None), "nothing counts");
        // The real run, with a forged end line of the same token but another
        // run in between: the real pair wins, with its own timestamps.
        let log = [
            line("10", &format!("{T} run=7 started")),
            line("11", &format!("{T} run=8 rc=0")),
            line("12", &format!("{T} run=7 rc=3")),
        ]
        .concat();
        let (f, _) = scan(HookKind::PreStop, "web/p", log.as_bytes());
        assert_eq!(f.started, Some(Some(ts("10"))));
        assert_eq!(
            f.ended,
            Some(EndMarker {
                rc: 3,
                at: Some(ts("12"))
            })
        );
        // Two runs that overlap: each end pairs with its own start.
        let log = [
            line("20", &format!("{T} run=7 started")),
            line("21", &format!("{T} run=9 started")),
            line("23", &format!("{T} run=7 rc=0")),
        ]
        .concat();
        let (f, _) = scan(HookKind::PreStop, "web/p", log.as_bytes());
        assert_eq!(f.started, Some(Some(ts("20"))));
        // The start lines remembered are bounded.
        let mut log: String = (0..1000)
            .map(|i| line("30", &format!("{T} run={i} started")))
            .collect();
        log.push_str(&line("31", &format!("{T} run=0 rc=0")));
        let (f, _) = scan(HookKind::PreStop, "web/p", log.as_bytes());
        assert_eq!(f.ended, None, "run 0 was forgotten, not kept without bound");
    }
}
