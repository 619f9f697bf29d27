#!/usr/bin/env bash
# The chart tier, no cluster: helm lint and `helm template` of
# charts/lifecycle-operator with various values, asserting on the rendered
# YAML (HA, PDB, leader election, overrides, the values schema with `global`
# and as a subchart, opt-in monitoring, the uninstall Job, the CRD and its
# YAML 1.1 reading). `make chart-test`, run by `make lint`. Installs what it
# needs as lint.sh does: helm (hack/cluster/build.sh, cached) and jq and
# PyYAML (hack/tools/install-lint-tools.sh). Prints `chart: N passed, N
# failed` and fails on any failure.
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/../hack/lib.sh"
cd "$REPO_ROOT" || exit 1
bash hack/tools/install-lint-tools.sh
bash hack/cluster/build.sh
set +e # checks count failures; the script goes on

# The release and namespace the renderings name (tests/e2e.sh installs the
# same chart as the same release).
release=lco
ns=lco-system
chart=charts/lifecycle-operator
out=target/chart
mkdir -p "$out"
# Offline rendering with no --kube-version, as users run it: our helm (built
# like its release, hack/cluster/build.sh) assumes the Kubernetes of its
# client-go, above the chart's kubeVersion.
kube_version=()
# shellcheck disable=SC2034 # read by check (hack/lib.sh)
CHECK_LOG=$out/last.log

# render ARGS...: the chart rendered with ARGS, as a JSON array of objects.
render() {
  helm template "$release" "$chart" "${kube_version[@]}" -n "$ns" "$@" |
    /usr/bin/python3 -c 'import sys, yaml, json; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))'
}
# rendered_ok JQ ARGS...: the rendering with ARGS satisfies JQ.
rendered_ok() { local q=$1; shift; render "$@" >"$out/render.json" && jq -e "$q" "$out/render.json" >/dev/null; }
# render_fails PATTERN ARGS...: the rendering fails with a message matching PATTERN.
render_fails() {
  local pat=$1
  shift
  ! helm template "$release" "$chart" "${kube_version[@]}" "$@" >"$out/render.err" 2>&1 && grep -Eq "$pat" "$out/render.err"
}

check "helm lint --strict" helm lint --strict "$chart" "${kube_version[@]}"
check "helm template renders" helm template "$release" "$chart" "${kube_version[@]}" -n "$ns"
check "helm template renders with no flags at all" helm template "$chart"
# kubeVersion is the operator's own floor (src/runtime/server_version.rs).
check "the chart accepts the oldest supported Kubernetes ($K8S_OLDEST)" \
  helm template "$release" "$chart" --kube-version "v$K8S_OLDEST.0"
check "the chart refuses a Kubernetes older than $K8S_OLDEST" \
  render_fails 'kubeVersion' --kube-version "v1.$(( ${K8S_OLDEST#1.} - 1 )).9"
for f in lifecyclepolicies.yaml clusterlifecyclepolicies.yaml; do
  check "the chart's $f is identical to crds/" diff -u "crds/$f" "$chart/files/$f"
done
check "both CRDs render from templates, kept on uninstall" rendered_ok \
  '[.[] | select(.kind == "CustomResourceDefinition")] | length == 2 and all(.metadata.annotations["helm.sh/resource-policy"] == "keep" and .spec.names.categories == ["lifecycle-operator"]) and (map(.spec.scope) | sort == ["Cluster", "Namespaced"])'
check "the operator may list and watch namespaces, and nothing more of them" rendered_ok \
  '[.[] | select(.kind == "ClusterRole" and .metadata.name == "lco-lifecycle-operator") | .rules[] | select(.resources | index("namespaces"))] | length == 1 and .[0].verbs == ["list", "watch"] and .[0].apiGroups == [""]'
check "cluster policies are aggregated into no namespace role (edit, admin, view)" rendered_ok \
  '[.[] | select(.kind == "ClusterRole" and ((.metadata.labels // {}) | keys | any(startswith("rbac.authorization.k8s.io/aggregate-to-")))) | .rules[].resources[] | select(startswith("clusterlifecyclepolicies"))] | length == 0'
check "the platform ClusterRole aggregates the cluster-policy rules" rendered_ok \
  '([.[] | select(.kind == "ClusterRole" and .metadata.name == "lco-lifecycle-operator-platform")][0].aggregationRule.clusterRoleSelectors[0].matchLabels["lifecycle-operator.io/aggregate-to-platform"] == "true") and ([.[] | select(.kind == "ClusterRole" and (.metadata.labels["lifecycle-operator.io/aggregate-to-platform"] == "true")) | .rules[] | select(.resources | index("clusterlifecyclepolicies")) | .verbs | index("create")] | length == 1)'
check "crds.enabled=false renders no CRD" rendered_ok '[.[] | select(.kind == "CustomResourceDefinition")] | length == 0' --set crds.enabled=false
check "crds.keep=false drops the keep annotation" rendered_ok \
  '.[] | select(.kind == "CustomResourceDefinition") | .metadata.annotations == null' --set crds.keep=false
bad_values() { ! helm template "$release" "$chart" "${kube_version[@]}" "$@" >/dev/null 2>&1; }
check "values.schema.json rejects replicaCount=0" bad_values --set replicaCount=0
check "values.schema.json rejects an unknown log format" bad_values --set logFormat=xml
check "values.schema.json rejects an unknown value" bad_values --set replicas=2
check "values.schema.json rejects a malformed image.digest" bad_values --set image.digest=latest
check "values.schema.json allows global (a parent chart's values)" helm template "$release" "$chart" "${kube_version[@]}" --set global.imageRegistry=example.org
subchart_renders() {
  rm -rf "$out/parent" && mkdir -p "$out/parent/charts" && cp -r "$chart" "$out/parent/charts/" &&
    printf 'apiVersion: v2\nname: parent\nversion: 0.0.1\n' >"$out/parent/Chart.yaml" &&
    printf 'global: {env: test}\nlifecycle-operator: {replicaCount: 2}\n' >"$out/parent/values.yaml" &&
    helm template p "$out/parent" "${kube_version[@]}" | grep -- '--leader-election' >/dev/null
}
check "renders as a subchart of a parent with global values" subchart_renders
check "one replica: no leader election, no PDB, no spreading" rendered_ok \
  '(.[] | select(.kind == "Deployment") | .spec.template.spec | (.containers[0].args | index("--leader-election") == null) and .affinity == null and .topologySpreadConstraints == null)
   and ([.[] | select(.kind == "PodDisruptionBudget")] | length == 0)' --set replicaCount=1
check "replicaCount=2: leader election, PDB, soft anti-affinity and topology spread" rendered_ok \
  '(.[] | select(.kind == "Deployment") | .spec.template.spec | (.containers[0].args | index("--leader-election") != null)
     and (.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution | length == 1)
     and .topologySpreadConstraints[0].whenUnsatisfiable == "ScheduleAnyway")
   and ([.[] | select(.kind == "PodDisruptionBudget") | .spec.maxUnavailable] == [1])
   and ([.[] | select(.kind == "Role" and (.metadata.name | endswith("-leader"))) | .rules[0].resources] == [["leases"]])'
check "two replicas by default (both serve admission, one leads)" rendered_ok '.[] | select(.kind == "Deployment") | .spec.replicas == 2'
mwc='.[] | select(.kind == "MutatingWebhookConfiguration")'
check "the webhook: Ignore on failure, no side effects, reinvoked, a short timeout, the Service's /mutate" rendered_ok \
  "$mwc"' | .metadata.name == "lco-lifecycle-operator" and (.webhooks | length == 1) and (.webhooks[0] | .failurePolicy == "Ignore" and .sideEffects == "None"
     and .reinvocationPolicy == "IfNeeded" and .timeoutSeconds <= 10 and .admissionReviewVersions == ["v1"] and .clientConfig.caBundle == null
     and .clientConfig.service == {"name": "lco-lifecycle-operator-webhook", "namespace": "lco-system", "path": "/mutate", "port": 443}
     and (.rules == [{"apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments", "statefulsets", "daemonsets"], "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}]))'
check "the webhook never sees kube-system or the release namespace; excludeNamespaces adds to them" rendered_ok \
  "$mwc"' | .webhooks[0].namespaceSelector.matchExpressions == [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "kube-public", "kube-node-lease", "lco-system", "ci"]}]' \
  --set 'webhook.excludeNamespaces[0]=ci' --set 'webhook.excludeNamespaces[1]=kube-system'
check "the webhook's Service, port and flags" rendered_ok \
  '(.[] | select(.kind == "Service" and .metadata.name == "lco-lifecycle-operator-webhook") | .spec.ports == [{"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}])
   and (.[] | select(.kind == "Deployment") | .spec.template.spec.containers[0] | (.ports | map(.name) | index("webhook") != null)
     and (.args | index("--webhook-addr=[::]:9443") != null and index("--webhook-secret=lco-lifecycle-operator-webhook-tls") != null
       and index("--webhook-service=lco-lifecycle-operator-webhook") != null and index("--webhook-configuration=lco-lifecycle-operator") != null))'
check "least privilege: the webhook's Secret (get, update) and configuration (get, patch) by name only, no create" rendered_ok \
  '(([.[] | select(.kind == "Role" or .kind == "ClusterRole") | .rules[] | select(.resources | index("secrets") or index("mutatingwebhookconfigurations"))] | sort_by(.resources[0]))
     == [{"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"], "resourceNames": ["lco-lifecycle-operator"], "verbs": ["get", "patch"]},
         {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["lco-lifecycle-operator-webhook-tls"], "verbs": ["get", "update"]}])
   and (.[] | select(.kind == "Secret" and .metadata.name == "lco-lifecycle-operator-webhook-tls") | .type == "Opaque" and .data == null)'
check "webhook.enabled=false: no webhook, nothing of it" rendered_ok \
  '([.[] | select(.kind == "MutatingWebhookConfiguration" or .kind == "Secret" or .kind == "Certificate" or (.metadata.name | test("webhook")))] | length == 0)
   and (.[] | select(.kind == "Deployment") | .spec.template.spec.containers[0].args | map(select(startswith("--webhook"))) | length == 0)' --set webhook.enabled=false
check "webhook.certManager.enabled: a Certificate for the Service, its CA injected, its Secret mounted, no Secret RBAC" rendered_ok \
  '(.[] | select(.kind == "Certificate") | .spec.secretName == "lco-lifecycle-operator-webhook-tls" and (.spec.dnsNames | index("lco-lifecycle-operator-webhook.lco-system.svc") != null) and .spec.issuerRef.kind == "Issuer")
   and ([.[] | select(.kind == "Issuer") | .spec.selfSigned] == [{}])
   and ('"$mwc"' | .metadata.annotations["cert-manager.io/inject-ca-from"] == "lco-system/lco-lifecycle-operator-webhook")
   and (.[] | select(.kind == "Deployment") | .spec.template.spec | (.containers[0].args | index("--webhook-cert-dir=/etc/lifecycle-operator/webhook") != null and index("--webhook-secret=lco-lifecycle-operator-webhook-tls") == null)
     and .volumes[0].secret.secretName == "lco-lifecycle-operator-webhook-tls")
   and ([.[] | select(.kind == "Secret")] | length == 0)
   and ([.[] | select(.kind == "Role" or .kind == "ClusterRole") | .rules[] | select(.resources | index("secrets"))] | length == 0)' --set webhook.certManager.enabled=true
check "webhook.certManager.issuerRef: that issuer, none of the chart's own" rendered_ok \
  '(.[] | select(.kind == "Certificate") | .spec.issuerRef == {"name": "ca", "kind": "ClusterIssuer"}) and ([.[] | select(.kind == "Issuer")] | length == 0)' \
  --set webhook.certManager.enabled=true --set webhook.certManager.issuerRef.name=ca --set webhook.certManager.issuerRef.kind=ClusterIssuer
check "replicaCount=2 with leaderElection=false fails the render" render_fails "needs leader election" --set replicaCount=2 --set leaderElection=false
check "a ServiceMonitor without the metrics Service fails the render" render_fails "needs metrics.service.enabled" \
  --set metrics.serviceMonitor.enabled=true --set metrics.service.enabled=false
check "podLabels and commonLabels cannot override the selector labels" rendered_ok \
  '.[] | select(.kind == "Deployment") | (.spec.template.metadata.labels | .["app.kubernetes.io/name"] == "lifecycle-operator" and .["app.kubernetes.io/instance"] == "lco" and .team == "web")
     and (.spec.selector.matchLabels | .["app.kubernetes.io/instance"] == "lco")' \
  --set-string 'podLabels.app\.kubernetes\.io/name=evil,podLabels.team=web,commonLabels.app\.kubernetes\.io/instance=evil'
check "nameOverride, fullnameOverride, commonLabels" rendered_ok \
  '(.[] | select(.kind == "Deployment") | .metadata.name == "lco-custom" and .metadata.labels.owner == "platform" and .spec.selector.matchLabels["app.kubernetes.io/name"] == "hooks")
   and ([.[] | .metadata.labels.owner] | all(. == "platform"))' \
  --set nameOverride=hooks --set fullnameOverride=lco-custom --set commonLabels.owner=platform
check "image.digest, extraArgs, extraEnv, revisionHistoryLimit" rendered_ok \
  '.[] | select(.kind == "Deployment") | .spec.revisionHistoryLimit == 7 and (.spec.template.spec.containers[0] |
     (.image | endswith("@sha256:'"$(printf 'a%.0s' {1..64})"'")) and (.args | index("--log=debug") != null) and (.env | map(.name) | index("EXTRA") != null))' \
  --set image.digest=sha256:"$(printf 'a%.0s' {1..64})" --set 'extraArgs[0]=--log=debug' --set 'extraEnv[0].name=EXTRA' --set 'extraEnv[0].value=1' --set revisionHistoryLimit=7
check "the operator listens on [::] (IPv6 and IPv4)" rendered_ok '.[] | select(.kind == "Deployment") | .spec.template.spec.containers[0].args | index("--http-addr=[::]:8080") != null'
# streams_args TOTAL SHARE TOTAL SHARE: a jq test of the Deployment's log stream flags (preStop, postStart).
streams_args() {
  printf '.[] | select(.kind == "Deployment") | .spec.template.spec.containers[0].args | (index("--prestop-log-streams=%s") != null and index("--prestop-log-streams-per-namespace=%s") != null and index("--poststart-log-streams=%s") != null and index("--poststart-log-streams-per-namespace=%s") != null)' "$@"
}
check "the observer's log stream pools: the binary's defaults as flags" rendered_ok "$(streams_args 256 192 64 48)"
check "observer.logStreams.* become the operator's flags" rendered_ok "$(streams_args 4 3 2 2)" \
  --set observer.logStreams.preStop.total=4 --set observer.logStreams.preStop.perNamespace=3 \
  --set observer.logStreams.postStart.total=2 --set observer.logStreams.postStart.perNamespace=2
check "a log stream share above its pool fails the render" render_fails "postStart.perNamespace=5 is above its total=4" \
  --set observer.logStreams.postStart.total=4 --set observer.logStreams.postStart.perNamespace=5
check "values.schema.json rejects a log stream share of 0" render_fails "preStop.perNamespace.*(greater than or equal to 1|minimum: got 0, want 1)" \
  --set observer.logStreams.preStop.perNamespace=0
check "opt-in NetworkPolicy, PrometheusRule, Grafana dashboard" rendered_ok \
  '([.[] | .kind] | index("NetworkPolicy") != null and index("PrometheusRule") != null and index("ServiceMonitor") != null)
   and (.[] | select(.kind == "NetworkPolicy") | [.spec.ingress[].ports[].port] == [8080, 9443])
   and (.[] | select(.kind == "PrometheusRule") | [.spec.groups[0].rules[].expr] | any(test("lifecycle_operator_hook_outcomes_total")) and any(test("lifecycle_operator_reconciles_total")))
   and (.[] | select(.kind == "ConfigMap") | .metadata.labels.grafana_dashboard == "1" and (.data["lifecycle-operator.json"] | fromjson | [.panels[].targets[].expr] | any(test("lifecycle_operator_hook_duration_seconds_bucket")) and any(test("lifecycle_operator_hook_outcomes_total"))))' \
  --set networkPolicy.enabled=true --set metrics.prometheusRule.enabled=true --set metrics.grafanaDashboard.enabled=true --set metrics.serviceMonitor.enabled=true
check "none of them by default" rendered_ok '[.[] | .kind] | (index("NetworkPolicy") == null and index("PrometheusRule") == null and index("ConfigMap") == null and index("ServiceMonitor") == null)'
check "aggregated view/edit ClusterRoles for namespace users" rendered_ok \
  '[.[] | select(.kind == "ClusterRole") | .metadata.labels | keys[] | select(startswith("rbac.authorization.k8s.io/aggregate-to"))] | sort == ["rbac.authorization.k8s.io/aggregate-to-admin", "rbac.authorization.k8s.io/aggregate-to-edit", "rbac.authorization.k8s.io/aggregate-to-view"]'
has_release_job() { helm template "$release" "$chart" "${kube_version[@]}" --show-only templates/uninstall.yaml | grep 'helm.sh/hook: pre-delete' >/dev/null; }
no_release_job() { ! helm template "$release" "$chart" "${kube_version[@]}" --set uninstall.keepPolicies=true --show-only templates/uninstall.yaml >/dev/null 2>&1; }
check "a pre-delete Job releases every policy on uninstall" has_release_job
check "uninstall.keepPolicies=true drops it" no_release_job
has_test_pod() { helm template "$release" "$chart" "${kube_version[@]}" --show-only templates/tests/test-connection.yaml | grep 'helm.sh/hook: test' >/dev/null; }
check "a helm test pod" has_test_pod
for f in lifecyclepolicies.yaml clusterlifecyclepolicies.yaml; do
  check "YAML 1.1 (PyYAML) reads every enum value of crds/$f as a string" /usr/bin/python3 tests/crd_yaml11.py "crds/$f"
done
git show "$PREV_CRD_COMMIT:crds/lifecyclepolicies.yaml" >"$out/prev-crd.yaml"
check "... and catches the previous CRD's \`Off\` (a boolean in YAML 1.1)" bash -c "! /usr/bin/python3 tests/crd_yaml11.py $out/prev-crd.yaml"

report chart
