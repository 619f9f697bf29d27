//! The API server's Kubernetes version: read once at start-up (`GET
//! /version`), logged, and checked against the oldest release the operator
//! supports and is tested on (`make test-compat`; the chart's `kubeVersion`
//! says the same). Features that need a newer server than the floor ask
//! here ([`zero_sleep_allowed`]).

use std::fmt;
use std::sync::OnceLock;

use k8s_openapi::apimachinery::pkg::version::Info;

/// The oldest Kubernetes minor (1.x) the operator runs against.
pub const OLDEST_MINOR: u32 = 32;

/// `sleep: {seconds: 0}` in a hook: accepted by the API server from 1.34
/// (PodLifecycleSleepActionAllowZero GA; beta, on by default, in 1.33).
pub const ZERO_SLEEP_MINOR: u32 = 34;

/// A Kubernetes release, major and minor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The release the server's API behaves as: its emulated version when it
/// runs with `--emulated-version`, else its own. From the `major`/`minor`
/// fields (some distributions suffix them: `"32+"`), else, when a build
/// leaves them empty, from `gitVersion` (`v1.37.2`, `v1.33.0+k3s1`).
pub fn parse(info: &Info) -> Option<Version> {
    let numeric = |s: &str| {
        s.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse::<u32>()
            .ok()
    };
    if let (Some(major), Some(minor)) = (&info.emulation_major, &info.emulation_minor)
        && let (Some(major), Some(minor)) = (numeric(major), numeric(minor))
    {
        return Some(Version { major, minor });
    }
    let from_fields = numeric(&info.major).zip(numeric(&info.minor));
    let from_git = || {
        let v = info.git_version.strip_prefix('v')?;
        let mut parts = v.split(['.', '-', '+']);
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    let (major, minor) = from_fields.or_else(from_git)?;
    Some(Version { major, minor })
}

/// Why the operator refuses to run against `server`, if it does.
pub fn refusal(server: Option<Version>, git_version: &str) -> Option<String> {
    let floor = Version {
        major: 1,
        minor: OLDEST_MINOR,
    };
    match server {
        Some(v) if v >= floor => None,
        Some(v) => Some(format!(
            "the API server is Kubernetes {v} ({git_version}); lifecycle-operator needs {floor} or newer \
             (the oldest release it supports and is tested on): upgrade the cluster, or run an older \
             lifecycle-operator"
        )),
        None => Some(format!(
            "the API server's version {git_version:?} cannot be read as a Kubernetes release; \
             lifecycle-operator needs {floor} or newer"
        )),
    }
}

static SERVER: OnceLock<Version> = OnceLock::new();

/// Records the server's version for the feature checks below (once).
pub fn set(v: Version) {
    let _ = SERVER.set(v);
}

/// The server's version, when start-up has read it.
pub fn get() -> Option<Version> {
    SERVER.get().copied()
}

/// Whether the server accepts `sleep: {seconds: 0}` in a pod template.
/// True before the version is known (tests, tools): the server has the last
/// word anyway.
pub fn zero_sleep_allowed() -> bool {
    allows_zero_sleep(get())
}

fn allows_zero_sleep(v: Option<Version>) -> bool {
    v.is_none_or(|v| {
        v >= Version {
            major: 1,
            minor: ZERO_SLEEP_MINOR,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(git: &str, major: &str, minor: &str) -> Info {
        Info {
            git_version: git.into(),
            major: major.into(),
            minor: minor.into(),
            ..Info::default()
        }
    }

    fn v(minor: u32) -> Option<Version> {
        Some(Version { major: 1, minor })
    }

    #[test]
    fn reads_git_version_and_suffixed_minors() {
        assert_eq!(parse(&info("v1.37.2", "1", "37")), v(37));
        assert_eq!(parse(&info("v1.32.13-eks-1a2b3c", "1", "32+")), v(32));
        assert_eq!(parse(&info("v1.33.0+k3s1", "", "")), v(33));
        // A dev build's gitVersion: the major/minor fields count, "+" and all.
        assert_eq!(parse(&info("v0.0.0-master+$Format:%H$", "1", "32+")), v(32));
        assert_eq!(parse(&info("", "1", "31+")), v(31));
        assert_eq!(parse(&info("", "", "")), None);
    }

    #[test]
    fn an_emulated_version_is_what_the_api_behaves_as() {
        let mut i = info("v1.37.2", "1", "37");
        i.emulation_major = Some("1".into());
        i.emulation_minor = Some("35".into());
        assert_eq!(parse(&i), v(35));
    }

    #[test]
    fn refuses_only_servers_older_than_the_floor() {
        assert_eq!(refusal(v(OLDEST_MINOR), "v1.32.0"), None);
        assert_eq!(refusal(v(37), "v1.37.2"), None);
        assert_eq!(
            refusal(Some(Version { major: 2, minor: 0 }), "v2.0.0"),
            None
        );
        let old = refusal(v(31), "v1.31.9").unwrap();
        assert!(old.contains("Kubernetes 1.31 (v1.31.9)") && old.contains("needs 1.32 or newer"));
        assert!(refusal(None, "weird").unwrap().contains("cannot be read"));
    }

    #[test]
    fn zero_second_sleeps_need_1_34() {
        assert!(!allows_zero_sleep(v(32)));
        assert!(!allows_zero_sleep(v(33)));
        assert!(allows_zero_sleep(v(34)));
        assert!(allows_zero_sleep(v(37)));
        assert!(allows_zero_sleep(None));
    }
}
