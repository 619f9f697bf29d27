#!/usr/bin/env bash
# Stops the test cluster: every process up.sh started (by the pids in
# target/cluster/run), every container it ran, the mounts and network
# namespaces they left, the bridge, the iptables rules, and restores the
# sysctls up.sh changed. Idempotent: safe to run when nothing is up or after
# a crash.
#
#   down.sh            keep cluster state (etcd data, kubelet dir) for the next up.sh
#   down.sh --purge    also wipe etcd data and the kubelet dir (next up.sh starts a
#                      fresh cluster); images, registry, certs and binaries stay cached
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
[[ $EUID -eq 0 ]] || die "must run as root"
PURGE=0
case ${1:-} in
  --purge) PURGE=1 ;;
  "") ;;
  *) die "usage: down.sh [--purge]" ;;
esac
# Stop the cluster this checkout brought up, whichever K8S_VERSION is set now.
if [[ -s $UP_VERSION_FILE && $(<"$UP_VERSION_FILE") != "$K8S_MINOR" ]]; then
  log "the cluster up is Kubernetes $(<"$UP_VERSION_FILE"), not $K8S_MINOR: stopping that one"
  K8S_VERSION=$(<"$UP_VERSION_FILE") exec bash "$0" "$@"
fi
RUNC_ROOT="$CONTAINERD_STATE/runc/k8s.io"

# Kubernetes first, so nothing restarts the containers we remove next.
# The apiserver may wait on open watches (e.g. a test's operator): 10 s is plenty.
stop_kubernetes() {
  stop_procs 10 kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver
  stop_procs 10 etcd
}

# Removes all containers of containerd's k8s.io namespace. Through containerd
# when it is alive (that also drops the CRI's records, so the next kubelet starts
# from a clean runtime); through runc directly for anything left, e.g. after
# containerd crashed.
remove_containers() {
  local id
  if pid_alive containerd && "$CONTAINERD_BIN_DIR/ctr" --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; then
    for id in $(ctr_ tasks ls -q 2>/dev/null); do
      ctr_ tasks delete --force "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr_ containers ls -q 2>/dev/null); do
      ctr_ containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  if [[ -d $RUNC_ROOT ]]; then
    for id in $(runc --root "$RUNC_ROOT" list -q 2>/dev/null); do
      runc --root "$RUNC_ROOT" kill "$id" KILL 2>/dev/null || true
      runc --root "$RUNC_ROOT" delete --force "$id" 2>/dev/null || true
    done
  fi
}

# The runc shims our containerd spawned re-parent to init; they carry our
# socket address on their command line, which is how we know they are ours.
kill_shims() {
  local p cmd pids=()
  for p in /proc/[0-9]*; do
    cmd=$( { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null) || continue
    [[ $cmd == *containerd-shim* && $cmd == *" $CONTAINERD_SOCK "* ]] && pids+=("${p#/proc/}")
  done
  ((${#pids[@]})) || return 0
  log "killing ${#pids[@]} leftover containerd shim(s): ${pids[*]}"
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

# Unmounts everything mounted under the given directories, deepest first.
unmount_under() {
  local dir mnt
  for dir in "$@"; do
    # mountinfo field 5 is the mount point, with spaces as \040.
    awk '{print $5}' /proc/self/mountinfo | sed 's/\\040/ /g' | { grep -E "^$dir(/|$)" || true; } |
      awk '{print length, $0}' | sort -rn | cut -d' ' -f2- |
      while IFS= read -r mnt; do
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || log "could not unmount $mnt"
      done
  done
}

# Network namespaces the CRI created for our pods: those whose eth0 is the
# peer of a veth on our bridge.
remove_pod_netns() {
  local ns peer attached
  ip link show "$BRIDGE" >/dev/null 2>&1 || return 0
  # "\nINDEX: NAME@...": the host ends of the veths on our bridge.
  attached=$'\n'$(ip -o link show master "$BRIDGE" 2>/dev/null)
  for ns in /run/netns/cni-*; do
    [[ -e $ns ]] || continue
    peer=$(ip -n "$(basename "$ns")" -o link show eth0 2>/dev/null | sed -n 's/^[0-9]*: eth0@if\([0-9]*\):.*/\1/p')
    [[ -n $peer ]] || continue
    [[ $attached == *$'\n'"$peer: "* ]] || continue
    umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
    rm -f "$ns"
  done
}

clean_network() {
  # kube-proxy's own cleanup removes every KUBE-* rule it created.
  if [[ -x $BIN_CACHE/kube-proxy ]]; then
    "$BIN_CACHE/kube-proxy" --cleanup >"$LOG_DIR/kube-proxy-cleanup.log" 2>&1 || true
  fi
  # What it leaves (KUBE-FIREWALL, KUBE-MARK-MASQ, canaries, hints) and the
  # kubelet's canaries: every KUBE-* chain belongs to this cluster, the only
  # Kubernetes on the machine. Unhook them from the built-in chains, then drop them.
  local t ipt rule chain
  for ipt in iptables ip6tables; do
    for t in mangle nat filter; do
      { "$ipt" -w -t "$t" -S 2>/dev/null || true; } |
        { grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j KUBE-' || true; } |
        while IFS= read -r rule; do
          # -S prints rules in the syntax -D accepts (quoted comments included).
          eval "\"\$ipt\" -w -t \"\$t\" -D ${rule#-A }" 2>/dev/null || true
        done
      for chain in $("$ipt" -w -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
        "$ipt" -w -t "$t" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$ipt" -w -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
        "$ipt" -w -t "$t" -X "$chain" 2>/dev/null || true
      done
    done
  done
  while ip rule del pref "$GUARD_RULE_PREF" 2>/dev/null; do :; done
  ip route flush table "$GUARD_TABLE" 2>/dev/null || true
  ip route del "$SERVICE_CIDR" dev "$BRIDGE" 2>/dev/null || true
  while iptables -w -D FORWARD -j "$EGRESS_CHAIN" 2>/dev/null; do :; done
  { iptables -w -F "$EGRESS_CHAIN" && iptables -w -X "$EGRESS_CHAIN"; } 2>/dev/null || true
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link del "$BRIDGE"
    log "deleted bridge $BRIDGE"
  fi
  # host-local IPAM leases and libcni's result cache of our network.
  rm -rf "${CNI_STATE:?}/networks"
  rm -f /var/lib/cni/results/lco-pods-*
}

restore_host() {
  local line
  if [[ -f $RUN_DIR/sysctl.orig ]]; then
    while IFS= read -r line; do
      if [[ $line == *=* ]]; then sysctl -qw "${line// /}" 2>/dev/null || true; fi
    done <"$RUN_DIR/sysctl.orig"
    rm -f "$RUN_DIR/sysctl.orig"
  fi
  # Symlinks the kubelet made in /var/log/containers into our pod log dir.
  find /var/log/containers -maxdepth 1 -type l -lname "$STATE_ROOT/*" -delete 2>/dev/null || true
  # Empty pod cgroups the kubelet created (best effort: busy ones stay).
  find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods -depth -type d -exec rmdir {} + 2>/dev/null || true
}

# Cleanup is best effort: a failing step is reported and the next one still runs.
step() { "$@" || log "down: step '$*' failed, continuing"; }

# What must be gone when down.sh returns.
verify_down() {
  local left=() p cmd
  for p in "$RUN_DIR"/*.pid; do [[ -e $p ]] && left+=("process $(basename "$p" .pid) (pid $(<"$p"))"); done
  for p in /proc/[0-9]*; do
    cmd=$( { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null) || continue
    [[ $cmd == *containerd-shim* && $cmd == *" $CONTAINERD_SOCK "* ]] && left+=("shim pid ${p#/proc/}")
  done
  ip link show "$BRIDGE" >/dev/null 2>&1 && left+=("bridge $BRIDGE")
  grep -qE " ($KUBELET_ROOT|$RUNTIME_ROOT)[/ ]" /proc/self/mountinfo && left+=("mounts under $KUBELET_ROOT or $RUNTIME_ROOT")
  ((${#left[@]} == 0)) || die "still present after down: ${left[*]}"
}

main() {
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  cluster_lock
  step stop_kubernetes
  step remove_containers
  step stop_proc containerd
  step kill_shims
  step remove_containers # anything runc still lists once the shims are gone
  step remove_pod_netns
  step unmount_under "$KUBELET_ROOT" "$RUNTIME_ROOT" "$CONTAINERD_ROOT"
  step clean_network
  step stop_proc registry
  step restore_host
  if ((PURGE)); then
    log "purging cluster state (etcd data, kubelet dir, pod logs)"
    rm -rf --one-file-system "${ETCD_DATA:?}" "${KUBELET_ROOT:?}" "${POD_LOGS:?}"
  fi
  verify_down
  rm -f "$UP_VERSION_FILE"
  log "cluster down (Kubernetes $K8S_MINOR)"
}

main "$@"
