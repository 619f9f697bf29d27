#!/usr/bin/env bash
# `make demo`: builds the operator image (no Docker), installs the Helm chart
# into the local cluster, applies the nginx example and prints the policy's
# status. `hack/demo.sh stop` removes the example and uninstalls the chart.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT" || exit 1
release=lifecycle-operator
ns=lifecycle-operator-system

if [[ ${1:-} == stop ]]; then
  [[ -f $KUBECONFIG ]] || exit 0
  # The chart's pre-delete Job deletes every policy while the operator still
  # runs, so the hooks are handed back before it goes.
  helm uninstall "$release" -n "$ns" --wait >/dev/null 2>&1 || true
  kubectl delete -f examples/nginx.yaml --ignore-not-found --timeout=60s >/dev/null 2>&1 || true
  exit 0
fi

start=$SECONDS
tag=demo-$(git rev-parse --short HEAD 2>/dev/null || echo dev)
echo "== building the operator image ($tag)"
bash hack/image.sh "$tag"
echo "== installing the chart"
adopt_crd "$release" "$ns"
helm upgrade --install "$release" charts/lifecycle-operator -n "$ns" --create-namespace \
  --set image.tag="$tag" --wait --timeout 180s
echo "== applying examples/nginx.yaml"
kubectl apply -f examples/nginx.yaml
kubectl wait --for=condition=Ready lcp/nginx-graceful --timeout=120s
kubectl rollout status deployment/frontend --timeout=180s
echo "== restarting frontend, so the hooked pods stop and their preStop runs"
kubectl rollout restart deployment/frontend
kubectl rollout status deployment/frontend --timeout=180s
kubectl wait --for=condition=PostStartVerified lcp/nginx-graceful --timeout=60s
kubectl wait --for=condition=PreStopVerified lcp/nginx-graceful --timeout=120s
echo
kubectl get lifecyclepolicies -o wide
echo
kubectl get lcp nginx-graceful -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.message}){"\n"}{end}'
echo
echo "frontend's hooks: $(kubectl get deployment frontend -o json | jq -c '.spec.template.spec.containers[0].lifecycle')"
echo
echo "== kubectl lifecycle status nginx-graceful (the kubectl-lifecycle plugin, target/debug)"
cargo build --quiet --bin kubectl-lifecycle
PATH="$REPO_ROOT/target/debug:$PATH" "$CLUSTER_BIN/kubectl" lifecycle status nginx-graceful
echo
echo "demo ready in $((SECONDS - start)) s. Remove it with 'make demo-down'; stop the cluster with 'make cluster-down'."
