#!/usr/bin/env bash
# Checks that this machine can host the test cluster. Prints every missing
# piece and exits non-zero if anything is missing: it never skips a check.
# Called first by up.sh; safe to run on its own (it creates nothing that
# outlives it: test bridges/chains/mounts are removed before it returns).
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

failures=()
fail() { failures+=("$*"); }

check_root() { [[ $EUID -eq 0 ]] || fail "must run as root (uid is $EUID)"; }

check_commands() {
  local c
  for c in "${REQUIRED_CMDS[@]}"; do
    command -v "$c" >/dev/null || fail "command not found: $c (run hack/cluster/install-deps.sh)"
  done
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback && -x /usr/lib/cni/portmap ]] ||
    fail "CNI plugins missing in /usr/lib/cni (package containernetworking-plugins)"
  # go is needed only when the Kubernetes binaries are not cached yet.
  if [[ ! -f $BIN_CACHE/.complete ]] && ! command -v go >/dev/null; then
    fail "command not found: go (needed to build Kubernetes $K8S_VERSION into $BIN_CACHE)"
  fi
}

check_cgroups() {
  local c missing=()
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    # Pure cgroup v2 host.
    for c in cpu cpuset memory pids; do
      grep -qw "$c" /sys/fs/cgroup/cgroup.controllers || missing+=("$c")
    done
  else
    # cgroup v1 (possibly hybrid): each controller must be mounted somewhere.
    for c in cpu cpuacct cpuset memory devices freezer pids; do
      # mountinfo: "... - FSTYPE SOURCE SUPEROPTS"; the optional fields before "-" vary.
      sed 's/.* - //' /proc/self/mountinfo |
        awk -v c="$c" '$1=="cgroup" { n=split($3,o,","); for(i=1;i<=n;i++) if(o[i]==c) f=1 } END{exit !f}' ||
        missing+=("$c")
    done
  fi
  ((${#missing[@]} == 0)) || fail "cgroup controllers not mounted: ${missing[*]}"
}

check_overlayfs() {
  grep -qw overlay /proc/filesystems || { fail "overlayfs not supported by the kernel"; return; }
  local d
  d=$(mktemp -d)
  mkdir -p "$d"/{l,u,w,m}
  if mount -t overlay overlay -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m" 2>/dev/null; then
    umount "$d/m"
  else
    fail "cannot mount an overlay filesystem"
  fi
  rm -rf "$d"
}

check_network() {
  local br=lcopf$$ ; br=${br:0:15}
  if ip link add "$br" type bridge 2>/dev/null; then
    ip link del "$br"
  else
    fail "cannot create a bridge interface (CONFIG_BRIDGE)"
  fi
  if ip link add lcopfa$$ type veth peer name lcopfb$$ 2>/dev/null; then
    ip link del lcopfa$$
  else
    fail "cannot create a veth pair (CONFIG_VETH)"
  fi
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] ||
    fail "br_netfilter not available (/proc/sys/net/bridge/bridge-nf-call-iptables missing)"
  [[ -w /proc/sys/net/ipv4/ip_forward ]] || fail "cannot write net.ipv4.ip_forward"
  [[ -e /dev/kmsg ]] || fail "/dev/kmsg missing (kubelet's OOM watcher reads it)"
}

# kube-proxy and the CNI plugins call plain `iptables`; try the matches and
# targets they use in a scratch chain.
check_iptables() {
  command -v iptables >/dev/null || return 0
  local ch=LCO-PREFLIGHT-$$ ok=1
  iptables -w -t nat -N "$ch" 2>/dev/null || { fail "iptables: cannot create a nat chain ($(iptables -V 2>&1))"; return; }
  iptables -w -t nat -A "$ch" -m comment --comment preflight -m statistic --mode random --probability 0.5 -j RETURN 2>/dev/null || ok=0
  iptables -w -t nat -A "$ch" -m mark --mark 0x4000/0x4000 -m conntrack --ctstate NEW -j MASQUERADE 2>/dev/null || ok=0
  iptables -w -t nat -A "$ch" -p tcp -m addrtype --dst-type LOCAL -j DNAT --to-destination 127.0.0.1:1 2>/dev/null || ok=0
  iptables -w -t nat -F "$ch"; iptables -w -t nat -X "$ch"
  iptables -w -t filter -N "$ch" 2>/dev/null || ok=0
  iptables -w -t filter -A "$ch" -m physdev --physdev-is-in -j REJECT 2>/dev/null || ok=0
  iptables -w -t filter -F "$ch" 2>/dev/null; iptables -w -t filter -X "$ch" 2>/dev/null
  ((ok)) || fail "iptables ($(iptables -V 2>&1)) lacks a match/target kube-proxy needs (comment, statistic, mark, conntrack, addrtype, physdev, DNAT, MASQUERADE, REJECT)"
}

# A port held by a process that is not ours means up.sh would fail later in a
# confusing way; say so now.
check_ports() {
  local port pids pid ours
  ours=$(cat "$RUN_DIR"/*.pid 2>/dev/null || true)
  for port in 5000 2379 2380 "$APISERVER_PORT" 10248 10249 10250 10256 10257 10259; do
    pids=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true)
    for pid in $pids; do
      grep -qx "$pid" <<<"$ours" || fail "TCP port $port is in use by pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-80))"
    done
  done
}

# The kubelet taints the node with DiskPressure under 1% free (evictionHard in
# up.sh), and then no pod starts. Ask for 2 GiB above that.
check_disk() {
  local dir=${STATE_ROOT%/*} size avail floor
  read -r size avail < <(df --output=size,avail -B1M "$dir" | tail -1)
  floor=$((size / 100 + 2048))
  ((avail >= floor)) ||
    fail "$((avail / 1024)) GiB free on the disk of $dir; the cluster needs $((floor / 1024)) GiB (the kubelet's 1% DiskPressure floor + 2 GiB)"
}

check_root
check_commands
check_disk
if [[ $EUID -eq 0 ]]; then
  check_cgroups
  check_overlayfs
  check_network
  check_iptables
  check_ports
fi

if ((${#failures[@]})); then
  printf '[preflight] FAILED: %s\n' "${failures[@]}" >&2
  exit 1
fi
log "preflight ok"
