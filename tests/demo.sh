#!/usr/bin/env bash
# `make demo`: runs the operator against the local cluster, applies the nginx
# example and prints the policy's status. `tests/demo.sh stop` stops the operator.
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBECONFIG=$PWD/target/cluster/kubeconfig
kubectl=$PWD/target/cluster/bin/kubectl
dir=target/demo
pidfile=$dir/operator.pid
mkdir -p "$dir"

stop() {
  if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    # Remove the demo while the operator runs, so its finalizer is honoured.
    "$kubectl" delete -f examples/nginx.yaml --ignore-not-found --timeout=60s >/dev/null 2>&1 || true
    kill "$(cat "$pidfile")"
  fi
  rm -f "$pidfile"
}
if [[ ${1:-} == stop ]]; then stop; exit 0; fi

"$kubectl" apply --server-side -f crds/
"$kubectl" wait --for=condition=Established crd/lifecyclepolicies.lifecycle-operator.io --timeout=60s
cargo build --quiet --release --bin lifecycle-operator
stop
target/release/lifecycle-operator --http-addr 127.0.0.1:18081 >"$dir/operator.log" 2>&1 &
echo $! >"$pidfile"
echo "operator running (pid $(cat "$pidfile"), log $dir/operator.log, metrics http://127.0.0.1:18081/metrics)"

"$kubectl" apply -f examples/nginx.yaml
"$kubectl" wait --for=condition=Ready lcp/nginx-graceful --timeout=120s
"$kubectl" rollout status deployment/frontend --timeout=180s
echo
"$kubectl" get lifecyclepolicies -o wide
echo
"$kubectl" get deployment frontend -o jsonpath='{.spec.template.spec.containers[0].lifecycle}{"\n"}'
echo
echo "Stop the operator with 'make demo-down'; the cluster with 'make cluster-down'."
