#!/usr/bin/env bash
# Chaos on the local cluster: nothing wedges, nothing is orphaned.
#
#  1. shutdown: the hang recipe of issue 11, SHUTDOWN_RUNS times: 200
#     replicas-0 Deployments, start the operator, apply a policy, SIGTERM after
#     0.1-0.9 s. Every exit must take <= 5 s.
#  2. cycles: CHAOS_CYCLES rounds over CHAOS_DEPLOYMENTS Deployments (a third
#     with hooks of their own) while policies (some `onConflict: Override`) are
#     created and deleted, the operator is SIGKILLed or SIGTERMed at random
#     points, and kube-apiserver and etcd are restarted mid-apply. After each
#     round the operator must converge within 10 s of being back.
#  3. two operators at once (no leader election) on the same policies.
#  4. leader election: the leader SIGTERMed 10 times; the other replica must
#     hold the Lease within 3 s each time.
# Afterwards, with every policy deleted, every template must be byte for byte
# what it was, no lifecycle-operator.io/ annotation may be left, and no
# operator log may show a panic. Prints the figures; fails on any violation.
set -uo pipefail
# shellcheck source=hack/lib.sh
# (stop_proc/start_proc/running restart one control-plane component the way up.sh started it.)
source "$(dirname "$0")/../hack/lib.sh"
set +e

cycles=${CHAOS_CYCLES:-30}
count=${CHAOS_DEPLOYMENTS:-300}
shutdown_runs=${SHUTDOWN_RUNS:-50}
out=target/chaos
ns=chaos
sig_ns=chaos-sigterm
port=18190
# The image's binary (see build_image_binary), or CHAOS_OPERATOR_BIN.
operator_bin=${CHAOS_OPERATOR_BIN:-}
mkdir -p "$out"
rm -f "$out"/operator-*.log
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
now_ms() { date +%s%3N; }

declare -A pids=()
# start_operator NAME [PORT [ARGS...]]: an operator process (without leader election unless ARGS say so).
start_operator() {
  local name=$1 p=${2:-$port}
  shift 2 2>/dev/null || shift
  # Each reconcile's start reason and length are logged: a slow cycle can be read off the log.
  LCO_LOG=${CHAOS_LOG:-info,kube=warn,lifecycle_operator::reconcile=debug} \
    "$operator_bin" --http-addr "127.0.0.1:$p" "$@" >>"$out/operator-$name.log" 2>&1 &
  pids[$name]=$!
  local i
  for i in $(seq 150); do
    curl -fsS "http://127.0.0.1:$p/readyz" >/dev/null 2>&1 && return 0
    kill -0 "${pids[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  fail "operator $name did not become ready"
  return 1
}
# sigterm NAME: SIGTERM; exit_ms is the time until the process was gone
# (after 10 s it is KILLed and counts as 99999).
sigterm() {
  local pid=${pids[$1]} t0 i
  t0=$(now_ms)
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 500); do running "$pid" || break; sleep 0.02; done
  if running "$pid"; then
    kill -KILL "$pid" 2>/dev/null
    exit_ms=99999
  else
    exit_ms=$(($(now_ms) - t0))
  fi
  wait "$pid" 2>/dev/null
  unset "pids[$1]"
}
sigkill() { kill -KILL "${pids[$1]}" 2>/dev/null; wait "${pids[$1]}" 2>/dev/null; unset "pids[$1]"; }
stop_all() { local n; for n in "${!pids[@]}"; do sigterm "$n"; done; }

# Deletes the test namespaces while an operator runs (their policies carry its finalizer).
cleanup() {
  ((${#pids[@]})) || start_operator cleanup >/dev/null
  kubectl delete ns "$ns" "$sig_ns" --ignore-not-found --timeout=120s >/dev/null 2>&1
  stop_all
}
trap cleanup EXIT

# deployments NS COUNT: replicas-0 Deployments d1..dCOUNT; every third has its own preStop.
deployments() {
  local i
  for i in $(seq 1 "$2"); do
    local tier=$((i % 2)) own=""
    ((i % 3 == 0)) && own=', "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "echo own-'$i'"]}}}'
    cat <<EOF
{"apiVersion": "apps/v1", "kind": "Deployment",
 "metadata": {"name": "d$i", "namespace": "$1", "labels": {"app": "chaos", "tier": "t$tier"}},
 "spec": {"replicas": 0, "selector": {"matchLabels": {"d": "d$i"}},
  "template": {"metadata": {"labels": {"d": "d$i"}},
   "spec": {"terminationGracePeriodSeconds": 30, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"$own}]}}}}
EOF
  done | kubectl apply --server-side -f - >/dev/null
}
templates() { kubectl -n "$1" get deploy -o json | jq -S '[.items[] | {name: .metadata.name, template: .spec.template}] | sort_by(.name)'; }
leftover_annotations() {
  kubectl -n "$1" get deploy -o json |
    jq -r '.items[] | .metadata.name as $n | (.metadata.annotations // {}) | keys[] | select(startswith("lifecycle-operator.io/")) | "\($n): \(.)"'
}
# policy NS NAME SELECTOR_JSON ONCONFLICT GRACE
policy() {
  kubectl apply -f - >/dev/null <<EOF
{"apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy",
 "metadata": {"name": "$2", "namespace": "$1"},
 "spec": {"selector": {"matchLabels": $3}, "onConflict": "$4", "terminationGracePeriodSeconds": $5,
          "preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 1 # $2"]}}}}
EOF
}
# Converged: no policy is being deleted, every policy's status is current and
# Applied, no ledger names a policy that does not exist, and every Deployment
# a live policy selects carries a preStop.
converged() {
  local ns=$1 pol dep
  pol=$(kubectl -n "$ns" get lcp -o json) || return 1
  jq -e '[.items[] | select(.metadata.deletionTimestamp != null)] | length == 0' <<<"$pol" >/dev/null || return 1
  jq -e 'all(.items[]; (.status.observedGeneration // -1) == .metadata.generation and
           any(.status.conditions[]?; .type == "Applied" and .status == "True"))' <<<"$pol" >/dev/null || return 1
  dep=$(kubectl -n "$ns" get deploy -o json) || return 1
  jq -e --argjson pol "$pol" '
    ($pol.items | map(.metadata.name)) as $live |
    ($pol.items | map(.spec.selector.matchLabels)) as $sels |
    all(.items[];
      ((.metadata.annotations // {}) | keys | map(select(startswith("lifecycle-operator.io/")) | ltrimstr("lifecycle-operator.io/")) | all(. as $p | $live | index($p)))
      and (. as $d | if any($sels[]; . as $s | all($s | to_entries[]; $d.metadata.labels[.key] == .value))
                     then $d.spec.template.spec.containers[0].lifecycle.preStop != null else true end))' <<<"$dep" >/dev/null
}
# wait_converged NS: conv_ms is the time until converged, or 99999 after 60 s.
wait_converged() {
  local t0 end
  t0=$(now_ms)
  end=$((SECONDS + 60))
  until converged "$1"; do
    ((SECONDS < end)) || { conv_ms=99999; return 1; }
    sleep 0.2
  done
  conv_ms=$(($(now_ms) - t0))
}
# restart COMPONENT: stops one control-plane process and starts it again with
# the very command line up.sh gave it.
restart() {
  local name=$1 pid args
  pid=$(<"$RUN_DIR/$name.pid")
  mapfile -d '' args <"/proc/$pid/cmdline"
  stop_proc "$name" 2>/dev/null
  # In a subshell without the descriptors above 2: `flock FILE cmd` leaves the
  # cluster lock open there, and a daemon inheriting it would hold it forever.
  (
    for fd in "/proc/$BASHPID"/fd/*; do
      fd=${fd##*/}
      ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
    done
    start_proc "$name" "${args[@]}" 2>/dev/null
  )
  wait_until 60 "$name" kubectl get --raw /readyz || fail "$name did not come back"
}

kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/lifecyclepolicies.lifecycle-operator.io --timeout=60s >/dev/null
[[ -n $operator_bin ]] || operator_bin=$(build_image_binary) || exit 1
for n in "$ns" "$sig_ns"; do
  kubectl delete ns "$n" --ignore-not-found --wait=false >/dev/null 2>&1
done
start_operator setup || exit 1
kubectl wait --for=delete ns "$ns" "$sig_ns" --timeout=120s >/dev/null 2>&1
for n in "$ns" "$sig_ns"; do
  kubectl create ns "$n" >/dev/null && kubectl label ns "$n" lifecycle-operator.io/test=true >/dev/null
done
sigterm setup

# --- 1. shutdown ----------------------------------------------------------
deployments "$sig_ns" 200
worst_exit=0 hangs=0
for i in $(seq 1 "$shutdown_runs"); do
  start_operator "shutdown" || break
  kubectl -n "$sig_ns" delete lcp --all --wait=false >/dev/null 2>&1
  policy "$sig_ns" "p$i" '{"app": "chaos"}' Skip 30
  sleep "0.$((RANDOM % 9 + 1))"
  sigterm shutdown
  ((exit_ms > worst_exit)) && worst_exit=$exit_ms
  ((exit_ms > 5000)) && { hangs=$((hangs + 1)); fail "shutdown run $i: SIGTERM exit took ${exit_ms} ms"; }
done
echo "shutdown: $shutdown_runs runs, $hangs over 5 s, worst SIGTERM exit ${worst_exit} ms"
# The last shutdown run's policy is released before the cycles start: its
# rollout over the 200 Deployments is no part of the cycles' convergence.
start_operator settle || exit 1
kubectl -n "$sig_ns" delete lcp --all --timeout=120s >/dev/null || fail "the shutdown runs' policies were not released within 120 s"
sigterm settle

# --- 2. cycles ------------------------------------------------------------
deployments "$ns" "$count"
templates "$ns" >"$out/before.json"
selectors=('{"app": "chaos"}' '{"tier": "t0"}' '{"tier": "t1"}' '{"app": "chaos", "tier": "t1"}')
worst_conv=0 worst_cp=0 sigterms=0 sigkills=0 restarts=0 created=0
: >"$out/cycles.log"
start_operator chaos || exit 1
for c in $(seq 1 "$cycles"); do
  live=$(kubectl -n "$ns" get lcp -o name | wc -l)
  if ((live < 2 || (live < 4 && RANDOM % 2))); then
    conflict=Skip; ((RANDOM % 2)) && conflict=Override
    policy "$ns" "c$c" "${selectors[RANDOM % ${#selectors[@]}]}" "$conflict" $((40 + c))
    created=$((created + 1))
  else
    kubectl -n "$ns" delete "$(kubectl -n "$ns" get lcp -o name | shuf -n1)" --wait=false >/dev/null
  fi
  sleep "0.$((RANDOM % 9 + 1))"
  disrupted=operator what=none
  case $((c % 6)) in
    0 | 3) sigterm chaos; sigterms=$((sigterms + 1)) what=SIGTERM
      ((exit_ms > worst_exit)) && worst_exit=$exit_ms
      ((exit_ms > 5000)) && fail "cycle $c: SIGTERM exit took ${exit_ms} ms" ;;
    1 | 4) sigkill chaos; sigkills=$((sigkills + 1)) what=SIGKILL ;;
    2) restart kube-apiserver; restarts=$((restarts + 1)); disrupted=control-plane what=kube-apiserver ;;
    5) ((c % 12 == 5)) && { restart etcd; restarts=$((restarts + 1)); disrupted=control-plane what=etcd; } ;;
  esac
  [[ -n ${pids[chaos]:-} ]] || start_operator chaos || break
  wait_converged "$ns"
  echo "cycle $c $(date +%T.%3N): $what, converged in ${conv_ms} ms" >>"$out/cycles.log"
  if [[ $disrupted == control-plane ]]; then
    # The operator stayed up through the restart: its watches and calls
    # recover with backoff, so this one is reported, and bounded at 60 s.
    ((conv_ms > worst_cp)) && worst_cp=$conv_ms
    ((conv_ms > 60000)) && fail "cycle $c: no convergence within 60 s of the control plane being back"
    continue
  fi
  ((conv_ms > worst_conv)) && worst_conv=$conv_ms
  ((conv_ms > 10000)) && fail "cycle $c: converged only after ${conv_ms} ms (policies: $(kubectl -n "$ns" get lcp -o name | tr '\n' ' '))"
done
echo "chaos: $cycles cycles over $count Deployments, $created policies created, $sigterms SIGTERM, $sigkills SIGKILL, $restarts control-plane restarts; worst convergence ${worst_conv} ms after the operator was back, ${worst_cp} ms after a control-plane restart; worst SIGTERM exit ${worst_exit} ms"

# --- 3. two operators at once ---------------------------------------------
start_operator twin $((port + 1)) || true
policy "$ns" twin-a '{"app": "chaos"}' Override 77
policy "$ns" twin-b '{"tier": "t0"}' Skip 78
sleep 1
kubectl -n "$ns" delete lcp twin-a --wait=false >/dev/null
policy "$ns" twin-c '{"tier": "t1"}' Override 79
wait_converged "$ns"
# Two writers retry each other's stale writes with backoff: bounded, not instant.
((conv_ms > 60000)) && fail "two operators: no convergence within 60 s"
echo "two operators: converged in ${conv_ms} ms"

# --- 4. leader takeover ---------------------------------------------------
stop_all
holder() { kubectl -n "$ns" get lease chaos-leader -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
elect() { start_operator "$1" "$2" --leader-election --lease-namespace "$ns" --lease-name chaos-leader --identity "$1"; }
elect le-a $((port + 2)) && elect le-b $((port + 3))
declare -A le_port=([le-a]=$((port + 2)) [le-b]=$((port + 3)))
takeovers=() worst_takeover=0
for i in $(seq 1 10); do
  for _ in $(seq 100); do [[ -n $(holder) ]] && break; sleep 0.2; done
  sleep 1 # the follower has seen the Lease held
  leader=$(holder)
  [[ -n ${pids[$leader]:-} ]] || { fail "takeover $i: leader '$leader' is not one of ours"; break; }
  t0=$(now_ms)
  sigterm "$leader"
  until [[ -n $(holder) && $(holder) != "$leader" ]]; do
    (($(now_ms) - t0 < 30000)) || break
    sleep 0.05
  done
  ms=$(($(now_ms) - t0))
  takeovers+=("$ms")
  ((ms > worst_takeover)) && worst_takeover=$ms
  ((ms > 3000)) && fail "takeover $i took ${ms} ms"
  elect "$leader" "${le_port[$leader]}"
done
echo "leader takeovers (ms from SIGTERM to the other replica holding the Lease): ${takeovers[*]}"
stop_all
kubectl -n "$ns" delete lease chaos-leader --ignore-not-found >/dev/null 2>&1
start_operator final

# --- afterwards: everything handed back -----------------------------------
kubectl -n "$ns" delete lcp --all --timeout=120s >/dev/null || fail "policies were not deleted within 120 s"
templates "$ns" >"$out/after.json"
if diff -q "$out/before.json" "$out/after.json" >/dev/null; then
  echo "templates: all $count byte for byte as before"
else
  fail "templates differ from before (diff $out/before.json $out/after.json)"
fi
left=$(leftover_annotations "$ns")
[[ -z $left ]] || fail "lifecycle-operator.io/ annotations left: $(head -3 <<<"$left" | tr '\n' ' ')"
stop_all
if grep -l "panicked" "$out"/operator-*.log; then fail "an operator panicked"; fi
echo "chaos: $failures failures"
((failures == 0))
