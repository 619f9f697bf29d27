#!/usr/bin/env bash
# Runs the operator as a process against the test cluster, then the cluster
# test suites against it. Expects `make cluster-up` to have run.
# With arguments, runs only the suites named (e.g. `tenants hooks`), each
# against the one operator process; `restarts` and `fairness` start
# operators of their own, after it has stopped.
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/../hack/lib.sh"
cd "$REPO_ROOT" || exit 1
[[ -f $KUBECONFIG ]] || { echo "no cluster: $KUBECONFIG missing (run make cluster-up)" >&2; exit 1; }

out=target/it
mkdir -p "$out"
port=${LCO_TEST_PORT:-18080}

stop_operator() {
  if [[ -f $out/operator.pid ]]; then
    local pid
    pid=$(cat "$out/operator.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$out/operator.pid"
  fi
}

cleanup() {
  # Delete the test namespaces while the operator still runs: their policies
  # carry its finalizer, which only it removes. With no operator left (a
  # restart test failed), drop the finalizers: the namespace goes anyway.
  if [[ ! -f $out/operator.pid ]]; then
    for p in $(kubectl get clcp -l lifecycle-operator.io/test=true -o name 2>/dev/null); do
      kubectl patch "$p" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    done
    for ns in $(kubectl get ns -l lifecycle-operator.io/test=true -o name 2>/dev/null); do
      for p in $(kubectl get lcp -n "${ns#namespace/}" -o name 2>/dev/null); do
        kubectl patch -n "${ns#namespace/}" "$p" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
      done
    done
  fi
  kubectl delete clcp -l lifecycle-operator.io/test=true --timeout=120s >/dev/null 2>&1 || true
  kubectl delete mutatingwebhookconfiguration -l lifecycle-operator.io/test=true >/dev/null 2>&1 || true
  kubectl delete ns -l lifecycle-operator.io/test=true --timeout=120s >/dev/null 2>&1 || true
  stop_operator
}
trap cleanup EXIT

# Leftovers of an interrupted run would only add noise.
kubectl delete ns -l lifecycle-operator.io/test=true --wait=false >/dev/null 2>&1 || true
kubectl delete clcp -l lifecycle-operator.io/test=true --wait=false >/dev/null 2>&1 || true

# --force-conflicts: the chart (tests/e2e.sh) may have installed the CRD
# before; this run's types are the ones under test.
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/lifecyclepolicies.lifecycle-operator.io \
  crd/clusterlifecyclepolicies.lifecycle-operator.io --timeout=60s >/dev/null

cargo build --quiet --bin lifecycle-operator
target/debug/lifecycle-operator --http-addr "127.0.0.1:$port" --log-format json >"$out/operator.log" 2>&1 &
echo $! >"$out/operator.pid"
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$(cat "$out/operator.pid")" 2>/dev/null || { cat "$out/operator.log" >&2; echo "operator exited" >&2; exit 1; }
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { echo "operator never became ready" >&2; exit 1; }

export LCO_METRICS_URL="http://127.0.0.1:$port/metrics"
LCO_OPERATOR_PID=$(cat "$out/operator.pid")
export LCO_OPERATOR_PID

# The suites to run: every one, or those named on the command line.
SUITES=("$@")
wanted() {
  ((${#SUITES[@]} == 0)) && return 0
  local s
  for s in "${SUITES[@]}"; do [[ $s == "$1" ]] && return 0; done
  return 1
}
suite() {
  local name=$1
  shift
  if wanted "$name"; then
    cargo test --features cluster-tests --test "$name" -- "$@"
  fi
}
suite integration --test-threads=4
suite hooks --test-threads=3 --nocapture
suite idle_writes --nocapture
suite workloads --test-threads=2 --nocapture
suite rollout --test-threads=2 --nocapture
suite hardening --test-threads=7 --nocapture
suite cluster_policies --test-threads=2 --nocapture
suite drain --test-threads=2 --nocapture
# Last with this operator: it measures the operator's RSS, alone.
suite tenants --nocapture

# The operator must have survived everything, without panics or permission errors.
kill -0 "$(cat "$out/operator.pid")" || { echo "operator died during the tests" >&2; exit 1; }
if grep -E '"level":"(ERROR)"|panicked|forbidden' "$out/operator.log"; then
  echo "operator logged errors (see $out/operator.log)" >&2
  exit 1
fi

# The suites that start operators of their own: none other may run.
wanted restarts || wanted fairness || wanted webhook || exit 0
kubectl delete ns -l lifecycle-operator.io/test=true --timeout=120s >/dev/null 2>&1 || true
stop_operator
# own_operator NAME: the suite NAME, then its operator's log (target/it/NAME-operator.log)
# checked like the one above.
own_operator() {
  local name=$1
  # The suite before may have left namespaces going away (their pods too).
  kubectl delete ns -l lifecycle-operator.io/test=true --timeout=120s >/dev/null 2>&1 || true
  : >"$out/$name-operator.log"
  cargo test --features cluster-tests --test "$name" -- --test-threads=1 --nocapture
  if grep -E '"level":"(ERROR)"|panicked|forbidden' "$out/$name-operator.log"; then
    echo "operator logged errors (see $out/$name-operator.log)" >&2
    exit 1
  fi
}
# restarts kills and starts operators; fairness starts one with small log
# stream pools and reads its gauge, which must see its own pods alone.
if wanted restarts; then own_operator restarts; fi
if wanted fairness; then own_operator fairness; fi
# webhook serves admission from its own operator and stops it once.
if wanted webhook; then own_operator webhook; fi
