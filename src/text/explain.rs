//! Messages a person can read, pure: the kubelet's hook errors with the
//! policy's own script instead of the marker wrapper, cut to their cause,
//! with a hint for the causes we know; API errors as one line.
//!
//! The kubelet's text is not an API: everything here is best effort, and a
//! message we do not recognise is passed through, bounded.

use crate::text;

/// The kubelet's hook failure message made readable. `scripts` maps each
/// rendered (marker-wrapped) script to the policy's own, so the message
/// shows what the user wrote. The result is at most [`text::FAILURE_MESSAGE`]
/// bytes.
pub fn hook_failure(message: &str, scripts: &[(String, String)]) -> String {
    let mut m = message.to_string();
    for (wrapped, original) in scripts {
        if !wrapped.is_empty() && wrapped != original {
            m = m.replace(wrapped.as_str(), original);
        }
    }
    // `Exec lifecycle hook ([CMD]) for Container "c" in Pod "p" failed - error: CAUSE, message: "OUT"`
    let Some((head, rest)) = m.split_once(" failed - error: ") else {
        return text::bounded(&m, text::FAILURE_MESSAGE);
    };
    let command = head
        .split_once("lifecycle hook (")
        .and_then(|(_, c)| c.rsplit_once(") for Container"))
        .map(|(c, _)| c.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or_default();
    let (error, output) = match rest.rsplit_once(", message: ") {
        Some((e, o)) => (e, unquote(o)),
        None => (rest, ""),
    };
    let (cause, hint) = cause(error);
    let mut out = cause;
    if !output.trim().is_empty() {
        out.push_str(&format!("; output: {}", text::bounded(output.trim(), 300)));
    }
    if let Some(h) = hint {
        out.push_str(&format!(" ({h})"));
    }
    if !command.is_empty() {
        out.push_str(&format!("; hook: {}", text::bounded(command, 300)));
    }
    text::bounded(&out, text::FAILURE_MESSAGE)
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// The cause in an exec error, and a hint when we know what to do about it.
fn cause(error: &str) -> (String, Option<&'static str>) {
    let missing =
        error.contains("no such file or directory") || error.contains("executable file not found");
    if missing && let Some(path) = exec_path(error) {
        let shell = path
            .rsplit('/')
            .next()
            .is_some_and(|b| matches!(b, "sh" | "bash" | "ash" | "dash" | "ksh" | "zsh"));
        let hint = if shell {
            "this image has no shell: use a `sleep:` hook or a binary the image has"
        } else {
            "the command is not in the image: use a binary the image has"
        };
        return (format!("{path}: not found in the container"), Some(hint));
    }
    if let Some(code) = exit_code(error) {
        let hint = match code {
            126 => Some("the command is not executable"),
            127 => Some("command not found in the container's shell"),
            137 => Some(
                "killed by SIGKILL: the grace period ran out, or the container's main process exited under the hook",
            ),
            143 => Some("killed by SIGTERM"),
            _ => None,
        };
        return (format!("exited with code {code}"), hint);
    }
    // Drop the runtime's wrapping (`rpc error: code = Unknown desc = ...: unknown`).
    let inner = error
        .rsplit_once("desc = ")
        .map_or(error, |(_, d)| d)
        .trim_end_matches(": unknown");
    (text::bounded(inner.trim(), 400), None)
}

/// `exec: "/bin/sh": stat /bin/sh: ...` → `/bin/sh`.
fn exec_path(error: &str) -> Option<&str> {
    let (_, rest) = error.split_once("exec: \"")?;
    rest.split_once('"').map(|(p, _)| p)
}

/// `command '...' exited with 3: ...` → 3.
fn exit_code(error: &str) -> Option<i64> {
    let (_, rest) = error.rsplit_once("exited with ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// An API error as one readable line: `422 Invalid: <the API server's message>`.
pub fn api_error(e: &kube::Error) -> String {
    let line = match e {
        kube::Error::Api(s) => {
            let reason = if s.reason.is_empty() {
                "Error"
            } else {
                s.reason.as_str()
            };
            format!("{} {reason}: {}", s.code, s.message)
        }
        other => other.to_string(),
    };
    let line = line.replace(['\n', '\r'], " ");
    text::bounded(&line, text::WORKLOAD_MESSAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRAPPED: &str = "printf 'start'; ( exit 3 ); rc=$?; printf 'rc=%s' $rc; exit $rc";

    fn scripts() -> Vec<(String, String)> {
        vec![(WRAPPED.to_string(), "exit 3 # 中文注释".to_string())]
    }

    #[test]
    fn an_exit_code_shows_the_policys_script_not_the_wrapper() {
        let msg = format!(
            "Exec lifecycle hook ([/bin/sh -c {WRAPPED}]) for Container \"app\" in Pod \"web-1_ns(uid)\" failed - error: command '/bin/sh -c {WRAPPED}' exited with 3: , message: \"\""
        );
        let got = hook_failure(&msg, &scripts());
        assert_eq!(
            got,
            "exited with code 3; hook: /bin/sh -c exit 3 # 中文注释"
        );
        assert!(!got.contains("printf"));
    }

    #[test]
    fn no_shell_in_the_image_gets_a_hint() {
        let msg = format!(
            "Exec lifecycle hook ([/bin/sh -c {WRAPPED}]) for Container \"app\" in Pod \"p_ns(u)\" failed - error: rpc error: code = Unknown desc = failed to exec in container: failed to start exec \"abc\": OCI runtime exec failed: exec failed: unable to start container process: exec: \"/bin/sh\": stat /bin/sh: no such file or directory: unknown, message: \"\""
        );
        let got = hook_failure(&msg, &scripts());
        assert!(
            got.starts_with(
                "/bin/sh: not found in the container (this image has no shell: use a `sleep:` hook"
            ),
            "{got}"
        );
        assert!(got.len() < 200, "{got}");
    }

    #[test]
    fn output_is_kept_bounded_and_known_codes_are_explained() {
        let out = "x".repeat(40 * 1024);
        let msg = format!(
            "Exec lifecycle hook ([/bin/sh -c {WRAPPED}]) for Container \"c\" in Pod \"p\" failed - error: command '/bin/sh -c {WRAPPED}' exited with 137: {out}, message: \"{out}\""
        );
        let got = hook_failure(&msg, &scripts());
        assert!(got.len() <= text::FAILURE_MESSAGE, "{}", got.len());
        assert!(
            got.starts_with("exited with code 137; output: xxx"),
            "{got}"
        );
        assert!(got.contains("SIGKILL"), "{got}");
    }

    #[test]
    fn unknown_text_passes_through_bounded() {
        assert_eq!(
            hook_failure("PreStopHook failed", &[]),
            "PreStopHook failed"
        );
        let long = "失".repeat(2000);
        let got = hook_failure(&long, &[]);
        assert!(got.len() <= text::FAILURE_MESSAGE);
        let http = "HTTP lifecycle hook (/ready) for Container \"c\" in Pod \"p\" failed - error: Get \"http://10.0.0.1:80/ready\": dial tcp 10.0.0.1:80: connect: connection refused, message: \"\"";
        assert_eq!(
            hook_failure(http, &[]),
            "Get \"http://10.0.0.1:80/ready\": dial tcp 10.0.0.1:80: connect: connection refused; hook: /ready"
        );
    }

    #[test]
    fn api_errors_are_one_line() {
        let status = kube::core::Status::failure(
            "Deployment.apps \"web\" is invalid: spec.template.spec.containers[0].lifecycle.preStop: Forbidden: may not specify more than 1 handler type",
            "Invalid",
        )
        .with_code(422);
        let got = api_error(&kube::Error::Api(status.boxed()));
        assert_eq!(
            got,
            "422 Invalid: Deployment.apps \"web\" is invalid: spec.template.spec.containers[0].lifecycle.preStop: Forbidden: may not specify more than 1 handler type"
        );
    }
}
