//! Errors a person understands, pure: what was asked (a verb on a resource)
//! and how the API server or the connection answered, to one sentence that
//! says what to do.

use crate::text;

/// What the plugin asked the API server for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub verb: &'static str,
    /// As RBAC names it: `pods/log`, `lifecyclepolicies.lifecycle-operator.io`.
    pub resource: String,
    /// What a person calls it: `LifecyclePolicy "web"`, `the logs of pod "x"`.
    pub what: String,
    pub namespace: Option<String>,
}

impl Ask {
    pub fn new(verb: &'static str, resource: &str, what: String, namespace: Option<&str>) -> Self {
        Ask {
            verb,
            resource: resource.to_string(),
            what,
            namespace: namespace.map(str::to_string),
        }
    }

    fn place(&self) -> String {
        match &self.namespace {
            Some(ns) => format!(" in namespace \"{ns}\""),
            None => String::new(),
        }
    }
}

/// The CRDs' group: a 404 for the whole resource means they are not installed.
const GROUP: &str = "lifecycle-operator.io";

/// One line for `e`, the answer to `ask`.
pub fn explain(ask: &Ask, e: &kube::Error) -> String {
    let line = match e {
        kube::Error::Api(s) => match s.code {
            404 if ask.resource.ends_with(GROUP) && s.details.is_none() => format!(
                "the lifecycle-operator CRDs are not installed in this cluster (the server has no {}); install the operator: helm install lifecycle-operator charts/lifecycle-operator",
                ask.resource
            ),
            404 => format!("{} not found{}", ask.what, ask.place()),
            403 => format!(
                "no permission to {} {}{}: {} (ask for RBAC `{}` on `{}`)",
                ask.verb,
                ask.resource,
                ask.place(),
                s.message,
                ask.verb,
                ask.resource
            ),
            401 => format!(
                "the API server did not accept your credentials ({}); check the kubeconfig's user",
                s.message
            ),
            _ => format!(
                "reading {}{} failed: {}",
                ask.what,
                ask.place(),
                text::explain::api_error(e)
            ),
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => format!(
            "cannot reach the API server while reading {}: {e} (is the kubeconfig's cluster up and reachable?)",
            ask.what
        ),
        other => format!("reading {}{} failed: {other}", ask.what, ask.place()),
    };
    text::bounded(&line.replace(['\n', '\r'], " "), 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str, message: &str, details: bool) -> kube::Error {
        let mut v = serde_json::json!({"code": code, "reason": reason, "message": message, "status": "Failure"});
        if details {
            v["details"] = serde_json::json!({"name": "web", "kind": "lifecyclepolicies"});
        }
        kube::Error::Api(Box::new(serde_json::from_value(v).unwrap()))
    }

    fn policy() -> Ask {
        Ask::new(
            "get",
            "lifecyclepolicies.lifecycle-operator.io",
            "LifecyclePolicy \"web\"".into(),
            Some("shop"),
        )
    }

    #[test]
    fn a_missing_crd_says_the_operator_is_not_installed() {
        let e = api(
            404,
            "NotFound",
            "the server could not find the requested resource",
            false,
        );
        let got = explain(&policy(), &e);
        assert!(
            got.starts_with("the lifecycle-operator CRDs are not installed"),
            "{got}"
        );
        assert!(got.contains("helm install"), "{got}");
    }

    #[test]
    fn a_missing_policy_is_named_with_its_namespace() {
        let e = api(
            404,
            "NotFound",
            "lifecyclepolicies.lifecycle-operator.io \"web\" not found",
            true,
        );
        assert_eq!(
            explain(&policy(), &e),
            "LifecyclePolicy \"web\" not found in namespace \"shop\""
        );
    }

    #[test]
    fn a_forbidden_read_names_the_rbac_to_ask_for() {
        let ask = Ask::new(
            "get",
            "pods/log",
            "the logs of pod \"x\"".into(),
            Some("shop"),
        );
        let e = api(
            403,
            "Forbidden",
            "pods \"x\" is forbidden: User \"dev\" cannot get resource \"pods/log\"",
            false,
        );
        let got = explain(&ask, &e);
        assert!(
            got.starts_with("no permission to get pods/log in namespace \"shop\""),
            "{got}"
        );
        assert!(got.ends_with("(ask for RBAC `get` on `pods/log`)"), "{got}");
    }

    #[test]
    fn messages_are_one_bounded_line() {
        let e = api(
            500,
            "InternalError",
            &format!("a\nb{}", "é".repeat(5000)),
            false,
        );
        let got = explain(&policy(), &e);
        assert!(!got.contains('\n'));
        assert!(got.len() <= 1000);
    }
}
