#!/usr/bin/env bash
# `make bench` (full size) and `make bench-ci` (`tests/bench.sh ci`: small
# size, part of `make test`): the operator against the local cluster (release
# build; ci: debug), a fresh process per measurement, one table of figures at the end
# (stdout and $out/table.md; the README's Performance section says what each
# row means). Prints figures, asserts no timing.
#
#  1. speed, per size in BENCH_SIZES: N replicas-0 Deployments; the raw loop
#     (tests/bench/driver.rs: kube-rs server-side apply, 16 at once, no client
#     rate limit) puts a preStop sleep on all and takes it off again; then a
#     LifecyclePolicy does the same through the operator. Writes per
#     Deployment and CPU from the operator's /metrics and /proc; at the
#     largest size, writes in a quiet window with the policy applied.
#  2. hook to status: BENCH_LATENCY_PODS real pods on the real node with a
#     marker-verified preStop, scaled to 0 at once.
#  3. cluster (before 6, whose objects stay until the end):
#     BENCH_CLUSTER_NAMESPACES namespaces of BENCH_CLUSTER_DEPLOYMENTS
#     replicas-0 Deployments each; the raw loop over all of them, then one
#     ClusterLifecyclePolicy, as in 1. Then the RSS of a fresh operator on the
#     cluster without them, with them, and with them under the policy.
#  4. admission (issue 21): BENCH_ADMISSION_DEPLOYMENTS replicas-0
#     Deployment creates, 16 at once, into a namespace under a policy that
#     the webhook leaves out (the baseline), then into one it serves (the
#     operator serving it on loopback, a MutatingWebhookConfiguration with
#     a url). Latency from the client and from the API server's histograms,
#     and ReplicaSets per new Deployment (tests/bench/admission.rs).
#  5. drain (issue 22): 3 nginx replicas behind a Service, four ways (no
#     hook; the Kubernetes docs' nginx preStop; preStops that sleep 2 s, the
#     recommendation, and 5 s first), each restarted BENCH_DRAIN_RESTARTS times with `kubectl
#     rollout restart` under an HTTP load on the ClusterIP from the node (a
#     new connection per request); requests sent and failed, and the
#     policy's DrainSafe verdict (tests/bench/drain.rs). A verdict that
#     plainly contradicts the load prints DISAGREES and fails the run.
#  6. memory: the RSS of a freshly started operator on an empty cluster, then
#     with BENCH_PODS pods no policy touches, BENCH_HOOKED_PODS pods carrying a
#     policy's hook, and BENCH_RSS_DEPLOYMENTS Deployments no policy touches.
#     The pods run on kwok's fake nodes (tests/bench/kwok.yaml).
#  7. contention, in-process (no cluster): P policies of one namespace, each
#     decided once over W Deployments, with the namespace's index shared vs
#     rebuilt for every reconcile (BENCH_CONTENTION_POLICIES, _WORKLOADS).
#
# Everything it creates carries lifecycle-operator.io/bench and goes away on
# exit, whatever happens. Needs `make cluster-up`; run one cluster user at a
# time (it starts its own operator, which must be the only one).
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/../hack/lib.sh"
cd "$REPO_ROOT" || exit 1
[[ -f $KUBECONFIG ]] || die "no cluster: $KUBECONFIG missing (run make cluster-up)"

mode=${1:-full}
case $mode in
  full)
    out=target/bench
    : "${BENCH_SIZES:=1000 5000}" "${BENCH_IDLE_SECONDS:=60}" "${BENCH_LATENCY_PODS:=100}"
    : "${BENCH_RSS_DEPLOYMENTS:=10000}" "${BENCH_PODS:=40000}" "${BENCH_HOOKED_PODS:=10000}"
    : "${BENCH_CONTENTION_POLICIES:=10,100,1000}" "${BENCH_CONTENTION_WORKLOADS:=1000}"
    : "${BENCH_CLUSTER_NAMESPACES:=100}" "${BENCH_CLUSTER_DEPLOYMENTS:=10}"
    : "${BENCH_ADMISSION_DEPLOYMENTS:=1000}" "${BENCH_DRAIN_RESTARTS:=3}"
    ;;
  ci)
    out=target/bench-ci
    : "${BENCH_SIZES:=100 500}" "${BENCH_IDLE_SECONDS:=15}" "${BENCH_LATENCY_PODS:=20}"
    : "${BENCH_RSS_DEPLOYMENTS:=500}" "${BENCH_PODS:=2000}" "${BENCH_HOOKED_PODS:=500}"
    : "${BENCH_CONTENTION_POLICIES:=10,100}" "${BENCH_CONTENTION_WORKLOADS:=200}"
    : "${BENCH_CLUSTER_NAMESPACES:=10}" "${BENCH_CLUSTER_DEPLOYMENTS:=10}"
    : "${BENCH_ADMISSION_DEPLOYMENTS:=100}" "${BENCH_DRAIN_RESTARTS:=1}"
    ;;
  *) die "usage: tests/bench.sh [full|ci]" ;;
esac
# The cargo profile of the operator and the driver: ci uses the debug build
# that `make test` has made already (a cold release build alone takes about
# 4 minutes here); its figures only show that the benchmark still works.
: "${BENCH_PROFILE:=$([[ $mode == ci ]] && echo debug || echo release)}"
case $BENCH_PROFILE in
  release) profile_flag=--release ;;
  debug) profile_flag= ;;
  *) die "BENCH_PROFILE must be release or debug" ;;
esac
# Which parts run (all by default): speed latency cluster admission drain rss contention.
: "${BENCH_PARTS:=speed latency cluster admission drain rss contention}"
: "${BENCH_KWOK_NODES:=4}"
port=${BENCH_PORT:-18290}
webhook_port=${BENCH_WEBHOOK_PORT:-18291}
kwok_port=${BENCH_KWOK_PORT:-18247}
KWOK_VERSION=v0.7.0
KWOK_BIN="$CACHE_ROOT/tools/kwok-$KWOK_VERSION/kwok"
operator_bin=$REPO_ROOT/target/$BENCH_PROFILE/lifecycle-operator
driver_bin=$REPO_ROOT/target/$BENCH_PROFILE/examples/bench-driver
results=$out/results.txt
BENCH_LABEL=lifecycle-operator.io/bench

# The operator and kwok are started with lib.sh's start_proc, with their pid
# files and logs under $out (not the cluster's run directory).
RUN_DIR=$REPO_ROOT/$out/run
LOG_DIR=$REPO_ROOT/$out/logs
mkdir -p "$out" "$RUN_DIR" "$LOG_DIR"

part() { [[ " $BENCH_PARTS " == *" $1 "* ]]; }
result() { echo "$1 $2" >>"$results"; }
driver() { "$driver_bin" "$@"; }

# ---- kwok ------------------------------------------------------------------

# Built once per version with `go install` into the shared cache, like the
# cluster's own components (hack/cluster/build.sh) and the linters.
install_kwok() {
  go_tool kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" "$KWOK_BIN"
}

kwok_nodes() {
  local i
  for ((i = 0; i < BENCH_KWOK_NODES; i++)); do echo "lco-bench-kwok-$i"; done
}

# The fake nodes: only kwok manages them (label), nothing but the bench's
# pods lands there (taint), and what the API server would dial for them
# (InternalIP, kubelet port) is kwok's own server on loopback.
start_kwok() {
  mkdir -p "$out/kwok-home"
  # HOME: kwok also reads ~/.kwok/kwok.yaml when it exists; only ours counts.
  (
    export HOME=$REPO_ROOT/$out/kwok-home
    start_proc bench-kwok "$KWOK_BIN" --kubeconfig "$KUBECONFIG_PATH" -c "$REPO_ROOT/tests/bench/kwok.yaml" \
      --manage-all-nodes=false --manage-nodes-with-label-selector="$BENCH_LABEL=kwok" \
      --node-ip 127.0.0.1 --node-port "$kwok_port" --server-address "127.0.0.1:$kwok_port" \
      --cidr 127.64.0.0/12 -v WARN
  )
  local n
  for n in $(kwok_nodes); do
    cat <<EOF
{"apiVersion": "v1", "kind": "Node",
 "metadata": {"name": "$n",
   "labels": {"type": "kwok", "$BENCH_LABEL": "kwok", "kubernetes.io/hostname": "$n", "kubernetes.io/os": "linux"},
   "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
 "spec": {"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]}}
EOF
  done | kubectl apply -f - >/dev/null
  kubectl wait node -l "$BENCH_LABEL=kwok" --for=condition=Ready --timeout=120s >/dev/null ||
    die "the kwok nodes did not become Ready (see $LOG_DIR/bench-kwok.log)"
  # Loopback only, or stop here.
  local addrs
  addrs=$(kubectl get node -l "$BENCH_LABEL=kwok" \
    -o jsonpath='{range .items[*]}{.status.addresses[?(@.type=="InternalIP")].address}:{.status.daemonEndpoints.kubeletEndpoint.Port}{"\n"}{end}' | sort -u)
  [[ $addrs == "127.0.0.1:$kwok_port" ]] || die "kwok nodes advertise '$addrs', not 127.0.0.1:$kwok_port"
  log "kwok: $BENCH_KWOK_NODES fake nodes Ready at 127.0.0.1:$kwok_port"
}

# ---- the operator ----------------------------------------------------------

# fresh_operator: stops the bench's operator if it runs, starts a new one,
# waits for /readyz; sets op_pid. ARGS: more flags.
fresh_operator() {
  stop_proc bench-operator
  start_proc bench-operator "$operator_bin" --http-addr "127.0.0.1:$port" --log-format json "$@"
  op_pid=$(<"$RUN_DIR/bench-operator.pid")
  wait_until 120 operator curl -fsS "http://127.0.0.1:$port/readyz" ||
    die "the operator did not become ready (see $LOG_DIR/bench-operator.log)"
}
operator_running() { pid_alive bench-operator; }

# cpu_ticks PID: user + system clock ticks so far.
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }

# io_read PID: bytes the process has read so far (sockets included).
io_read() { awk '/^rchar:/{print $2}' "/proc/$1/io"; }

# settled_rss: the operator's VmRSS (KiB) once it has settled, that is over
# the last 5 s (one sample a second): RSS within 1%, under 0.1 s of CPU, and
# under 1 MiB read (no list still coming in). At most 5 minutes, then the
# last sample, with a warning.
settled_rss() {
  local hz rss=() cpu=() rd=() i n lo hi s
  hz=$(getconf CLK_TCK)
  for ((i = 0; i < 300; i++)); do
    running "$op_pid" || die "the operator died (see $LOG_DIR/bench-operator.log)"
    rss+=("$(awk '/^VmRSS:/{print $2}' "/proc/$op_pid/status")")
    cpu+=("$(cpu_ticks "$op_pid")")
    rd+=("$(io_read "$op_pid")")
    n=${#rss[@]}
    if ((n >= 6)); then
      lo=${rss[n - 1]} hi=${rss[n - 1]}
      for s in "${rss[@]:n-6}"; do
        ((s < lo)) && lo=$s
        ((s > hi)) && hi=$s
      done
      if (((hi - lo) * 100 <= hi && (cpu[n - 1] - cpu[n - 6]) * 10 < hz && rd[n - 1] - rd[n - 6] < 1048576)); then
        echo "${rss[n - 1]}"
        return 0
      fi
    fi
    sleep 1
  done
  log "warning: the operator's RSS did not settle within 5 minutes"
  echo "${rss[-1]}"
}

# measure_rss KEY: a fresh operator's settled RSS, recorded as KEY.
measure_rss() {
  fresh_operator
  local kib
  kib=$(settled_rss)
  log "RSS $1: $kib KiB"
  result "$1" "$kib"
}

# ---- namespaces ------------------------------------------------------------

new_ns() {
  kubectl create ns "$1" >/dev/null
  kubectl label ns "$1" "$BENCH_LABEL=true" >/dev/null
  wait_until 60 "ServiceAccount" kubectl -n "$1" get serviceaccount default ||
    die "no default ServiceAccount in $1"
}

# policy NS NAME SELECTOR_LABEL VERIFICATION PRESTOP_JSON
policy() {
  kubectl apply -f - >/dev/null <<EOF
{"apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy",
 "metadata": {"name": "$2", "namespace": "$1"},
 "spec": {"selector": {"matchLabels": {"app": "$3"}}, "verification": "$4", "preStop": $5}}
EOF
}

# remove_objects: deletes what the bench created. Policies first (cluster
# policies, then each namespace's), while an
# operator runs (they carry its finalizer; without one, the finalizers are
# dropped); then, with the operator and kwok stopped, the kwok pods (at once,
# grace period 0), the fake nodes and the namespaces.
remove_objects() {
  local ns nss p
  # The admission part's webhook first: nothing is left to answer it.
  kubectl delete mutatingwebhookconfiguration -l "$BENCH_LABEL" --ignore-not-found >/dev/null 2>&1
  if operator_running; then
    kubectl delete clcp -l "$BENCH_LABEL" --timeout=120s >/dev/null 2>&1
  fi
  for p in $(kubectl get clcp -l "$BENCH_LABEL" -o name 2>/dev/null); do
    kubectl patch "$p" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1
  done
  nss=$(kubectl get ns -l "$BENCH_LABEL=true" -o jsonpath='{.items[*].metadata.name}' 2>/dev/null)
  [[ -z $nss ]] || log "removing the bench's objects: $nss"
  for ns in $nss; do
    if operator_running; then
      kubectl -n "$ns" delete lcp --all --timeout=120s >/dev/null 2>&1
    fi
    for p in $(kubectl -n "$ns" get lcp -o name 2>/dev/null); do
      kubectl -n "$ns" patch "$p" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1
    done
  done
  stop_procs 15 bench-operator bench-kwok
  for ns in $nss; do
    [[ -x $driver_bin ]] && driver delete-pods --ns "$ns" >/dev/null 2>&1
  done
  kubectl delete node -l "$BENCH_LABEL=kwok" --timeout=60s >/dev/null 2>&1
  if [[ -n $nss ]]; then
    # shellcheck disable=SC2086 # one word per namespace
    kubectl delete ns $nss --timeout=600s >/dev/null 2>&1 || log "warning: namespaces still terminating: $nss"
  fi
  return 0
}

# On exit, whatever happened.
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  # The drain part's load generator, if it was running (it stops by itself
  # at its limit too).
  [[ -z ${drain_load_pid:-} ]] || kill "$drain_load_pid" 2>/dev/null
  remove_objects
  exit "$status"
}

# ---- the run ---------------------------------------------------------------

install_kwok
# shellcheck disable=SC2086 # no flag for the debug profile
cargo build --quiet $profile_flag --bin lifecycle-operator --example bench-driver
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s >/dev/null \
  crd/lifecyclepolicies.lifecycle-operator.io crd/clusterlifecyclepolicies.lifecycle-operator.io

# What an interrupted run left behind, its operator and kwok included.
trap cleanup EXIT
trap 'exit 130' INT TERM
(set +e; remove_objects)

: >"$results"
{
  echo "machine.cpus $(nproc)"
  echo "machine.cpu $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
  echo "machine.memory $(awk '/^MemTotal:/{printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  commit="$(git rev-parse --short HEAD) (src/ last changed in $(git log -1 --format=%h -- src Cargo.toml Cargo.lock))"
  [[ -z $(git status --porcelain -- src Cargo.toml Cargo.lock) ]] || commit+=" with uncommitted changes to src/"
  echo "operator.commit $commit"
  echo "operator.profile $BENCH_PROFILE"
  echo "run.date $(date -u '+%Y-%m-%d %H:%M UTC'), tests/bench.sh $mode"
} >>"$results"

phase_start=$SECONDS
phase() {
  log "== $1: $((SECONDS - phase_start)) s"
  result "phase.${1}_s" $((SECONDS - phase_start))
  phase_start=$SECONDS
}

if part speed; then
  fresh_operator
  largest=0
  for n in $BENCH_SIZES; do ((n > largest)) && largest=$n; done
  for n in $BENCH_SIZES; do
    ns=bench-speed-$n
    new_ns "$ns"
    driver deployments --ns "$ns" --count "$n"
    idle=0
    ((n == largest)) && idle=$BENCH_IDLE_SECONDS
    driver speed --ns "$ns" --metrics "127.0.0.1:$port" --pid "$op_pid" --clk-tck "$(getconf CLK_TCK)" \
      --idle-seconds "$idle" >>"$results"
    kubectl delete ns "$ns" --timeout=600s >/dev/null
  done
  phase speed
fi

if part latency; then
  fresh_operator
  ns=bench-latency
  new_ns "$ns"
  kubectl apply -f - >/dev/null <<EOF
{"apiVersion": "apps/v1", "kind": "Deployment",
 "metadata": {"name": "latency", "namespace": "$ns", "labels": {"app": "bench-latency"}},
 "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "bench-latency"}},
  "template": {"metadata": {"labels": {"app": "bench-latency"}},
   "spec": {"nodeSelector": {"kubernetes.io/hostname": "$NODE_NAME"}, "terminationGracePeriodSeconds": 30,
    "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]}]}}}}
EOF
  policy "$ns" latency bench-latency Markers '{"exec": {"command": ["/bin/sh", "-c", "sleep 1"]}}'
  kubectl -n "$ns" wait deploy/latency --timeout=60s \
    --for=jsonpath='{.spec.template.spec.containers[0].lifecycle.preStop.exec.command[0]}'=/bin/sh >/dev/null
  kubectl -n "$ns" scale deploy/latency --replicas="$BENCH_LATENCY_PODS" >/dev/null
  kubectl -n "$ns" rollout status deploy/latency --timeout=600s >/dev/null
  log "latency: $BENCH_LATENCY_PODS pods running on $NODE_NAME"
  driver latency --ns "$ns" --deployment latency --policy latency --selector app=bench-latency >>"$results"
  gone() { [[ -z $(kubectl -n "$ns" get pods -o name) ]]; }
  wait_until 300 "pods gone" gone || die "the latency pods did not go away"
  kubectl -n "$ns" delete lcp latency --timeout=120s >/dev/null
  kubectl delete ns "$ns" --timeout=300s >/dev/null
  phase latency
fi

if part cluster; then
  measure_rss cluster.rss_empty_kib
  driver namespaces --prefix bench-cluster --count "$BENCH_CLUSTER_NAMESPACES" --per "$BENCH_CLUSTER_DEPLOYMENTS"
  measure_rss cluster.rss_base_kib
  driver speed --cluster --metrics "127.0.0.1:$port" --pid "$op_pid" --clk-tck "$(getconf CLK_TCK)" >>"$results"
  # The policy again, left in place: what a fresh operator holds for it.
  driver cluster-policy
  measure_rss cluster.rss_kib
  kubectl delete clcp -l "$BENCH_LABEL" --timeout=300s >/dev/null
  kubectl delete ns -l lifecycle-operator.io/bench-cluster=true --timeout=600s >/dev/null
  phase cluster
fi

if part admission; then
  ops=bench-admission-ops off=bench-admission-off on=bench-admission-on
  for n in "$ops" "$off" "$on"; do new_ns "$n"; done
  kubectl label ns "$on" lifecycle-operator.io/bench-admission=on >/dev/null
  # As the chart's, but at the operator on loopback, for the "on" namespace only.
  kubectl apply -f - >/dev/null <<EOF
{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
 "metadata": {"name": "bench-lco", "labels": {"$BENCH_LABEL": "true"}},
 "webhooks": [{"name": "workloads.lifecycle-operator.io",
   "clientConfig": {"url": "https://127.0.0.1:$webhook_port/mutate"},
   "rules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
              "resources": ["deployments", "statefulsets", "daemonsets"], "scope": "Namespaced"}],
   "namespaceSelector": {"matchLabels": {"lifecycle-operator.io/bench-admission": "on"}},
   "failurePolicy": "Ignore", "sideEffects": "None", "timeoutSeconds": 5,
   "reinvocationPolicy": "IfNeeded", "admissionReviewVersions": ["v1"]}]}
EOF
  fresh_operator --webhook-addr "127.0.0.1:$webhook_port" --webhook-ip 127.0.0.1 \
    --webhook-configuration bench-lco --webhook-secret bench-webhook-tls --operator-namespace "$ops"
  published() { [[ -n $(kubectl get mutatingwebhookconfiguration bench-lco -o jsonpath='{.webhooks[0].clientConfig.caBundle}') ]]; }
  wait_until 60 "the webhook's caBundle" published || die "the operator did not publish its CA"
  for n in "$off" "$on"; do policy "$n" bench bench Events '{"sleep": {"seconds": 1}}'; done
  for run in off on; do
    driver admission --run "$run" --ns "bench-admission-$run" --count "$BENCH_ADMISSION_DEPLOYMENTS" >>"$results"
    log "admission, webhook $run: $(grep "^admission\.$run\." "$results" | tr '\n' ' ')"
  done
  kubectl delete mutatingwebhookconfiguration bench-lco >/dev/null
  for n in "$off" "$on"; do kubectl -n "$n" delete lcp bench --timeout=300s >/dev/null; done
  kubectl delete ns "$ops" "$off" "$on" --timeout=300s >/dev/null
  phase admission
fi

# Drain: each case's Deployment restarted under load, one case after the
# other (tests/bench/drain.rs has the cases: none, docs, recommended, sleep).
drain_disagrees=0
if part drain; then
  fresh_operator
  drain_cases=(none docs recommended sleep)
  for c in "${drain_cases[@]}"; do new_ns "bench-drain-$c"; done
  driver drain-setup --cases "$(IFS=,; echo "${drain_cases[*]}")" --node "$NODE_NAME"
  # The old pods gone, only the new ones left.
  replaced() { [[ $(kubectl -n "$1" get pods -l bench-drain=web -o name | wc -l) -eq 3 ]]; }
  declare -A drain_before=() drain_done=()
  stop_file=$RUN_DIR/drain-load.stop
  for c in "${drain_cases[@]}"; do
    ns=bench-drain-$c
    ip=$(kubectl -n "$ns" get svc web -o jsonpath='{.spec.clusterIP}')
    before=$(kubectl -n "$ns" get lcp -o jsonpath='{.items[*].status.drain.observed}')
    drain_before[$c]=${before:-0}
    rm -f "$stop_file"
    # Bounded: it stops when told, or at its limit (a rollout takes well
    # under a minute; 120 s per restart is far beyond). The binary itself in
    # the background, so that $! is its pid (cleanup ends it).
    "$driver_bin" drain-load --case "$c" --ip "$ip" --port 80 --clients 8 \
      --seconds $((30 + 120 * BENCH_DRAIN_RESTARTS)) --stop-file "$stop_file" >>"$results" &
    drain_load_pid=$!
    sleep 2
    for ((i = 0; i < BENCH_DRAIN_RESTARTS; i++)); do
      kubectl -n "$ns" rollout restart deploy/web >/dev/null
      kubectl -n "$ns" rollout status deploy/web --timeout=120s >/dev/null ||
        die "drain: the restart of $ns did not complete"
      wait_until 60 "old pods gone" replaced "$ns" || die "drain: the old pods of $ns did not go away"
    done
    sleep 3
    touch "$stop_file"
    wait "$drain_load_pid" || die "drain: the load generator failed"
    drain_load_pid=
    drain_done[$c]=$SECONDS
  done
  # The verdicts, each waited for at most 60 s after its own rollout (the
  # later cases' loads ran meanwhile).
  for c in "${drain_cases[@]}"; do
    [[ $c == none ]] && continue
    failed=$(awk -v k="drain.$c.failed" '$1 == k {print $2}' "$results")
    left=$((60 - (SECONDS - drain_done[$c])))
    driver drain-status --case "$c" --expect $((drain_before[$c] + 3 * BENCH_DRAIN_RESTARTS)) \
      --failed "$failed" --timeout-seconds $((left > 0 ? left : 0)) >>"$results"
    if grep -q "^drain\.$c\.agrees no" "$results"; then
      log "drain: DISAGREES: $(awk -v k="drain.$c.disagrees" '$1 == k {$1 = ""; print substr($0, 2)}' "$results")"
      drain_disagrees=1
    fi
    # A hooked case must get a verdict: the operator times every replaced pod.
    if grep -q "^drain\.$c\.agrees unjudged" "$results"; then
      log "drain: $c: no DrainSafe verdict (True or False) within 60 s of its rollout"
      drain_disagrees=1
    fi
  done
  for c in docs recommended sleep; do kubectl -n "bench-drain-$c" delete lcp drain --timeout=120s >/dev/null; done
  kubectl delete ns "${drain_cases[@]/#/bench-drain-}" --timeout=300s >/dev/null
  phase drain
fi

if part rss; then
  start_kwok
  nodes=$(kwok_nodes | paste -sd,)
  measure_rss rss.empty_kib

  ns=bench-rss
  new_ns "$ns"
  driver pods --ns "$ns" --count "$BENCH_PODS" --nodes "$nodes" --name pod
  result rss.pods "$BENCH_PODS"
  measure_rss rss.pods_kib

  # A Deployment on the kwok nodes that a policy hooks (verified by events:
  # there are no logs to read), and pods with its template.
  kubectl apply -f - >/dev/null <<EOF
{"apiVersion": "apps/v1", "kind": "Deployment",
 "metadata": {"name": "hooked", "namespace": "$ns", "labels": {"app": "bench-hooked"}},
 "spec": {"replicas": 0, "selector": {"matchLabels": {"bench-deployment": "hooked"}},
  "template": {"metadata": {"labels": {"bench-deployment": "hooked"}},
   "spec": {"nodeSelector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
    "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}}}
EOF
  policy "$ns" hooked bench-hooked Events '{"sleep": {"seconds": 1}}'
  kubectl -n "$ns" wait deploy/hooked --timeout=60s \
    --for=jsonpath='{.spec.template.spec.containers[0].lifecycle.preStop.sleep.seconds}'=1 >/dev/null
  driver pods --ns "$ns" --count "$BENCH_HOOKED_PODS" --nodes "$nodes" --template-from hooked --name hooked
  result rss.hooked "$BENCH_HOOKED_PODS"
  measure_rss rss.hooked_kib

  new_ns bench-rss-deployments
  driver deployments --ns bench-rss-deployments --count "$BENCH_RSS_DEPLOYMENTS"
  result rss.deployments "$BENCH_RSS_DEPLOYMENTS"
  measure_rss rss.deployments_kib

  # The hooked kwok pods were tracked as hooked: deleting some must show on
  # the policy's status (their preStop counted, from events and states).
  mapfile -t some < <(kubectl -n "$ns" get pods -l bench-pod=hooked -o name | head -10)
  kubectl -n "$ns" delete "${some[@]}" --wait=false >/dev/null
  counted() {
    local n
    n=$(kubectl -n "$ns" get lcp hooked -o json |
      jq '.status.preStop // {} | [.ran, .failed, .timedOut, .notTriggered, .unknown] | map(. // 0) | add')
    ((n >= ${#some[@]}))
  }
  wait_until 120 "hooked pods counted" counted ||
    die "the operator did not count the preStop of deleted kwok pods: it does not track them as hooked"
  log "the operator counted the preStop of ${#some[@]} deleted kwok pods: $(kubectl -n "$ns" get lcp hooked -o jsonpath='{.status.preStop.summary}')"
  phase rss
fi

if part contention; then
  driver contention --policies "$BENCH_CONTENTION_POLICIES" --workloads "$BENCH_CONTENTION_WORKLOADS" >>"$results"
  phase contention
fi

driver table "$results" | tee "$out/table.md"
echo
grep '^phase\.' "$results" | sed 's/^phase\./time: /; s/_s / /; s/$/ s/'
((drain_disagrees == 0)) ||
  die "drain: a DrainSafe verdict DISAGREES with the requests its load dropped, or is missing (see the table)"
