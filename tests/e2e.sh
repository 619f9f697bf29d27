#!/usr/bin/env bash
# End-to-end: the Helm chart installed in the local cluster, the operator
# running as a pod under its own ServiceAccount, real hooks in real containers.
# Prints `e2e: N passed, N failed` and fails on any failure.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

release=lco
ns=lco-system
app_ns=e2e-web
chart=charts/lifecycle-operator
fullname=$release-lifecycle-operator
sa=system:serviceaccount:$ns:$fullname
passed=0 failed=0
out=target/e2e
mkdir -p "$out"

ok() { echo "ok - $1"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $1${2:+: $2}"; failed=$((failed + 1)); }
check() { local name=$1; shift; if "$@" >"$out/last.log" 2>&1; then ok "$name"; else not_ok "$name" "$(tail -3 "$out/last.log" | tr '\n' ' ')"; fi; }
# Polls a command until it succeeds or the timeout (seconds) passes.
until_ok() { local t=$1; shift; local end=$((SECONDS + t)); until "$@"; do ((SECONDS < end)) || return 1; sleep 1; done; }

operator_logs() { kubectl -n "$ns" logs -l app.kubernetes.io/name=lifecycle-operator --tail=-1 --prefix 2>/dev/null; }
cleanup() {
  kubectl delete ns "$app_ns" --ignore-not-found --timeout=120s >/dev/null 2>&1
  helm uninstall "$release" -n "$ns" --wait >/dev/null 2>&1
  kubectl delete ns "$ns" --ignore-not-found --timeout=120s >/dev/null 2>&1
}

# Start from nothing: an earlier interrupted run may have left a release.
cleanup
# The local process from run-cluster-tests.sh is gone by now; this run's
# operator is the chart's pod alone.

# --- chart ----------------------------------------------------------------
check "helm lint" helm lint --strict "$chart"
check "helm template renders" helm template "$release" "$chart" -n "$ns"
check "chart CRD is identical to crds/" diff -u crds/lifecyclepolicies.yaml "$chart/crds/lifecyclepolicies.yaml"
bad_values() { ! helm template "$release" "$chart" "$@" >/dev/null 2>&1; }
check "values.schema.json rejects replicaCount=0" bad_values --set replicaCount=0
check "values.schema.json rejects an unknown log format" bad_values --set logFormat=xml
check "values.schema.json rejects an unknown value" bad_values --set replicas=2

# --- image ----------------------------------------------------------------
tag=e2e-$(date +%s)
if ref=$(bash tests/image.sh "$tag" 2>"$out/image.log"); then
  ok "operator image built and pushed ($ref)"
else
  not_ok "operator image built and pushed" "$(tail -3 "$out/image.log")"
fi
size=$(stat -c %s target/image/rootfs/lifecycle-operator 2>/dev/null || echo 0)
echo "# image: one layer holding a static, stripped binary of $((size / 1024)) KiB"

# --- install --------------------------------------------------------------
t0=$SECONDS
check "helm install" helm install "$release" "$chart" -n "$ns" --create-namespace --wait --timeout 180s --set image.tag="$tag"
echo "# helm install --wait took $((SECONDS - t0)) s"
pod_sa=$(kubectl -n "$ns" get pods -l app.kubernetes.io/name=lifecycle-operator -o jsonpath='{.items[0].spec.serviceAccountName}')
check "operator pod runs under its ServiceAccount" test "$pod_sa" = "$fullname"
hardened() {
  kubectl -n "$ns" get deploy "$fullname" -o json | jq -e '.spec.template.spec as $p | $p.securityContext.runAsNonRoot == true
    and $p.securityContext.seccompProfile.type == "RuntimeDefault"
    and ($p.containers[0].securityContext | .readOnlyRootFilesystem == true and .allowPrivilegeEscalation == false and .capabilities.drop == ["ALL"])'
}
check "pod is hardened (non-root, read-only root fs, no escalation, drop ALL, seccomp)" hardened

# --- RBAC -----------------------------------------------------------------
echo "# RBAC of $sa:"
can() { kubectl auth can-i "$@" --as="$sa" 2>/dev/null; }
for want in "list deployments.apps" "watch deployments.apps" "patch deployments.apps" \
  "list lifecyclepolicies.lifecycle-operator.io" "watch lifecyclepolicies.lifecycle-operator.io" \
  "patch lifecyclepolicies.lifecycle-operator.io" "patch lifecyclepolicies.lifecycle-operator.io --subresource=status" \
  "create events.events.k8s.io" "patch events.events.k8s.io" "list pods" "watch pods" "get pods --subresource=log" \
  "list events" "watch events"; do
  # shellcheck disable=SC2086
  check "allowed: $want" can $want -A
done
for deny in "get secrets" "list secrets" "create pods" "patch pods" "delete pods" "update deployments.apps" \
  "delete deployments.apps" "create deployments.apps" "delete lifecyclepolicies.lifecycle-operator.io" \
  "create leases.coordination.k8s.io"; do
  # shellcheck disable=SC2086
  check "denied: $deny" bash -c "! $bin/kubectl auth can-i $deny -A --as=$sa >/dev/null 2>&1"
done

# --- the example policy, real hooks ---------------------------------------
kubectl create ns "$app_ns" >/dev/null
check "example applied" kubectl -n "$app_ns" apply -f examples/nginx.yaml
check "policy Ready" kubectl -n "$app_ns" wait --for=condition=Ready lcp/nginx-graceful --timeout=120s
check "frontend rolled out with the hooks" kubectl -n "$app_ns" rollout status deploy/frontend --timeout=180s
has_hooks() {
  kubectl -n "$app_ns" get deploy frontend -o json |
    jq -e '.spec.template.spec.containers[0].lifecycle.preStop.exec.command[2] | contains("sleep 5")' &&
    test "$(kubectl -n "$app_ns" get deploy frontend -o jsonpath='{.spec.template.spec.terminationGracePeriodSeconds}')" = 60
}
check "template carries the preStop and the grace period" has_hooks
first_pod() { kubectl -n "$app_ns" get pods -l pod=frontend --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}'; }
poststart_ran() { kubectl -n "$app_ns" exec "$(first_pod)" -c nginx -- cat /usr/share/message | grep -qx ready; }
check "the postStart ran in a real container" until_ok 60 poststart_ran
check "status: PostStartVerified" kubectl -n "$app_ns" wait --for=condition=PostStartVerified lcp/nginx-graceful --timeout=60s
kubectl -n "$app_ns" rollout restart deploy/frontend >/dev/null
check "restart rolled out" kubectl -n "$app_ns" rollout status deploy/frontend --timeout=180s
check "status: PreStopVerified (the hooked pods' preStop ran)" kubectl -n "$app_ns" wait --for=condition=PreStopVerified lcp/nginx-graceful --timeout=120s
marker_evidence() {
  kubectl -n "$app_ns" get lcp nginx-graceful -o json |
    jq -e '.status.postStart.evidence == "marker" and .status.preStop.evidence == "marker" and .status.preStop.ran >= 2 and .status.postStart.failed == 0'
}
check "status: both hooks proven by markers" until_ok 60 marker_evidence
echo "# status: $(kubectl -n "$app_ns" get lcp nginx-graceful -o json | jq -c '{postStart: .status.postStart, preStop: .status.preStop}')"
echo "# $(kubectl -n "$app_ns" get lcp -o wide | tr '\n' '|')"

# --- helm upgrade rolls the operator --------------------------------------
before=$(kubectl -n "$ns" get deploy "$fullname" -o jsonpath='{.metadata.generation}')
check "helm upgrade with changed values" helm upgrade "$release" "$chart" -n "$ns" --reuse-values --set logFormat=text --wait --timeout 180s
after=$(kubectl -n "$ns" get deploy "$fullname" -o jsonpath='{.metadata.generation}')
check "upgrade rolled the operator Deployment" test "$after" -gt "$before"
check "upgraded operator runs with the new args" bash -c "$bin/kubectl -n $ns get deploy $fullname -o jsonpath='{.spec.template.spec.containers[0].args}' | grep -q log-format=text"
kubectl -n "$app_ns" patch lcp nginx-graceful --type=merge -p '{"spec":{"terminationGracePeriodSeconds":45}}' >/dev/null
grace_is() { test "$(kubectl -n "$app_ns" get deploy frontend -o jsonpath='{.spec.template.spec.terminationGracePeriodSeconds}')" = "$1"; }
check "upgraded operator keeps reconciling" until_ok 60 grace_is 45

# --- two replicas, leader takeover ----------------------------------------
check "helm upgrade to two replicas" helm upgrade "$release" "$chart" -n "$ns" --reuse-values --set replicaCount=2 --wait --timeout 180s
holder() { kubectl -n "$ns" get lease lifecycle-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
has_holder() { test -n "$(holder)" && kubectl -n "$ns" get pod "$(holder)" >/dev/null 2>&1; }
check "a leader holds the Lease" until_ok 60 has_holder
leader=$(holder)
echo "# leader: $leader"
t0=$(date +%s.%N)
kubectl -n "$ns" delete pod "$leader" --wait=false >/dev/null
new_leader() { local h; h=$(holder); test -n "$h" && test "$h" != "$leader"; }
if until_ok 60 new_leader; then
  t1=$(date +%s.%N)
  ok "the other replica took over ($(holder))"
  echo "# takeover: $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s from deleting the leader pod to a new Lease holder"
else
  not_ok "the other replica took over" "holder still $(holder)"
fi
kubectl -n "$app_ns" patch lcp nginx-graceful --type=merge -p '{"spec":{"terminationGracePeriodSeconds":50}}' >/dev/null
check "the new leader reconciles" until_ok 60 grace_is 50

# --- leader takeover, ten times (issue 11) --------------------------------
# Deleting the leader pod: it releases the Lease on SIGTERM and the other
# replica, which watches for that, takes over at once.
leader_takeovers() {
  local i old t0 ms worst=0 times=()
  two_ready() {
    kubectl -n "$ns" get pods -l app.kubernetes.io/name=lifecycle-operator -o json |
      jq -e '[.items[] | select(.metadata.deletionTimestamp == null and .status.containerStatuses[0].ready == true)] | length >= 2' >/dev/null
  }
  for i in $(seq 1 10); do
    if ! until_ok 120 two_ready || ! until_ok 60 has_holder; then
      not_ok "takeover $i: two ready replicas and a leader"
      return
    fi
    sleep 1 # the follower has seen the Lease held
    old=$(holder)
    t0=$(date +%s%3N)
    kubectl -n "$ns" delete pod "$old" --wait=false >/dev/null
    until [[ -n $(holder) && $(holder) != "$old" ]]; do
      (($(date +%s%3N) - t0 < 30000)) || break
      sleep 0.1
    done
    ms=$(($(date +%s%3N) - t0))
    times+=("$ms")
    ((ms > worst)) && worst=$ms
  done
  echo "# leader takeovers (ms): ${times[*]}"
  check "10 leader takeovers, each within 3 s (worst ${worst} ms)" test "$worst" -le 3000
}
leader_takeovers

# --- uninstall ------------------------------------------------------------
check "deleting the policy hands the hooks back" kubectl -n "$app_ns" delete lcp nginx-graceful --timeout=60s
no_hooks() { test "$(kubectl -n "$app_ns" get deploy frontend -o jsonpath='{.spec.template.spec.containers[0].lifecycle}')" = ""; }
check "frontend template has no lifecycle any more" no_hooks
operator_logs >"$out/operator.log"
check "operator never logged a permission error" bash -c "! grep -Ei 'forbidden|unauthorized|cannot (list|watch|patch|create)' $out/operator.log"
check "helm uninstall" helm uninstall "$release" -n "$ns" --wait --timeout 120s
leftovers() {
  kubectl get clusterrole,clusterrolebinding -l app.kubernetes.io/instance=$release -o name
  kubectl -n "$ns" get all,sa,role,rolebinding -l app.kubernetes.io/instance=$release -o name
}
no_leftovers() { test -z "$(leftovers)"; }
# Pods and ReplicaSets go by garbage collection, a moment after the Deployment.
check "uninstall leaves nothing of the release" until_ok 60 no_leftovers
check "uninstall keeps the CRD (Helm's convention)" kubectl get crd lifecyclepolicies.lifecycle-operator.io
kubectl -n "$ns" delete lease lifecycle-operator --ignore-not-found >/dev/null 2>&1

cleanup
echo "e2e: $passed passed, $failed failed"
((failed == 0))
