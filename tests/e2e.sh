#!/usr/bin/env bash
# End-to-end: the Helm chart installed in the local cluster, the operator
# running as a pod under its own ServiceAccount, real hooks in real containers.
# The chart's lint and render checks need no cluster: tests/chart.sh
# (`make chart-test`, in `make lint`).
# Prints `e2e: N passed, N failed` and fails on any failure.
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/../hack/lib.sh"
set +e # checks count failures; the script goes on
cd "$REPO_ROOT" || exit 1

release=lco
ns=lco-system
app_ns=e2e-web
enum_ns=e2e-enums
chart=charts/lifecycle-operator
fullname=$release-lifecycle-operator
sa=system:serviceaccount:$ns:$fullname
out=target/e2e
mkdir -p "$out"
# shellcheck disable=SC2034 # read by check (hack/lib.sh)
CHECK_LOG=$out/last.log

operator_logs() { kubectl -n "$ns" logs -l app.kubernetes.io/name=lifecycle-operator --tail=-1 --prefix 2>/dev/null; }
cleanup() {
  # The uninstall test ran the chart's pre-delete Job; here it would only wait
  # on what that test already reported.
  helm uninstall "$release" -n "$ns" --no-hooks --wait --timeout 180s >/dev/null 2>&1
  # Policies of an interrupted run that no operator will release any more.
  local p
  for p in $(kubectl get lcp -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}' 2>/dev/null | grep -E "^($app_ns|$enum_ns|e2e-first)/"); do
    kubectl -n "${p%%/*}" patch lcp "${p#*/}" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1
  done
  kubectl delete ns "$app_ns" "$enum_ns" e2e-first e2e-first-twin --ignore-not-found --timeout=120s >/dev/null 2>&1
  kubectl delete ns "$ns" --ignore-not-found --timeout=120s >/dev/null 2>&1
  # A failed uninstall leaves the cluster-scoped objects, hooks' included.
  kubectl delete clusterrole,clusterrolebinding,mutatingwebhookconfiguration -l "app.kubernetes.io/instance=$release" --ignore-not-found >/dev/null 2>&1
}
# The API server may still be coming back from a test that restarted it.
api_ready() { kubectl get --raw /readyz >/dev/null 2>&1; }
until_ok 120 api_ready || echo "# the API server is not ready; the checks below will say more"
# Start from nothing: an earlier interrupted run may have left a release, and
# interrupted cluster tests their namespaces (we hold the cluster lock, so no
# test is running). The chart's operator finishes their policies' cleanup.
cleanup
# Whatever happens from here on, the release and the test namespaces go.
trap cleanup EXIT
kubectl delete ns -l lifecycle-operator.io/test=true --wait=false >/dev/null 2>&1
# The local process from run-cluster-tests.sh is gone by now; this run's
# operator is the chart's pod alone.

# --- image ----------------------------------------------------------------
tag=e2e-$(date +%s)
if ref=$(bash hack/image.sh "$tag" 2>"$out/image.log"); then
  ok "operator image built and pushed ($ref)"
else
  not_ok "operator image built and pushed" "$(tail -3 "$out/image.log")"
fi
size=$(stat -c %s target/image/rootfs/lifecycle-operator 2>/dev/null || echo 0)
echo "# image: one layer holding a static, stripped binary of $((size / 1024)) KiB"

# --- install with the previous CRD, upgrade to this one ----------------------
# A CRD that `kubectl apply -f crds/` (tests/run-cluster-tests.sh) or chart
# 0.1.0's crds/ folder installed is adopted into the release, as the README
# says to do when upgrading from those.
adopt_crd "$release" "$ns"
git show "$PREV_CRD_COMMIT:crds/lifecyclepolicies.yaml" >"$out/prev-crd.yaml"
prev_chart=$out/chart-prev
rm -rf "$prev_chart" "$out/kube-cache" && cp -r "$chart" "$prev_chart" && cp "$out/prev-crd.yaml" "$prev_chart/files/lifecyclepolicies.yaml"
t0=$SECONDS
check "helm install (chart with the CRD of $PREV_CRD_COMMIT)" helm install "$release" "$prev_chart" -n "$ns" --create-namespace --wait --timeout 180s \
  --set image.tag="$tag" --set tests.image=busybox:latest
echo "# helm install --wait took $((SECONDS - t0)) s"
crd_enum() { kubectl get crd lifecyclepolicies.lifecycle-operator.io -o json | jq -c '.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.verification.enum'; }
echo "# CRD before the upgrade: verification enum $(crd_enum)"
old_crd() { ! crd_enum | grep -q Disabled; }
check "the old CRD is in place (no Disabled)" old_crd
check "helm upgrade to this chart" helm upgrade "$release" "$chart" -n "$ns" --reuse-values --wait --timeout 180s
new_schema() {
  kubectl get crd lifecyclepolicies.lifecycle-operator.io -o json | jq -e '.spec.names.categories == ["lifecycle-operator"]
    and (.spec.versions[0].schema.openAPIV3Schema | .properties.spec.properties.verification.enum == ["Markers", "Events", "Disabled"]
    and .properties.status.properties.conditions["x-kubernetes-list-type"] == "map")'
}
check "helm upgrade upgraded the CRD to the new schema" new_schema
echo "# CRD after the upgrade: verification enum $(crd_enum)"
notes_true_while_starting() { helm get notes "$release" -n "$ns" | grep 'may still be starting' >/dev/null; }
check "NOTES.txt says the pods may still be starting" notes_true_while_starting
check "helm test: the operator answers on its Service" helm test "$release" -n "$ns" --timeout 120s
# A fresh discovery cache: kubectl's would not know the new category yet.
by_category() { kubectl --cache-dir "$out/kube-cache" get lifecycle-operator -A; }
check "kubectl get lifecycle-operator (the CRD's category) works" until_ok 30 by_category
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
  "list statefulsets.apps" "watch statefulsets.apps" "patch statefulsets.apps" \
  "list daemonsets.apps" "watch daemonsets.apps" "patch daemonsets.apps" \
  "list lifecyclepolicies.lifecycle-operator.io" "watch lifecyclepolicies.lifecycle-operator.io" \
  "patch lifecyclepolicies.lifecycle-operator.io" "patch lifecyclepolicies.lifecycle-operator.io --subresource=status" \
  "create events.events.k8s.io" "patch events.events.k8s.io" "list pods" "watch pods" "get pods --subresource=log" \
  "list events" "watch events" \
  "list clusterlifecyclepolicies.lifecycle-operator.io" "watch clusterlifecyclepolicies.lifecycle-operator.io" \
  "patch clusterlifecyclepolicies.lifecycle-operator.io" \
  "patch clusterlifecyclepolicies.lifecycle-operator.io --subresource=status" \
  "list namespaces" "watch namespaces" \
  "list endpointslices.discovery.k8s.io" "watch endpointslices.discovery.k8s.io"; do
  # shellcheck disable=SC2086
  check "allowed: $want" can $want -A
done
for deny in "get secrets" "list secrets" "create pods" "patch pods" "delete pods" "update deployments.apps" \
  "delete deployments.apps" "create deployments.apps" "delete lifecyclepolicies.lifecycle-operator.io" \
  "update statefulsets.apps" "delete statefulsets.apps" "update daemonsets.apps" "delete daemonsets.apps" \
  "patch jobs.batch" "patch cronjobs.batch" \
  "create leases.coordination.k8s.io" "get namespaces" "patch namespaces" "delete namespaces" \
  "create clusterlifecyclepolicies.lifecycle-operator.io" "delete clusterlifecyclepolicies.lifecycle-operator.io" \
  "get endpointslices.discovery.k8s.io" "patch endpointslices.discovery.k8s.io"; do
  # shellcheck disable=SC2086
  check "denied: $deny" bash -c "! $CLUSTER_BIN/kubectl auth can-i $deny -A --as=$sa >/dev/null 2>&1"
done

# The webhook's certificates: its own Secret and configuration, by name.
webhook_secret=$fullname-webhook-tls
for want in "get secrets/$webhook_secret -n $ns" "update secrets/$webhook_secret -n $ns" \
  "get mutatingwebhookconfigurations.admissionregistration.k8s.io/$fullname" \
  "patch mutatingwebhookconfigurations.admissionregistration.k8s.io/$fullname"; do
  # shellcheck disable=SC2086
  check "allowed: $want" can $want
done
for deny in "get secrets/other -n $ns" "update secrets/other -n $ns" "create secrets -n $ns" "delete secrets/$webhook_secret -n $ns" \
  "list secrets -n $ns" "patch mutatingwebhookconfigurations.admissionregistration.k8s.io/other" \
  "list mutatingwebhookconfigurations.admissionregistration.k8s.io" "create mutatingwebhookconfigurations.admissionregistration.k8s.io"; do
  check "denied: $deny" bash -c "! $CLUSTER_BIN/kubectl auth can-i $deny --as=$sa >/dev/null 2>&1"
done

# Namespace users get policies through the built-in roles (aggregation).
kubectl create ns "$app_ns" >/dev/null
kubectl -n "$app_ns" create rolebinding e2e-editor --clusterrole=edit --user=e2e-alice >/dev/null
kubectl -n "$app_ns" create rolebinding e2e-viewer --clusterrole=view --user=e2e-bob >/dev/null
user_can() { kubectl auth can-i "$2" lifecyclepolicies.lifecycle-operator.io -n "$app_ns" --as="$1" >/dev/null 2>&1; }
check "edit role: a namespace user can create policies" until_ok 30 user_can e2e-alice create
check "view role: a namespace user can list policies" until_ok 30 user_can e2e-bob list
check "view role: ... but not create them" bash -c "! $CLUSTER_BIN/kubectl auth can-i create lifecyclepolicies.lifecycle-operator.io -n $app_ns --as=e2e-bob >/dev/null 2>&1"
# Cluster policies reach every namespace: not a namespace admin's to create,
# only a platform team's (the chart's -platform ClusterRole, bound cluster-wide).
kubectl -n "$app_ns" create rolebinding e2e-admin --clusterrole=admin --user=e2e-carol >/dev/null
check "admin role: a namespace admin can create namespaced policies" until_ok 30 user_can e2e-carol create
admin_cannot_clcp() {
  ! kubectl auth can-i create clusterlifecyclepolicies.lifecycle-operator.io --as=e2e-carol >/dev/null 2>&1 &&
    ! kubectl auth can-i list clusterlifecyclepolicies.lifecycle-operator.io --as=e2e-carol >/dev/null 2>&1
}
check "admin role: ... but may not create (or list) a ClusterLifecyclePolicy" admin_cannot_clcp
kubectl create clusterrolebinding e2e-platform --clusterrole="$fullname-platform" --user=e2e-dave >/dev/null
platform_can() { kubectl auth can-i "$1" clusterlifecyclepolicies.lifecycle-operator.io --as=e2e-dave >/dev/null 2>&1; }
check "platform role: a cluster operator can create ClusterLifecyclePolicies" until_ok 30 platform_can create
check "platform role: ... and delete them" platform_can delete
kubectl delete clusterrolebinding e2e-platform >/dev/null

# --- every enum value through kubectl (YAML 1.1) ---------------------------
kubectl create ns "$enum_ns" >/dev/null
# Unquoted, as people write them. Every policy selects nothing that exists.
cat >"$out/enums.yaml" <<'YAML'
apiVersion: lifecycle-operator.io/v1alpha1
kind: LifecyclePolicy
metadata: {name: enums-a}
spec:
  selector:
    matchExpressions:
      - {key: e2e-none, operator: In, values: [x1]}
      - {key: e2e-none2, operator: NotIn, values: [x2]}
      - {key: e2e-none3, operator: Exists}
      - {key: e2e-none4, operator: DoesNotExist}
  kinds: [Deployment, StatefulSet, DaemonSet]
  postStart: {httpGet: {port: 80, scheme: HTTP}}
  onConflict: Skip
  mode: Enforce
  verification: Markers
  rollout: {strategy: Canary, onFailure: Revert}
---
apiVersion: lifecycle-operator.io/v1alpha1
kind: LifecyclePolicy
metadata: {name: enums-b}
spec:
  selector: {matchLabels: {e2e-none: x}}
  preStop: {httpGet: {port: 443, scheme: HTTPS}}
  onConflict: Override
  mode: DryRun
  verification: Events
  rollout: {strategy: Immediate, onFailure: Halt}
---
apiVersion: lifecycle-operator.io/v1alpha1
kind: LifecyclePolicy
metadata: {name: enums-c}
spec:
  selector: {matchLabels: {e2e-none: x}}
  preStop: {sleep: {seconds: 1}}
  verification: Disabled
YAML
check "kubectl apply: policies with every enum value, unquoted" kubectl -n "$enum_ns" apply -f "$out/enums.yaml"
every_enum_stored() {
  local want have missing
  want=$(kubectl get crd lifecyclepolicies.lifecycle-operator.io -o json |
    jq -c '[.spec.versions[0].schema.openAPIV3Schema.properties.spec | .. | objects | .enum? // empty | .[]] | unique')
  have=$(kubectl -n "$enum_ns" get lcp -o json | jq -c '[.items[].spec | .. | strings] | unique')
  missing=$(jq -nc --argjson w "$want" --argjson h "$have" '$w - $h')
  echo "# spec enum values in the CRD: $want"
  [[ $missing == "[]" ]] || fail "not stored: $missing"
}
check "the API server stored every spec enum value of the CRD as written" every_enum_stored
check "the operator reconciles them" kubectl -n "$enum_ns" wait --for=jsonpath='{.status.observedGeneration}'=1 lcp --all --timeout=60s
check "policies with every enum value deleted (the operator drops its finalizer)" kubectl delete ns "$enum_ns" --timeout=60s

# --- the example policy, real hooks ---------------------------------------
check "example applied" kubectl -n "$app_ns" apply -f examples/nginx.yaml
check "policy Ready" kubectl -n "$app_ns" wait --for=condition=Ready lcp/nginx-graceful --timeout=120s
check "frontend rolled out with the hooks" kubectl -n "$app_ns" rollout status deploy/frontend --timeout=180s
has_hooks() {
  kubectl -n "$app_ns" get deploy frontend -o json |
    jq -e '.spec.template.spec.containers[0].lifecycle.preStop.exec.command[2] | contains("sleep 5")' &&
    test "$(kubectl -n "$app_ns" get deploy frontend -o jsonpath='{.spec.template.spec.terminationGracePeriodSeconds}')" = 60
}
check "template carries the preStop and the grace period" has_hooks
check "the edge DaemonSet rolled out with the hooks too" kubectl -n "$app_ns" rollout status ds/edge --timeout=180s
ds_hooked() {
  kubectl -n "$app_ns" get ds edge -o json |
    jq -e '(.spec.template.spec.containers[0].lifecycle.preStop.exec.command[2] | contains("sleep 5")) and .spec.template.metadata.labels["lifecycle-operator.io/hooked"] == "true"'
}
check "the DaemonSet's template carries the preStop and the hooked-pods label" until_ok 60 ds_hooked
workloads_listed() {
  kubectl -n "$app_ns" get lcp nginx-graceful -o json |
    jq -e '[.status.workloads[] | "\(.kind)/\(.name)=\(.state)"] | sort == ["DaemonSet/edge=Patched", "Deployment/frontend=Patched"]'
}
check "status lists both workloads by kind" until_ok 60 workloads_listed
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

# --- helm upgrade rolls the operator, and the hook counts stay -----------
hook_counts() {
  kubectl -n "$app_ns" get lcp nginx-graceful -o json |
    jq -c '{postStart: (.status.postStart | {summary, ran, implied, failed}), preStop: (.status.preStop | {summary, ran, failed, timedOut, notTriggered})}'
}
counts_before=$(hook_counts)
echo "# hook counts before the upgrade: $counts_before"
echo "# preStop sleep 5 took: $(kubectl -n "$app_ns" get lcp nginx-graceful -o jsonpath='{.status.preStop.lastDurationSeconds}') s"
before=$(kubectl -n "$ns" get deploy "$fullname" -o jsonpath='{.metadata.generation}')
check "helm upgrade with changed values" helm upgrade "$release" "$chart" -n "$ns" --reuse-values --set logFormat=text --wait --timeout 180s
after=$(kubectl -n "$ns" get deploy "$fullname" -o jsonpath='{.metadata.generation}')
check "upgrade rolled the operator Deployment" test "$after" -gt "$before"
# The new operator lists the pods again and reconciles the policy: give it
# the time to (wrongly) count anything twice.
sleep 15
echo "# hook counts after the upgrade: $(hook_counts)"
check "helm upgrade keeps the hook counts (the status is the durable record)" test "$(hook_counts)" = "$counts_before"
check "upgraded operator runs with the new args" bash -c "$CLUSTER_BIN/kubectl -n $ns get deploy $fullname -o jsonpath='{.spec.template.spec.containers[0].args}' | grep -q log-format=text"
kubectl -n "$app_ns" patch lcp nginx-graceful --type=merge -p '{"spec":{"terminationGracePeriodSeconds":45}}' >/dev/null
grace_is() { test "$(kubectl -n "$app_ns" get deploy frontend -o jsonpath='{.spec.template.spec.terminationGracePeriodSeconds}')" = "$1"; }
check "upgraded operator keeps reconciling" until_ok 60 grace_is 45

# --- two replicas, leader takeover ----------------------------------------
check "helm upgrade to two replicas" helm upgrade "$release" "$chart" -n "$ns" --reuse-values --set replicaCount=2 --wait --timeout 180s
holder() { kubectl -n "$ns" get lease lifecycle-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
has_holder() { test -n "$(holder)" && kubectl -n "$ns" get pod "$(holder)" >/dev/null 2>&1; }
check "two replicas come with a PodDisruptionBudget" kubectl -n "$ns" get pdb "$fullname"
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

# --- hooks from the first pod: the admission webhook (issue 21) -----------
# A policy in place first; then a Deployment made three ways a user would.
# Each rolls out once, its first pods already hooked; a twin of each in a
# namespace without the policy is the byte-for-byte reference for the
# restore at the end.
first_ns=e2e-first
twin_ns=e2e-first-twin
kubectl create ns "$first_ns" >/dev/null && kubectl create ns "$twin_ns" >/dev/null
caught_up() { [[ -n $(kubectl get mutatingwebhookconfiguration "$fullname" -o jsonpath='{.webhooks[0].clientConfig.caBundle}') ]]; }
check "the operator published its CA in the webhook configuration" until_ok 60 caught_up
check "policy applied before any workload" kubectl -n "$first_ns" apply -f tests/e2e/first-policy.yaml
policy_complete() {
  kubectl -n "$first_ns" get lcp first -o json | jq -e '.status.observedGeneration == .metadata.generation and .status.rollout.phase == "Complete"' >/dev/null
}
check "its rollout is Complete (nothing to roll yet)" until_ok 60 policy_complete
sleeper=(sh -c "trap 'exit 0' TERM; sleep 3600 & wait")
make_one() { kubectl -n "$1" create deployment made --image=busybox:latest -- "${sleeper[@]}" >/dev/null; }
make_two() { kubectl -n "$1" apply -f tests/e2e/applied.yaml >/dev/null && helm install charted tests/e2e/charted -n "$1" >/dev/null; }
twins() { make_one "$twin_ns" && make_two "$twin_ns"; }
check "the twins: kubectl create deployment, kubectl apply, helm install, where no policy is" twins
# The first workload is the canary of the policy's hooks (hooked at
# admission, then verified); once they are proven, a burst of creates is
# hooked at admission too.
check "kubectl create deployment" make_one "$first_ns"
proven() {
  kubectl -n "$first_ns" get lcp first -o json | jq -e '.status.rollout.phase == "Complete" and .status.rollout.rolledOut == 1' >/dev/null
}
check "its hooks verified: the policy's rollout is Complete with it" until_ok 90 proven
check "then at once: kubectl apply, helm install of a small app chart" make_two "$first_ns"
for d in made applied charted; do
  check "$d rolled out" kubectl -n "$first_ns" rollout status "deploy/$d" --timeout=120s
done
replica_sets() { kubectl -n "$first_ns" get rs -l "app=$1" -o name | wc -l; }
first_pods_hooked() {
  kubectl -n "$first_ns" get pods -l "app=$1" -o json |
    jq -e '(.items | length) >= 1 and all(.items[]; .spec.containers[0].lifecycle.postStart.exec != null and .spec.containers[0].lifecycle.preStop.exec != null
      and .metadata.labels["lifecycle-operator.io/hooked"] == "true")' >/dev/null
}
admitted() {
  kubectl -n "$first_ns" get lcp first -o json | jq -e '.status.firstWrites == {"admitted": 3, "secondRollouts": 0}
    and ([.status.workloads[] | "\(.name)=\(.state)"] | sort == ["applied=Patched", "charted=Patched", "made=Patched"])' >/dev/null
}
check "status: all three got their hooks at admission, none needed a second rollout" until_ok 60 admitted
# The background path has taken the fields over by now: it must not have
# rolled anything again.
sleep 5
for d in made applied charted; do
  check "$d: exactly one ReplicaSet, generation 1" test "$(replica_sets "$d") $(kubectl -n "$first_ns" get deploy "$d" -o jsonpath='{.metadata.generation}')" = "1 1"
  check "$d: its first pods carry the hooks" first_pods_hooked "$d"
done
taken_over() {
  kubectl -n "$first_ns" get deploy made -o json --show-managed-fields | jq -e '[.metadata.managedFields[] | select(.manager == "lifecycle-operator/first")] | length == 1' >/dev/null
}
check "the policy's field manager took the hooks over (no template change)" until_ok 60 taken_over
poststart_counted() {
  kubectl -n "$first_ns" get lcp first -o json | jq -e '.status.postStart.evidence == "marker" and .status.postStart.ran >= 3 and .status.postStart.failed == 0' >/dev/null
}
check "status: the three first pods' postStart counted by markers" until_ok 90 poststart_counted
check "kubectl replace with the manifest (no hooks)" kubectl -n "$first_ns" replace -f tests/e2e/applied.yaml
sleep 5
check "replace: no rollout without the hooks (still one ReplicaSet)" test "$(replica_sets applied)" = 1
replaced_hooked() { kubectl -n "$first_ns" get deploy applied -o json | jq -e '.spec.template.spec.containers[0].lifecycle.postStart != null' >/dev/null; }
check "replace: the template still carries the hooks" replaced_hooked
for d in made applied charted; do kubectl -n "$first_ns" scale deploy "$d" --replicas=0 >/dev/null; done
prestop_counted() {
  kubectl -n "$first_ns" get lcp first -o json | jq -e '.status.preStop.evidence == "marker" and .status.preStop.ran >= 3 and .status.preStop.failed == 0' >/dev/null
}
check "status: their preStop counted by markers (scaled to zero)" until_ok 90 prestop_counted
echo "# first writes: $(kubectl -n "$first_ns" get lcp first -o json | jq -c '{firstWrites: .status.firstWrites, postStart: .status.postStart.ran, preStop: .status.preStop.ran}')"
for d in made applied charted; do
  kubectl -n "$first_ns" scale deploy "$d" --replicas=1 >/dev/null
  kubectl -n "$twin_ns" scale deploy "$d" --replicas=1 >/dev/null
done
check "policy deleted" kubectl -n "$first_ns" delete lcp first --timeout=120s
template_of() { kubectl -n "$1" get deploy "$2" -o json | jq -S '.spec.template'; }
restored() {
  local d
  for d in made applied charted; do
    diff <(template_of "$first_ns" "$d") <(template_of "$twin_ns" "$d") >/dev/null || return 1
  done
}
check "deleting the policy restores the three templates byte for byte (as their twins)" until_ok 60 restored
kubectl delete ns "$first_ns" "$twin_ns" --wait=false >/dev/null

# --- kubectl lifecycle on the demo (issue 23) ------------------------------
# shellcheck source=tests/e2e/plugin.sh
source "$REPO_ROOT/tests/e2e/plugin.sh"

# --- uninstall hands the hooks back ----------------------------------------
# The example policy is still applied, its hooks verified and on frontend.
policy_hooked() { kubectl -n "$app_ns" get lcp nginx-graceful >/dev/null && [[ -n $(kubectl -n "$app_ns" get deploy frontend -o jsonpath='{.spec.template.spec.containers[0].lifecycle.preStop}') ]]; }
check "before uninstall: the policy is there and its hooks are on frontend" policy_hooked
hooked_workloads() {
  kubectl get deploy,sts,ds -A -o json | jq -r '.items[] | select(any(.spec.template.spec.containers[]; .lifecycle != null)
    or (.spec.template.metadata.labels // {} | has("lifecycle-operator.io/hooked"))
    or (.metadata.annotations // {} | keys | any(startswith("lifecycle-operator.io/")))) | "\(.kind)/\(.metadata.namespace)/\(.metadata.name)"'
}
echo "# hooked workloads before uninstall: $(hooked_workloads | tr '\n' ' ')"
operator_logs >"$out/operator.log"
check "operator never logged a permission error" bash -c "! grep -Ei 'forbidden|unauthorized|cannot (list|watch|patch|create)' $out/operator.log"
t0=$SECONDS
check "helm uninstall (its pre-delete Job releases every policy)" helm uninstall "$release" -n "$ns" --wait --timeout 240s
echo "# helm uninstall took $((SECONDS - t0)) s"
# A failed hook Job stays (no hook-failed delete policy): say why.
kubectl -n "$ns" logs "job/$fullname-release" --tail=5 2>/dev/null | sed 's/^/# release-all: /'
no_policies() { [[ -z $(kubectl get lcp -A -o name) ]]; }
check "after uninstall: no LifecyclePolicy left, so none hangs on a finalizer" no_policies
no_hooked() { [[ -z $(hooked_workloads) ]]; }
check "after uninstall: no workload carries a hook or a ledger annotation" no_hooked
grace_restored() {
  local g
  g=$(kubectl -n "$app_ns" get deploy frontend -o jsonpath='{.spec.template.spec.terminationGracePeriodSeconds}')
  [[ -z $g || $g == 30 ]]
}
check "after uninstall: frontend's grace period is back to the default" grace_restored
leftovers() {
  kubectl get clusterrole,clusterrolebinding,mutatingwebhookconfiguration -l app.kubernetes.io/instance=$release -o name
  kubectl -n "$ns" get all,sa,role,rolebinding,pdb,job,secret -l app.kubernetes.io/instance=$release -o name
}
no_leftovers() { test -z "$(leftovers)"; }
# Pods and ReplicaSets go by garbage collection, a moment after the Deployment.
check "uninstall leaves nothing of the release (the Job and its RBAC included)" until_ok 60 no_leftovers
check "uninstall keeps the CRD (crds.keep)" kubectl get crd lifecyclepolicies.lifecycle-operator.io
kubectl -n "$ns" delete lease lifecycle-operator --ignore-not-found >/dev/null 2>&1

report e2e
