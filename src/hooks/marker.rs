//! Direct evidence that a hook ran (DESIGN §4).
//!
//! When a policy's exec hook is already a shell script, the operator wraps the
//! script so that, once it has run, one marker line goes to the container's
//! log and the script's exit code is preserved. A shell is never added where
//! there was none: a non-shell exec, httpGet or sleep hook is verified by
//! events only.
//!
//! The wrapped hook, for `[<shell>, -<flags>c, <script>, $0, $1, ...]` (`$0`
//! and the arguments optional), is `[<shell>, -c, <outer>, $0, $1, ...]`:
//!
//! ```text
//! printf 'lifecycle-operator: hook=%s policy=%s token=%s run=%s started\n' 'preStop' 'ns/name' '<token>' "$$" 2>/dev/null >>/proc/1/fd/1 || :
//! <shell> -<flags>c '<script, single-quoted>' "$0" "$@"    ("$0" "$@" only when given)
//! __lco_rc=$?
//! printf 'lifecycle-operator: hook=%s policy=%s token=%s run=%s rc=%s\n' 'preStop' 'ns/name' '<token>' "$$" "$__lco_rc" 2>/dev/null >>/proc/1/fd/1 || :
//! exit "$__lco_rc"
//! ```
//!
//! - The token (16 hex digits) is a hash of the policy's UID, the hook kind
//!   and the hook as the policy states it: only an edit of the hook (or a
//!   policy created again) changes it, and an application's own output does
//!   not carry it by accident. `run` is the outer shell's PID, the same in
//!   both lines of one run and different between runs that overlap, so each
//!   end line is paired with its start line. The observer ignores a line
//!   without the hook's token, and an end line without its start line. This
//!   is an audit aid against mistakes, not a security boundary: a process in
//!   the container can read the hook's command line (`/proc/<pid>/cmdline`)
//!   and print the same lines.
//! - Two lines: one as the hook starts, one with its exit code as it ends.
//!   The container runtime stamps every log line with a nanosecond time, so
//!   the pair gives the hook's duration without needing `date` (or anything
//!   but `printf`, a builtin of every POSIX shell and busybox) in the image.
//!   A preStop cut short by its container's exit leaves the first line only.
//! - The script runs exactly as the user wrote it: the same shell, the same
//!   flags, the same `$0` and arguments, as a process of its own started by
//!   an outer shell that only writes the markers. So the shell parses it as
//!   it would have (command by command: a syntax error late in the script
//!   still runs the lines before it, an alias defined on one line works on
//!   the next, an unterminated heredoc ends where it did), `$$` is the
//!   script's own process (`trap ... TERM; kill -TERM $$` reaches the
//!   script's trap), `-x` traces the script and not the wrapper, `-e` and
//!   `-u` mean what they meant, its own `exit` cannot skip the end marker,
//!   and its error messages keep their line numbers. The script is one
//!   single-quoted word of the outer script, so nothing in it (quotes,
//!   trailing backslashes, heredocs) can reach the wrapper. The cost is one
//!   more shell process while the hook runs.
//! - `>>` appends: the same on PID 1's pipe, and right if it is a file.
//! - `2>/dev/null` comes before the redirection to PID 1's stdout so that an
//!   unwritable target fails silently; `|| :` keeps that from changing the rc.

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::api::types::{ExecAction, Handler};
use crate::hooks::hook::HookKind;

/// Every marker line starts with this.
pub const PREFIX: &str = "lifecycle-operator: ";

/// Where the marker goes in a container: PID 1's stdout is what the kubelet
/// collects as the container's log.
const TARGET: &str = "/proc/1/fd/1";

/// Shells whose `-c` flag takes a script; the basename of command[0].
const SHELLS: [&str; 7] = ["sh", "bash", "ash", "dash", "ksh", "mksh", "zsh"];

/// How a hook's running will be proven.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Evidence {
    /// A marker line in the container's log.
    Marker,
    /// Kubelet events and container states only.
    #[default]
    Events,
}

/// One parsed marker line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub hook: HookKind,
    pub policy: String,
    /// See [`token`].
    pub token: u64,
    /// The run: the wrapper's PID, pairing a start line with its end line.
    pub run: u32,
    pub phase: Phase,
    /// The log line's timestamp, when the log was read with timestamps.
    pub at: Option<Timestamp>,
}

/// Which of a hook's two marker lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The hook began.
    Started,
    /// The hook's script ended with this exit code.
    Ended { rc: i32 },
}

/// Returns the handler to put on the pod template and how its running will be
/// proven. `policy` is "namespace/name", `uid` the policy's UID (see [`token`]).
pub fn wrap(
    handler: &Handler,
    hook: HookKind,
    policy: &str,
    uid: Option<&str>,
) -> (Handler, Evidence) {
    wrap_to(handler, hook, policy, uid, TARGET)
}

/// The token in a hook's marker lines: FNV-1a (64 bits; stable across
/// builds, unlike std's hasher) of the policy's UID, the hook kind and the
/// hook as the policy states it (before wrapping).
pub fn token(uid: Option<&str>, hook: HookKind, handler: &Handler) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        // Length-prefixed, so that no two inputs run together the same way.
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(b"lifecycle-operator.io/marker/v1");
    eat(uid.unwrap_or_default().as_bytes());
    eat(hook.field().as_bytes());
    // serde_json writes a struct's fields in declaration order: stable.
    eat(serde_json::to_string(handler)
        .unwrap_or_default()
        .as_bytes());
    h
}

/// What a wrapped hook's command says of itself: the hook, the policy
/// and the token its markers carry, and the user's script inside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wrapped {
    pub hook: HookKind,
    pub policy: String,
    pub token: u64,
    pub script: String,
}

/// Reads a command as [`wrap`] writes it; None for any other command (a
/// hook the operator did not wrap).
pub fn wrapped_by(command: &[String]) -> Option<Wrapped> {
    let [_, flag, outer, ..] = command else {
        return None;
    };
    let head = format!("printf '{PREFIX}hook=%s policy=%s token=%s run=%s started\\n' ");
    let rest = outer.strip_prefix(&head).filter(|_| flag == "-c")?;
    let (first, after) = rest.split_once('\n')?;
    let mut words = first.split(' ');
    let mut quoted = || words.next()?.strip_prefix('\'')?.strip_suffix('\'');
    let hook = HookKind::from_field(quoted()?)?;
    let policy = quoted()?.to_string();
    let token = quoted()?;
    if token.len() != 16 {
        return None;
    }
    let token = u64::from_str_radix(token, 16).ok()?;
    // The next line: `<shell> -<flags>c '<script>' ...`.
    let (_, script) = after.split_once(" '")?;
    Some(Wrapped {
        hook,
        policy,
        token,
        script: unquote(script)?,
    })
}

/// The inside of a word [`quote`] made, from just after its opening quote.
fn unquote(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let i = s.find('\'')?;
        out.push_str(&s[..i]);
        match s[i..].strip_prefix("'\\''") {
            Some(rest) => {
                out.push('\'');
                s = rest;
            }
            None => return Some(out),
        }
    }
}

/// [`wrap`] with the marker sent to `target`, so tests can run the script.
fn wrap_to(
    handler: &Handler,
    hook: HookKind,
    policy: &str,
    uid: Option<&str>,
    target: &str,
) -> (Handler, Evidence) {
    let Some(exec) = &handler.exec else {
        return (handler.clone(), Evidence::Events);
    };
    let Some(script) = shell_script(&exec.command) else {
        return (handler.clone(), Evidence::Events);
    };
    let token = format!("{:016x}", token(uid, hook, handler));
    let head = head(hook, policy, &token, target);
    let trailer = trailer(hook, policy, &token, target);
    if exec.command[1] == "-c" && is_wrapped(script, hook, policy, target) {
        // Already wrapped for this hook and policy: again would log twice.
        return (handler.clone(), Evidence::Marker);
    }
    let mut command = exec.command.clone();
    // The user's shell and flags run the script; the outer shell needs no
    // flag. `$0` and the arguments are handed on when there are any (a
    // shell told its `$0` reports errors otherwise: busybox adds "line N").
    let args = if exec.command.len() > 3 {
        " \"$0\" \"$@\""
    } else {
        ""
    };
    command[2] = format!(
        "{head}{} {} {}{args}{trailer}",
        word(&exec.command[0]),
        exec.command[1],
        quote(script)
    );
    command[1] = "-c".to_string();
    let wrapped = Handler {
        exec: Some(ExecAction { command }),
        ..handler.clone()
    };
    (wrapped, Evidence::Marker)
}

/// The script of a `<shell> -<flags>c <script> [$0 $1 ...]` command, if it is one.
fn shell_script(command: &[String]) -> Option<&str> {
    let [shell, flag, script, ..] = command else {
        return None;
    };
    let name = shell.rsplit('/').next().unwrap_or(shell);
    (SHELLS.contains(&name) && is_script_flag(flag)).then_some(script.as_str())
}

/// One option word ending in `c`: "-c", "-ec", "-euc". Anything fancier
/// ("-o pipefail", "--login") is left alone rather than guessed at.
fn is_script_flag(flag: &str) -> bool {
    flag.strip_prefix('-').is_some_and(|letters| {
        letters.ends_with('c') && letters.bytes().all(|b| b.is_ascii_alphabetic())
    })
}

/// The outer script before the user's: the start marker.
fn head(hook: HookKind, policy: &str, token: &str, target: &str) -> String {
    format!(
        "printf '{PREFIX}hook=%s policy=%s token=%s run=%s started\\n' {} {} {} \"$$\" 2>/dev/null >>{} || :\n",
        quote(hook.field()),
        quote(policy),
        quote(token),
        word(target),
    )
}

/// The outer script after the user's: the end marker with the exit code.
fn trailer(hook: HookKind, policy: &str, token: &str, target: &str) -> String {
    format!(
        "\n__lco_rc=$?\nprintf '{PREFIX}hook=%s policy=%s token=%s run=%s rc=%s\\n' {} {} {} \"$$\" \"$__lco_rc\" 2>/dev/null >>{} || :\nexit \"$__lco_rc\"",
        quote(hook.field()),
        quote(policy),
        quote(token),
        word(target),
    )
}

/// Whether `script` is already this hook's and policy's wrapper (whatever
/// its token): wrapping it again would log twice.
fn is_wrapped(script: &str, hook: HookKind, policy: &str, target: &str) -> bool {
    const T: &str = "@@token@@";
    let (h, t) = (
        head(hook, policy, T, target),
        trailer(hook, policy, T, target),
    );
    let (Some((h1, h2)), Some((t1, t2))) = (h.split_once(T), t.split_once(T)) else {
        return false;
    };
    let token_at = |s: &str| s.len() >= 16 && s.as_bytes()[..16].iter().all(u8::is_ascii_hexdigit);
    script.strip_prefix(h1).is_some_and(|rest| {
        token_at(rest)
            && rest[16..].starts_with(h2)
            && script.ends_with(t2)
            && script[..script.len() - t2.len()]
                .rsplit_once(t1)
                .is_some_and(|(_, tok)| tok.len() == 16 && token_at(tok))
    })
}

/// Single-quotes `s` for the shell; nothing inside can end the quoting.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `s` as one shell word: bare when it is plainly a path, quoted otherwise.
fn word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    if plain { s.to_string() } else { quote(s) }
}

/// Parses one log line: `lifecycle-operator: hook=preStop policy=ns/name
/// token=<16 hex digits> run=<digits> started` or `... rc=<digits>`,
/// optionally after an RFC 3339 timestamp and a space (logs read with
/// `timestamps=true`) and before a line feed. Anything else is None.
pub fn parse(line: &str) -> Option<Marker> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let (at, body) = match line.strip_prefix(PREFIX) {
        Some(body) => (None, body),
        None => {
            let (ts, rest) = line.split_once(' ')?;
            (Some(timestamp(ts)?), rest.strip_prefix(PREFIX)?)
        }
    };
    let mut fields = body.split(' ');
    let mut field = |name: &str| fields.next()?.strip_prefix(name);
    let hook = HookKind::from_field(field("hook=")?)?;
    let policy = field("policy=")?;
    let token = field("token=")?;
    let run = field("run=")?;
    let last = fields.next()?;
    if fields.next().is_some() || policy.is_empty() || policy.contains(char::is_whitespace) {
        return None;
    }
    if token.len() != 16
        || !token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let phase = match last {
        "started" => Phase::Started,
        _ => Phase::Ended {
            rc: digits(last.strip_prefix("rc=")?)?,
        },
    };
    Some(Marker {
        hook,
        policy: policy.to_string(),
        token: u64::from_str_radix(token, 16).ok()?,
        run: digits(run)?,
        phase,
        at,
    })
}

/// A non-empty run of ASCII digits that fits `T` (`str::parse` alone would
/// also take "+1").
fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// An RFC 3339 timestamp as the kubelet writes it (`2006-01-02T15:04:05.999999999Z`).
/// The character check keeps out the extra syntax jiff also accepts.
fn timestamp(s: &str) -> Option<Timestamp> {
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || b"-:.+TZtz".contains(&b))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_command_says_its_hook_policy_token_and_script() {
        for script in ["sleep 5", "echo 'it''s' \\; exit 3", "中文 'x'"] {
            let h = exec(&["/bin/sh", "-ec", script, "zero", "one"]);
            let (w, _) = wrap(&h, HookKind::PreStop, "shop/web", Some("u-1"));
            let got = wrapped_by(&w.exec.unwrap().command).unwrap();
            assert_eq!(got.hook, HookKind::PreStop);
            assert_eq!(got.policy, "shop/web");
            assert_eq!(got.token, token(Some("u-1"), HookKind::PreStop, &h));
            assert_eq!(got.script, script);
        }
        let plain: Vec<String> = ["/bin/sh", "-c", "sleep 5"].map(String::from).to_vec();
        assert_eq!(wrapped_by(&plain), None);
    }
    use crate::api::types::{HttpGetAction, SleepAction};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use std::path::PathBuf;
    use std::process::{Command, Output};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const POLICY: &str = "web/nginx-graceful";
    const UID: Option<&str> = Some("3f2a9c1b-0d4e-4f60-8a7b-1c2d3e4f5a6b");

    fn exec(command: &[&str]) -> Handler {
        Handler {
            exec: Some(ExecAction {
                command: command.iter().map(|s| s.to_string()).collect(),
            }),
            http_get: None,
            sleep: None,
        }
    }

    fn command(h: &Handler) -> &[String] {
        &h.exec.as_ref().unwrap().command
    }

    #[test]
    fn shell_scripts_are_wrapped() {
        let cases: &[&[&str]] = &[
            &["sh", "-c", "echo hi"],
            &["bash", "-c", "echo hi"],
            &["ash", "-c", "echo hi"],
            &["dash", "-c", "echo hi"],
            &["ksh", "-c", "echo hi"],
            &["mksh", "-c", "echo hi"],
            &["zsh", "-c", "echo hi"],
            &["/bin/sh", "-c", "echo hi"],
            &["/usr/local/bin/bash", "-c", "echo hi"],
            &["sh", "-ec", "echo hi"],
            &["sh", "-xc", "echo hi"],
            &["bash", "-lc", "echo hi"],
            &["sh", "-euc", "echo hi"],
            &["sh", "-c", ""],
            &["sh", "-c", "echo $0 $1", "zero", "one"],
        ];
        for cmd in cases {
            for hook in [HookKind::PostStart, HookKind::PreStop] {
                let (out, ev) = wrap(&exec(cmd), hook, POLICY, UID);
                assert_eq!(ev, Evidence::Marker, "{cmd:?}");
                let got = command(&out);
                assert_eq!(got.len(), cmd.len(), "{cmd:?}");
                assert_eq!(got[0], cmd[0], "{cmd:?}: shell kept");
                assert_eq!(got[1], "-c", "{cmd:?}: the outer shell takes no flags");
                assert_eq!(got[3..], cmd[3..], "{cmd:?}: positional args kept");
                let args = if cmd.len() > 3 { " \"$0\" \"$@\"" } else { "" };
                let tok = format!("{:016x}", token(UID, hook, &exec(cmd)));
                let expected = format!(
                    "printf 'lifecycle-operator: hook=%s policy=%s token=%s run=%s started\\n' '{h}' 'web/nginx-graceful' '{tok}' \"$$\" 2>/dev/null >>/proc/1/fd/1 || :\n{} {} '{}'{args}\n__lco_rc=$?\nprintf 'lifecycle-operator: hook=%s policy=%s token=%s run=%s rc=%s\\n' '{h}' 'web/nginx-graceful' '{tok}' \"$$\" \"$__lco_rc\" 2>/dev/null >>/proc/1/fd/1 || :\nexit \"$__lco_rc\"",
                    cmd[0],
                    cmd[1],
                    cmd[2],
                    h = hook.field()
                );
                assert_eq!(got[2], expected, "{cmd:?}");
            }
        }
    }

    #[test]
    fn everything_else_is_left_alone() {
        let cases: &[&[&str]] = &[
            &["nginx", "-s", "quit"],
            &["/bin/sh", "script.sh"],
            &["/bin/sh", "script.sh", "arg"],
            &["sh", "-c"],
            &["sh"],
            &["python3", "-c", "print(1)"],
            &["/bin/shx", "-c", "echo"],
            &["fish", "-c", "echo"],
            &["/bin/", "-c", "echo"],
            &["sh", "-e", "echo"],
            &["sh", "c", "echo"],
            &["sh", "--c", "echo"],
            &["sh", "-", "echo"],
            &["sh", "-o", "pipefail", "-c", "echo"],
            &["sh", "-c1", "echo"],
            &["sh", "-ce", "echo"],
            &["sh", "-é c", "echo"],
            &["env", "sh", "-c", "echo"],
            &["busybox", "sh", "-c", "echo"],
        ];
        for cmd in cases {
            let h = exec(cmd);
            assert_eq!(
                wrap(&h, HookKind::PreStop, POLICY, UID),
                (h.clone(), Evidence::Events),
                "{cmd:?}"
            );
        }
    }

    #[test]
    fn http_get_and_sleep_are_verified_by_events() {
        let http = Handler {
            exec: None,
            http_get: Some(HttpGetAction {
                path: Some("/shutdown".into()),
                port: IntOrString::Int(8080),
                host: None,
                scheme: None,
                http_headers: None,
            }),
            sleep: None,
        };
        let sleep = Handler {
            exec: None,
            http_get: None,
            sleep: Some(SleepAction { seconds: 5 }),
        };
        for h in [http, sleep] {
            for hook in [HookKind::PostStart, HookKind::PreStop] {
                assert_eq!(wrap(&h, hook, POLICY, UID), (h.clone(), Evidence::Events));
            }
        }
    }

    #[test]
    fn wrapping_is_idempotent_per_hook_and_policy() {
        let h = exec(&["sh", "-c", "echo hi"]);
        let (once, _) = wrap(&h, HookKind::PreStop, POLICY, UID);
        assert_eq!(
            wrap(&once, HookKind::PreStop, POLICY, UID),
            (once.clone(), Evidence::Marker)
        );
        // Another hook or policy is another marker: wrapped again, not mistaken.
        for (hook, policy) in [
            (HookKind::PostStart, POLICY),
            (HookKind::PreStop, "web/other"),
        ] {
            let (twice, ev) = wrap(&once, hook, policy, UID);
            assert_eq!(ev, Evidence::Marker);
            assert_ne!(twice, once, "{hook:?} {policy}");
        }
    }

    #[test]
    fn the_token_changes_with_the_uid_and_the_hook_only() {
        let h = exec(&["sh", "-c", "echo hi"]);
        let base = token(UID, HookKind::PreStop, &h);
        assert_eq!(base, token(UID, HookKind::PreStop, &h.clone()), "stable");
        // Pinned (an independent FNV-1a of the same bytes): a build that
        // hashed differently would roll every hooked workload.
        assert_eq!(format!("{base:016x}"), "04bbb396b743e9ef");
        for (other, what) in [
            (token(Some("another-uid"), HookKind::PreStop, &h), "uid"),
            (token(None, HookKind::PreStop, &h), "no uid"),
            (token(UID, HookKind::PostStart, &h), "hook kind"),
            (
                token(UID, HookKind::PreStop, &exec(&["sh", "-c", "echo hi "])),
                "script",
            ),
            (
                token(UID, HookKind::PreStop, &exec(&["sh", "-ec", "echo hi"])),
                "flags",
            ),
            (
                token(UID, HookKind::PreStop, &exec(&["sh", "-c", "echo hi", "x"])),
                "args",
            ),
        ] {
            assert_ne!(other, base, "{what} changes the token");
        }
        // Adjacent inputs cannot run together into the same bytes.
        assert_ne!(
            token(Some("ab"), HookKind::PreStop, &h),
            token(Some("a"), HookKind::PreStop, &h)
        );
        // The rendered hook carries it, and only a hook edit changes it.
        let (w1, _) = wrap(&h, HookKind::PreStop, POLICY, UID);
        assert!(command(&w1)[2].contains(&format!("'{base:016x}'")));
        let (w2, _) = wrap(&h, HookKind::PreStop, POLICY, UID);
        assert_eq!(w1, w2);
    }

    #[test]
    fn quoting() {
        let cases = [
            ("a", "'a'"),
            ("", "''"),
            ("a'b", r"'a'\''b'"),
            ("'", r"''\'''"),
            ("$(touch x)`y`;z", "'$(touch x)`y`;z'"),
        ];
        for (input, want) in cases {
            assert_eq!(quote(input), want, "{input:?}");
        }
        let words = [
            ("/proc/1/fd/1", "/proc/1/fd/1"),
            ("/tmp/lco-1.log", "/tmp/lco-1.log"),
            ("/tmp/a b", "'/tmp/a b'"),
            ("", "''"),
        ];
        for (input, want) in words {
            assert_eq!(word(input), want, "{input:?}");
        }
    }

    #[test]
    fn a_quote_in_the_policy_cannot_break_out() {
        let policy = "ns/x'; touch /tmp/pwned; echo '";
        let (out, _) = wrap(&exec(&["sh", "-c", "true"]), HookKind::PreStop, policy, UID);
        assert!(command(&out)[2].contains(r"'ns/x'\''; touch /tmp/pwned; echo '\'''"));
    }

    #[test]
    fn parse_table() {
        let at = |t: &str| Some(t.parse::<Timestamp>().unwrap());
        let marker = |hook, policy: &str, phase, at| {
            Some(Marker {
                hook,
                policy: policy.into(),
                token: 0x0123_4567_89ab_cdef,
                run: 42,
                phase,
                at,
            })
        };
        let pre = |policy: &str, rc| marker(HookKind::PreStop, policy, Phase::Ended { rc }, None);
        let pre_at =
            |policy: &str, rc, t| marker(HookKind::PreStop, policy, Phase::Ended { rc }, at(t));
        let cases: &[(&str, Option<Marker>)] = &[
            (
                "lifecycle-operator: hook=preStop policy=web/nginx-graceful token=0123456789abcdef run=42 rc=0",
                pre("web/nginx-graceful", 0),
            ),
            (
                "lifecycle-operator: hook=postStart policy=a/b token=0123456789abcdef run=42 rc=1",
                marker(HookKind::PostStart, "a/b", Phase::Ended { rc: 1 }, None),
            ),
            (
                "lifecycle-operator: hook=postStart policy=a/b token=0123456789abcdef run=42 started",
                marker(HookKind::PostStart, "a/b", Phase::Started, None),
            ),
            (
                "2024-05-01T12:00:00.5Z lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 started\n",
                marker(
                    HookKind::PreStop,
                    "a/b",
                    Phase::Started,
                    at("2024-05-01T12:00:00.5Z"),
                ),
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=255",
                pre("a/b", 255),
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=0\n",
                pre("a/b", 0),
            ),
            (
                "lifecycle-operator: hook=preStop policy=x'y token=0123456789abcdef run=42 rc=3",
                pre("x'y", 3),
            ),
            (
                "2024-05-01T12:00:00.123456789Z lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=0",
                pre_at("a/b", 0, "2024-05-01T12:00:00.123456789Z"),
            ),
            (
                "2024-05-01T12:00:00Z lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=7",
                pre_at("a/b", 7, "2024-05-01T12:00:00Z"),
            ),
            (
                "2024-05-01T12:00:00+02:00 lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=0",
                pre_at("a/b", 0, "2024-05-01T10:00:00Z"),
            ),
            // Everything below is rejected.
            // The format before tokens, and broken tokens or runs.
            ("lifecycle-operator: hook=preStop policy=a/b rc=0", None),
            ("lifecycle-operator: hook=preStop policy=a/b started", None),
            (
                "lifecycle-operator: hook=preStop policy=a/b run=42 rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789ABCDEF run=42 rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcde run=42 rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef0 run=42 rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdeg run=42 rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=+123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run= rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=x rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=+4 rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=99999999999 rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b run=42 token=0123456789abcdef rc=0",
                None,
            ),
            ("", None),
            ("lifecycle-operator: ", None),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=-1",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=+1",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=1x",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=99999999999",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=0 ",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=0\n\n",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=0\r\n",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b  token=0123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy= token=0123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy= token=0123456789abcdef run=42 started",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 started ",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 start",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a/b started token=0123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a b token=0123456789abcdef run=42 started",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop policy=a b token=0123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=prestop policy=a/b token=0123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook= policy=a/b token=0123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "lifecycle-operator: policy=a/b hook=preStop token=0123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "lifecycle-operator: hook=preStop token=0123456789abcdef run=42 rc=0",
                None,
            ),
            ("lifecycle-operator:hook=preStop policy=a/b rc=0", None),
            (
                " lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "x lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "nginx: lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "2024-05-01T12:00:00Z  lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "2024-05-01T12:00:00 lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "2024-05-01T12:00:00Z[UTC] lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "2024-05-01T12:00:00Z 2024-05-01T12:00:00Z lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "12345 lifecycle-operator: hook=preStop policy=a/b token=0123456789abcdef run=42 rc=0",
                None,
            ),
            (
                "printf 'lifecycle-operator: hook=%s policy=%s rc=%s\\n' 'preStop' 'a/b' \"$__lco_rc\"",
                None,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), *want, "{line:?}");
        }
    }

    // ---- Running the wrapped script in real shells. ----

    /// A fresh path in the temp dir, unique per test run and call.
    fn temp_path(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("lco-{tag}-{}-{n}", std::process::id()))
    }

    /// Runs a hook's exec command as the kubelet would (through PATH).
    fn run(command: &[String]) -> Output {
        Command::new(&command[0])
            .args(&command[1..])
            .env_remove("LCO_UNSET")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "{} runs ({e}); busybox: run hack/cluster/install-deps.sh",
                    command[0]
                )
            })
    }

    /// `cmd` with `shell` as its command[0].
    fn with_shell(shell: &str, cmd: &[&str]) -> Handler {
        let mut c: Vec<&str> = cmd.to_vec();
        c[0] = shell;
        exec(&c)
    }

    /// Runs the original and the wrapped command; both must behave the same
    /// (exit code, stdout, stderr), and the wrapped one must write exactly
    /// its two markers with the exit code. Returns the original's output.
    fn check_same(shell: &str, cmd: &[&str], want_rc: i32) -> Output {
        let marker = temp_path("marker");
        let target = marker.to_str().unwrap();
        let original = with_shell(shell, cmd);
        let (wrapped, ev) = wrap_to(&original, HookKind::PreStop, POLICY, UID, target);
        assert_eq!(ev, Evidence::Marker);
        let before = run(command(&original));
        let after = run(command(&wrapped));
        let written = std::fs::read_to_string(&marker).unwrap_or_default();
        let _ = std::fs::remove_file(&marker);

        let ctx = format!("{shell} {cmd:?}");
        assert_eq!(before.status.code(), Some(want_rc), "{ctx}: original rc");
        assert_eq!(after.status.code(), Some(want_rc), "{ctx}: wrapped rc");
        assert_eq!(
            String::from_utf8_lossy(&after.stdout),
            String::from_utf8_lossy(&before.stdout),
            "{ctx}: stdout"
        );
        assert_eq!(
            String::from_utf8_lossy(&after.stderr),
            String::from_utf8_lossy(&before.stderr),
            "{ctx}: stderr"
        );
        check_markers(&written, POLICY, &original, want_rc, &ctx);
        before
    }

    /// `written` is exactly one run's two marker lines for `original`.
    fn check_markers(written: &str, policy: &str, original: &Handler, rc: i32, ctx: &str) {
        let tok = token(UID, HookKind::PreStop, original);
        // Read as text: a hostile policy name is no valid marker.
        let run: u32 = written
            .split_once(" run=")
            .and_then(|(_, r)| r.split_once(' '))
            .and_then(|(r, _)| r.parse().ok())
            .unwrap_or_else(|| panic!("{ctx}: no run in {written:?}"));
        assert_eq!(
            written,
            format!(
                "lifecycle-operator: hook=preStop policy={policy} token={tok:016x} run={run} started\nlifecycle-operator: hook=preStop policy={policy} token={tok:016x} run={run} rc={rc}\n"
            ),
            "{ctx}: markers"
        );
        if policy.contains(' ') {
            return;
        }
        let got: Vec<(Phase, u64, u32)> = written
            .lines()
            .map(|l| parse(l).expect("a marker"))
            .map(|m| (m.phase, m.token, m.run))
            .collect();
        assert_eq!(
            got,
            [(Phase::Started, tok, run), (Phase::Ended { rc }, tok, run)],
            "{ctx}"
        );
        assert_ne!(run, 0, "{ctx}: the run is the wrapper's PID");
    }

    /// dash (Debian's /bin/sh), bash, and busybox's sh (Alpine's /bin/sh: a
    /// link named `sh` to busybox; busybox is installed by
    /// hack/cluster/install-deps.sh, which `make test` runs first). Each is
    /// command[0] of the hook, as in a container: the wrapper runs the
    /// script with that same shell.
    fn shells() -> [String; 3] {
        static LINK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let busybox = LINK.get_or_init(|| {
            let dir = temp_path("busybox");
            std::fs::create_dir_all(&dir).unwrap();
            let link = dir.join("sh");
            let bin = ["/usr/bin/busybox", "/bin/busybox"]
                .into_iter()
                .find(|p| std::path::Path::new(p).exists())
                .expect("busybox is installed: run hack/cluster/install-deps.sh");
            std::os::unix::fs::symlink(bin, &link).unwrap();
            link.to_str().unwrap().to_string()
        });
        ["dash".into(), "bash".into(), busybox.clone()]
    }

    fn is_bash(shell: &str) -> bool {
        shell == "bash"
    }

    #[test]
    fn wrapped_scripts_behave_like_the_originals() {
        let heredoc = "cat <<EOF\nhello $(echo sub) `echo tick`\n  'quoted' \"dq\"\nEOF\nexit 4";
        let quoted_heredoc = "cat <<'EOF'\n$(not run) `nor this` 'x'\nEOF";
        let cases: &[(&[&str], i32)] = &[
            (&["sh", "-c", "true"], 0),
            (&["sh", "-c", ""], 0),
            (&["sh", "-c", "false"], 1),
            (&["sh", "-c", "exit 3"], 3),
            (&["sh", "-c", "echo out; echo err >&2; exit 7"], 7),
            (&["sh", "-c", "false; exit"], 1),
            (&["sh", "-c", "exit 0; echo never"], 0),
            (&["sh", "-c", "echo a\necho b\n"], 0),
            (&["sh", "-c", "echo hi # trailing comment"], 0),
            (&["sh", "-c", "# only a comment"], 0),
            (&["sh", "-c", "#!/bin/sh\necho shebang"], 0),
            (
                &["sh", "-c", "echo 'single' \"double\" \\\"esc\\\" it\\'s"],
                0,
            ),
            (
                &["sh", "-c", "echo $(echo sub; exit 9); echo `echo tick`"],
                0,
            ),
            (&["sh", "-c", heredoc], 4),
            (&["sh", "-c", quoted_heredoc], 0),
            (&["sh", "-c", "(exit 5)"], 5),
            (&["sh", "-c", "f() { return 6; }; f"], 6),
            (&["sh", "-c", "trap 'echo trapped' EXIT; exit 2"], 2),
            (&["sh", "-c", "exec sh -c 'exit 8'"], 8),
            (&["sh", "-c", "echo \"$0|$1|$2\"", "zero", "one", "two"], 0),
            (
                &[
                    "sh",
                    "-c",
                    "printf '%s\\n' \"$@\"; exit $#",
                    "z",
                    "a b",
                    "c",
                ],
                2,
            ),
            // Errors the shell reports itself: line numbers must not move.
            (&["sh", "-c", "nosuchcmd-lco"], 127),
            (&["sh", "-c", "echo one\n\nnosuchcmd-lco\necho after"], 0),
            (&["sh", "-c", "echo one\nnosuchcmd-lco"], 127),
            // -e, from the flags or from the script, still stops the script.
            (&["sh", "-ec", "false\necho not reached"], 1),
            (&["sh", "-ec", "echo before; false; echo not reached"], 1),
            (&["sh", "-c", "set -e\nfalse\necho not reached"], 1),
            (&["sh", "-ec", "nosuchcmd-lco\necho not reached"], 127),
            (&["sh", "-ec", "false || echo handled"], 0),
            (&["sh", "-c", "false\necho reached without -e"], 0),
            (&["sh", "-euc", "echo \"$LCO_UNSET\"\necho not reached"], 2),
            (&["sh", "-c", "echo \"$-\""], 0),
            (&["sh", "-ec", "echo \"$-\""], 0),
        ];
        for shell in shells() {
            for (cmd, rc) in cases {
                // bash exits 1 on an unset variable, dash 2.
                let rc = match (is_bash(&shell), cmd[2].contains("LCO_UNSET")) {
                    (true, true) => 1,
                    _ => *rc,
                };
                check_same(&shell, cmd, rc);
            }
        }
    }

    /// The cases a wrapper that parses the script as one subshell got wrong
    /// (issue 25): each must behave exactly as the original, in every shell.
    #[test]
    fn the_script_is_parsed_and_run_as_the_shell_would() {
        for shell in shells() {
            let bash = is_bash(&shell);
            // A syntax error late in the script: the lines before it run.
            let out = check_same(&shell, &["sh", "-c", "echo one\nif then\necho never"], 2);
            assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n", "{shell}");
            // An unterminated heredoc ends at the end of the script.
            let out = check_same(&shell, &["sh", "-c", "cat <<EOF\nhi\nEO"], 0);
            assert!(
                String::from_utf8_lossy(&out.stdout).starts_with("hi\nEO"),
                "{shell}"
            );
            // An alias defined on one line is used on the next (bash expands
            // aliases only when interactive: 127 there, as without the wrapper).
            let out = check_same(
                &shell,
                &["sh", "-c", "alias x=echo\nx hi"],
                if bash { 127 } else { 0 },
            );
            if !bash {
                assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "{shell}");
            }
            // The script's own $$: its TERM trap runs and it carries on.
            let out = check_same(
                &shell,
                &[
                    "sh",
                    "-c",
                    "trap 'echo trapped' TERM; kill -TERM $$; echo after",
                ],
                0,
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "trapped\nafter\n",
                "{shell}"
            );
            // -x traces the script only (stderr compared with the original's).
            let out = check_same(&shell, &["sh", "-xc", "echo hi\nfalse"], 1);
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("echo hi"),
                "{shell}"
            );
            // Trailing backslashes: a line continuation, and a last one.
            let out = check_same(&shell, &["sh", "-c", "echo a \\\nb \\"], 0);
            assert_eq!(String::from_utf8_lossy(&out.stdout), "a b \\\n", "{shell}");
            check_same(&shell, &["sh", "-c", "echo x\\"], 0);
            check_same(&shell, &["sh", "-c", "echo x\\\\\\"], 0);
            // The script's quotes cannot close the wrapper's.
            check_same(&shell, &["sh", "-c", "echo \"it's\" 'say \"hi\"' '\\'"], 0);
            // $0 without positional arguments is the shell, as invoked.
            let out = check_same(&shell, &["sh", "-c", "echo \"$0 $#\""], 0);
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{shell} 0\n"));
        }
    }

    #[test]
    fn set_e_in_flags_is_not_lost_or_added() {
        // Without -e the script goes on after a failure; with it, it stops.
        for shell in shells() {
            for (flag, want) in [("-c", "a\nb\n"), ("-ec", "a\n")] {
                let cmd = exec(&[&shell, flag, "echo a; false; echo b"]);
                let marker = temp_path("e");
                let (w, _) = wrap_to(
                    &cmd,
                    HookKind::PostStart,
                    POLICY,
                    UID,
                    marker.to_str().unwrap(),
                );
                let out = run(command(&w));
                let _ = std::fs::remove_file(&marker);
                assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{shell} {flag}");
            }
        }
    }

    #[test]
    fn an_unwritable_marker_target_changes_nothing() {
        for shell in shells() {
            for (script, rc) in [("echo hi", 0), ("exit 3", 3)] {
                let cmd = exec(&[&shell, "-ec", script]);
                let target = "/nonexistent-lco-dir/marker";
                let (w, _) = wrap_to(&cmd, HookKind::PreStop, POLICY, UID, target);
                let out = run(command(&w));
                assert_eq!(out.status.code(), Some(rc), "{shell} {script}");
                assert!(out.stderr.is_empty(), "{shell}: {:?}", out.stderr);
            }
        }
    }

    #[test]
    fn a_hostile_policy_name_runs_nothing() {
        for shell in shells() {
            let pwned = temp_path("pwned");
            let p = pwned.to_str().unwrap();
            let policy = format!("ns/x'$(touch {p})'`touch {p}`';touch {p};'\\'\"");
            let marker = temp_path("marker");
            let cmd = exec(&[&shell, "-c", "echo hi"]);
            let (w, _) = wrap_to(
                &cmd,
                HookKind::PreStop,
                &policy,
                UID,
                marker.to_str().unwrap(),
            );
            let out = run(command(&w));
            let written = std::fs::read_to_string(&marker).unwrap_or_default();
            let _ = std::fs::remove_file(&marker);
            assert_eq!(out.status.code(), Some(0), "{shell}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "{shell}");
            assert!(!pwned.exists(), "{shell}: the policy name ran a command");
            // The name is printed verbatim.
            check_markers(&written, &policy, &cmd, 0, &shell);
        }
    }
}
