# shellcheck shell=bash disable=SC2034 # variables are used by the scripts that source this file
# The one shell library (hack/ and tests/): paths (the kubeconfig is named here and
# nowhere else), the cluster's kubectl and helm, logging, polling, process
# control, and the `ok`/`not ok` check helpers of the test scripts. Sourced
# by every script under hack/ and tests/, not run.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# One module per Kubernetes minor under hack/k8s/<minor>/; K8S_VERSION (a minor,
# e.g. `K8S_VERSION=1.37 make cluster-up`) picks one; by default K8S_DEFAULT.
# The pin in that go.mod is the single source of truth for the version.
K8S_VERSIONS=(1.37 1.32)            # newest first; the last is the oldest supported
K8S_NEWEST=${K8S_VERSIONS[0]}
K8S_OLDEST=${K8S_VERSIONS[-1]}
# (A full version such as v1.32.13, which this file exports below, names its minor.)
# `make test` runs on the newest; `make test-compat` on the oldest.
K8S_DEFAULT=$K8S_NEWEST
K8S_MINOR=${K8S_VERSION:-$K8S_DEFAULT}
K8S_MINOR=${K8S_MINOR#v}
K8S_MINOR=$(cut -d. -f1,2 <<<"$K8S_MINOR")
K8S_MODULE_DIR="$REPO_ROOT/hack/k8s/$K8S_MINOR"
[[ -f $K8S_MODULE_DIR/go.mod ]] ||
  { printf '[cluster] ERROR: K8S_VERSION=%s: no hack/k8s/%s/go.mod (have: %s)\n' "$K8S_MINOR" "$K8S_MINOR" "${K8S_VERSIONS[*]}" >&2; exit 1; }
K8S_VERSION=$(awk '$1=="k8s.io/kubernetes"{print $2; exit}' "$K8S_MODULE_DIR/go.mod")
# containerd: Debian's 1.6 (CRI v1) is enough for kubelet 1.32; 1.36+ need
# containerd 2.2+ (containerd's RELEASES.md support table), built from its Go
# module. Empty: Debian's. The version is a pin in hack/k8s/<minor>/containerd.
CONTAINERD_VERSION=$(cat "$K8S_MODULE_DIR/containerd" 2>/dev/null || true)
# Modules from the proxy need no newer Go than the machine's 1.26.8 today; set
# GOTOOLCHAIN here (and in the README) if a pin ever asks for one.
# helm v3 (v3.21.4, the newest approved here): helm v4's server-side apply
# conflicts with this chart's upgrades and adoptions (README: Kubernetes versions).
HELM_VERSION=v3.21.4
CACHE_ROOT=${LCO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lifecycle-operator}
# Rebuild only when the pin, the module sums or the build recipe change.
BUILD_KEY=$(cat "$K8S_MODULE_DIR/go.mod" "$K8S_MODULE_DIR/go.sum" "$REPO_ROOT/hack/cluster/build.sh" \
  <(echo "$CONTAINERD_VERSION") | sha256sum | cut -c1-12)
BIN_CACHE="$CACHE_ROOT/k8s-$K8S_VERSION-$BUILD_KEY/bin"
# helm does not depend on the cluster's version: one build for all of them.
HELM_KEY=$( { echo "$HELM_VERSION"; sed -n '/^build_helm()/,/^}/p' "$REPO_ROOT/hack/cluster/build.sh"; } | sha256sum | cut -c1-12)
HELM_CACHE="$CACHE_ROOT/helm-$HELM_VERSION-$HELM_KEY/bin"

CLUSTER_DIR="$REPO_ROOT/target/cluster"
CLUSTER_BIN="$CLUSTER_DIR/bin"
KUBECONFIG_PATH="$CLUSTER_DIR/kubeconfig"

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# ---- Runtime layout (used by up.sh / down.sh / selftest.sh) ----
# Per-checkout, throwaway state lives under target/cluster; state worth keeping
# across runs (image store, kubelet root with its mounts) lives outside the repo
# so `cargo clean` never walks into mounted tmpfs volumes.
RUN_DIR="$CLUSTER_DIR/run"          # NAME.pid for every process up.sh starts
LOG_DIR="$CLUSTER_DIR/logs"         # NAME.log for the same
PKI_DIR="$CLUSTER_DIR/pki"
CONF_DIR="$CLUSTER_DIR/config"
# The state of each version apart (etcd cannot open a newer minor's data, a
# kubelet or containerd another one's store), so a switch of K8S_VERSION never
# mixes them and switching back finds its own cluster again.
ETCD_DATA="$CLUSTER_DIR/etcd-$K8S_MINOR"
STATE_ROOT=/var/lib/lifecycle-operator
RUNTIME_ROOT=/run/lifecycle-operator
CONTAINERD_ROOT="$STATE_ROOT/containerd-$K8S_MINOR"
CONTAINERD_STATE="$RUNTIME_ROOT/containerd"
CONTAINERD_SOCK="$CONTAINERD_STATE/containerd.sock"
KUBELET_ROOT="$STATE_ROOT/kubelet-$K8S_MINOR"
POD_LOGS="$STATE_ROOT/pod-logs-$K8S_MINOR"
CNI_STATE="$STATE_ROOT/cni"         # host-local IPAM leases
REGISTRY_DATA="$CACHE_ROOT/registry"
REGISTRY_ADDR=127.0.0.1:5000

# ---- Network ----
NODE_NAME=lco-node
BRIDGE=lcobr0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/24
KUBERNETES_SVC_IP=10.96.0.1
APISERVER_PORT=6443
EGRESS_CHAIN=LCO-EGRESS-GUARD
GUARD_TABLE=244        # policy-routing table for traffic arriving from pods
GUARD_RULE_PREF=100

# Every tool the scripts call; preflight.sh checks them.
REQUIRED_CMDS=(containerd containerd-shim-runc-v2 runc ctr docker-registry skopeo debootstrap
  iptables ip6tables conntrack socat ethtool ebtables jq openssl curl gcc tar gzip sha256sum
  setsid flock ip ss mount umount findmnt sysctl busybox)

export KUBECONFIG=$KUBECONFIG_PATH
kubectl() { "$CLUSTER_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
helm() { "$CLUSTER_BIN/helm" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
# Linters and helm-docs, built by hack/tools/install-lint-tools.sh.
TOOLS_BIN="$CACHE_ROOT/tools/bin"

# go_tool NAME MODULE/CMD VERSION [DEST]: builds a Go command once per version
# with `go install` into DEST (default TOOLS_BIN/NAME-VERSION).
go_tool() {
  local name=$1 pkg=$2 version=$3 dest=${4:-$TOOLS_BIN/$1-$3}
  [[ -x $dest ]] && return 0
  command -v go >/dev/null || die "go is required to build $name"
  log "building $name $version (go install)"
  local tmp
  tmp=$(mktemp -d)
  CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "$pkg@$version"
  mkdir -p "${dest%/*}"
  mv "$tmp/$name" "$dest"
  rmdir "$tmp"
}
# The containerd binaries of this version: built (CONTAINERD_VERSION) or Debian's.
if [[ -n $CONTAINERD_VERSION ]]; then CONTAINERD_BIN_DIR=$BIN_CACHE; else CONTAINERD_BIN_DIR=/usr/bin; fi
# The minor of the cluster this checkout last brought up (up.sh writes it,
# down.sh stops that one whatever K8S_VERSION says).
UP_VERSION_FILE="$CLUSTER_DIR/up-version"
# node_pressure: the node's pressure conditions that are True (DiskPressure,
# MemoryPressure, PIDPressure), with the kubelet's message; empty when none.
node_pressure() {
  kubectl get node "$NODE_NAME" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}: {.message}{"\n"}{end}' 2>/dev/null |
    grep Pressure | tr '\n' ' ' || true
}
ctr_() { "$CONTAINERD_BIN_DIR/ctr" --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# pid_alive NAME: true when run/NAME.pid names a live process running the
# binary we expect (guards against a recycled pid after a crash or reboot).
pid_alive() {
  local name=$1 pidf="$RUN_DIR/$1.pid" pid exe
  [[ -s $pidf ]] || return 1
  pid=$(<"$pidf")
  [[ $pid =~ ^[0-9]+$ ]] && [[ -d /proc/$pid ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ $(basename "${exe% (deleted)}") == "$(<"$RUN_DIR/$name.bin")" ]]
}

# start_proc NAME CMD ARGS...: starts CMD in its own session (so it outlives
# the caller and is never hit by the caller's job-control signals), output to
# logs/NAME.log, pid to run/NAME.pid. If NAME is already running with the same
# command line and config (START_SPEC_FILES: config files whose contents count),
# it is left alone; if its command line or config changed, it is restarted.
start_proc() {
  local name=$1 spec
  shift
  # shellcheck disable=SC2086 # START_SPEC_FILES is a space-separated list of paths
  spec=$({ printf '%s\n' "$@"; cat ${START_SPEC_FILES:-} /dev/null; } | sha256sum | cut -c1-16)
  if pid_alive "$name"; then
    [[ -f $RUN_DIR/$name.spec && $(<"$RUN_DIR/$name.spec") == "$spec" ]] && return 0
    log "$name: configuration changed, restarting"
    stop_proc "$name"
  fi
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  basename "$(readlink -f "$(command -v "$1")")" >"$RUN_DIR/$name.bin"
  echo "$spec" >"$RUN_DIR/$name.spec"
  rm -f "$RUN_DIR/$name.pid"
  printf '\n==== %s starting %s\n' "$(date -Is)" "$*" >>"$LOG_DIR/$name.log"
  # The inner shell writes its own pid and then execs, so the pid file names the
  # daemon itself whether or not setsid had to fork.
  # 9>&-: the daemon must not inherit the cluster lock (see cluster_lock).
  # Every descriptor above 2 is closed too: `flock FILE cmd` keeps FILE on fd 3
  # for cmd and all it starts, so a restarted API server would hold a lock forever.
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid bash -c 'echo $$ >"$0"; for fd in /proc/$$/fd/*; do fd=${fd##*/}; ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null; done; exec "$@"' "$RUN_DIR/$name.pid" "$@" \
    </dev/null >>"$LOG_DIR/$name.log" 2>&1 9>&- &
  local i
  for i in $(seq 50); do [[ -s $RUN_DIR/$name.pid ]] && break; sleep 0.1; done
  log "started $name (pid $(<"$RUN_DIR/$name.pid"))"
}

# running PID: the process exists and is not a zombie.
running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# stop_procs GRACE_SECONDS NAME...: TERM to all of them at once, wait up to
# GRACE_SECONDS for them to exit, KILL what is left; removes their pid files.
stop_procs() {
  local grace=$1 name pid i alive
  shift
  local -A pid_of=()
  for name in "$@"; do
    if pid_alive "$name"; then
      pid_of[$name]=$(<"$RUN_DIR/$name.pid")
      kill -TERM "${pid_of[$name]}" 2>/dev/null || true
    fi
  done
  for ((i = 0; i < grace * 10; i++)); do
    alive=0
    for pid in "${pid_of[@]}"; do running "$pid" && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for name in "${!pid_of[@]}"; do
    pid=${pid_of[$name]}
    if running "$pid"; then
      log "$name (pid $pid) ignored TERM for ${grace}s, sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do running "$pid" || break; sleep 0.1; done
    fi
    log "stopped $name (pid $pid)"
  done
  for name in "$@"; do rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.spec"; done
}
stop_proc() { stop_procs 15 "$1"; }

# wait_until TIMEOUT DESCRIPTION CMD...: polls CMD every 0.5 s.
wait_until() {
  local timeout=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

# cluster_lock: one up.sh/down.sh at a time (e.g. parallel test jobs that all
# call up.sh). Held on fd 9 until the script exits.
cluster_lock() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/.lock"
  if ! flock -n 9; then
    log "waiting for another up.sh/down.sh to finish"
    flock -w 1800 9 || die "timed out waiting for $RUN_DIR/.lock"
  fi
}

# until_ok TIMEOUT CMD...: polls CMD every second until it succeeds (quietly).
until_ok() {
  local t=$1 end
  shift
  end=$((SECONDS + t))
  until "$@"; do
    ((SECONDS < end)) || return 1
    sleep 1
  done
}

# ---- Checks: `ok - NAME` / `not ok - NAME: REASON`, counted ----
PASSED=0 FAILED=0 REASON=""
CHECK_LOG=${CHECK_LOG:-$REPO_ROOT/target/last-check.log}
mkdir -p "${CHECK_LOG%/*}"
ok() { echo "ok - $1"; PASSED=$((PASSED + 1)); }
not_ok() { echo "not ok - $1${2:+: $2}"; FAILED=$((FAILED + 1)); }
# fail REASON: for check functions, the reason `check` prints.
fail() { REASON=$*; return 1; }
# check NAME CMD...: runs CMD (a command or function) in this shell; on
# failure prints REASON if CMD set one, else the last lines of its output.
check() {
  local name=$1
  shift
  REASON=""
  if "$@" >"$CHECK_LOG" 2>&1; then
    ok "$name"
  else
    not_ok "$name" "${REASON:-$(tail -3 "$CHECK_LOG" | tr '\n' ' ')}"
  fi
}
# report LABEL: the summary line; false when a check failed.
report() {
  echo "$1: $PASSED passed, $FAILED failed"
  ((FAILED == 0))
}

# The last commit whose CRD came from the chart's crds/ folder (never
# upgraded by Helm), with `verification: Off`: tests/e2e.sh's upgrade test
# installs it first, and tests/chart.sh checks that the YAML 1.1 test catches
# its `Off`.
PREV_CRD_COMMIT=4e47aad

# adopt_crd RELEASE NAMESPACE: a CRD that `kubectl apply -f crds/` (the
# cluster tests) or chart 0.1.0's crds/ folder installed is handed to the Helm
# release, which renders the CRD from a template since 0.2.0 (README: upgrading).
adopt_crd() {
  local crd
  for crd in lifecyclepolicies.lifecycle-operator.io clusterlifecyclepolicies.lifecycle-operator.io; do
    kubectl get crd "$crd" >/dev/null 2>&1 || continue
    kubectl label crd "$crd" app.kubernetes.io/managed-by=Helm --overwrite >/dev/null
    kubectl annotate crd "$crd" meta.helm.sh/release-name="$1" meta.helm.sh/release-namespace="$2" --overwrite >/dev/null
  done
}

# The operator binary as the image ships it: static, release, jemalloc inside.
# Prints its path. hack/image.sh packs it; chaos runs it, so that its timing
# limits hold for the product, not for a debug build.
IMAGE_TARGET=x86_64-unknown-linux-gnu
build_image_binary() {
  # glibc's static libraries come with libc6-dev; the rustup musl target is
  # not reachable from here, and a static glibc binary needs no DNS (it dials
  # the API server's IP from KUBERNETES_SERVICE_HOST).
  (cd "$REPO_ROOT" && RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --quiet --release --locked --target "$IMAGE_TARGET" --bin lifecycle-operator) >&2
  echo "$REPO_ROOT/target/$IMAGE_TARGET/release/lifecycle-operator"
}
