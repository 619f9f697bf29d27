//! How long a preStop keeps its container serving before it can stop it:
//! the hook's leading sleep. Read from the policy's own handler (before the
//! markers wrap it). Anything that is not plainly a sleep first counts as
//! 0 s: such a hook may tell its process to quit at once, as the Kubernetes
//! docs' `nginx -s quit; ...` does.

use crate::api::types::Handler;

/// The longest preStop the API allows is the grace period's cap.
const MAX_SECONDS: f64 = 3600.0;

/// Seconds the hook waits before it can stop its container.
pub fn leading_sleep(h: &Handler) -> f64 {
    if let Some(s) = &h.sleep {
        return (s.seconds as f64).clamp(0.0, MAX_SECONDS);
    }
    let Some(exec) = &h.exec else {
        return 0.0;
    };
    let secs = match exec.command.as_slice() {
        [prog, n] if is_sleep(prog) => seconds(n),
        [shell, c, script, ..] if is_shell(shell) && c == "-c" => script_sleep(script),
        _ => None,
    };
    secs.unwrap_or(0.0).clamp(0.0, MAX_SECONDS)
}

fn is_sleep(prog: &str) -> bool {
    matches!(prog, "sleep" | "/bin/sleep" | "/usr/bin/sleep")
}

fn is_shell(prog: &str) -> bool {
    let name = prog.rsplit('/').next().unwrap_or(prog);
    matches!(name, "sh" | "bash" | "ash" | "dash")
}

/// `sleep N` as the script's first command: followed by the end, a newline,
/// `;` or `&&` (not `&`, which sleeps in the background, nor `||`).
fn script_sleep(script: &str) -> Option<f64> {
    let rest = script.trim_start().strip_prefix("sleep")?;
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let end = rest
        .find([' ', '\t', ';', '\n', '&', '|'])
        .unwrap_or(rest.len());
    let (n, after) = rest.split_at(end);
    let after = after.trim_start_matches([' ', '\t']);
    let ends = after.is_empty()
        || after.starts_with(';')
        || after.starts_with('\n')
        || after.starts_with("&&");
    if ends { seconds(n) } else { None }
}

/// `5`, `0.5`, `5s`: what both GNU and busybox sleep accept.
fn seconds(n: &str) -> Option<f64> {
    let n = n.strip_suffix('s').unwrap_or(n);
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    n.parse::<f64>().ok().filter(|s| s.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{ExecAction, SleepAction};

    fn exec(cmd: &[&str]) -> Handler {
        Handler {
            exec: Some(ExecAction {
                command: cmd.iter().map(|s| s.to_string()).collect(),
            }),
            http_get: None,
            sleep: None,
        }
    }

    fn sh(script: &str) -> f64 {
        leading_sleep(&exec(&["/bin/sh", "-c", script]))
    }

    #[test]
    fn native_sleep_and_sleep_binary() {
        let h = Handler {
            exec: None,
            http_get: None,
            sleep: Some(SleepAction { seconds: 7 }),
        };
        assert_eq!(leading_sleep(&h), 7.0);
        assert_eq!(leading_sleep(&exec(&["sleep", "3"])), 3.0);
        assert_eq!(leading_sleep(&exec(&["/bin/sleep", "2.5"])), 2.5);
        assert_eq!(leading_sleep(&exec(&["/usr/bin/sleep", "4s"])), 4.0);
        assert_eq!(leading_sleep(&exec(&["sleep", "inf"])), 0.0);
        assert_eq!(leading_sleep(&exec(&["sleep", "1", "2"])), 0.0);
        assert_eq!(leading_sleep(&exec(&["nginx", "-s", "quit"])), 0.0);
    }

    #[test]
    fn shell_scripts_that_sleep_first() {
        assert_eq!(sh("sleep 5"), 5.0);
        assert_eq!(sh("sleep 5; nginx -s quit"), 5.0);
        assert_eq!(sh("  sleep 5 && nginx -s quit"), 5.0);
        assert_eq!(sh("sleep 5\nnginx -s quit"), 5.0);
        assert_eq!(sh("sleep\t10;"), 10.0);
        assert_eq!(leading_sleep(&exec(&["bash", "-c", "sleep 2"])), 2.0);
        assert_eq!(leading_sleep(&exec(&["/bin/ash", "-c", "sleep 2"])), 2.0);
    }

    #[test]
    fn scripts_that_may_quit_at_once() {
        assert_eq!(
            sh("nginx -s quit; while killall -0 nginx; do sleep 1; done"),
            0.0
        );
        assert_eq!(sh("sleep 5 & nginx -s quit"), 0.0);
        assert_eq!(sh("sleep 5 || true"), 0.0);
        assert_eq!(sh("sleeper 5"), 0.0);
        assert_eq!(sh("sleep $N"), 0.0);
        assert_eq!(sh(""), 0.0);
        assert_eq!(leading_sleep(&exec(&["/bin/sh", "-x", "sleep 5"])), 0.0);
        assert_eq!(leading_sleep(&exec(&["python", "-c", "sleep 5"])), 0.0);
    }

    #[test]
    fn bounded_by_the_grace_period_cap() {
        assert_eq!(sh("sleep 99999999"), MAX_SECONDS);
        assert_eq!(sh("sleep 1e400"), 0.0);
        assert_eq!(sh("sleep 1.2.3"), 0.0);
    }

    proptest::proptest! {
        #[test]
        fn any_script_gives_a_bounded_sleep(script in ".{0,200}") {
            let s = sh(&script);
            proptest::prop_assert!((0.0..=MAX_SECONDS).contains(&s));
        }
    }
}
