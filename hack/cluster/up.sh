#!/usr/bin/env bash
# Brings up the single-node test cluster (see README.md). Idempotent: it first
# clears what a crashed run left behind, then starts only what is not running,
# so it is fast when the cluster is already up. Ends when the API server is
# ready, the node is Ready and the default ServiceAccount exists; the admin
# kubeconfig is target/cluster/kubeconfig.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
HERE="$REPO_ROOT/hack/cluster"
T0=$SECONDS
phase() { log "$* (+$((SECONDS - T0))s)"; }

# Kernel settings up.sh or the kubelet change; down.sh restores the values
# recorded on the first run.
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables kernel.panic kernel.panic_on_oops
  vm.overcommit_memory vm.panic_on_oom kernel.keys.root_maxkeys kernel.keys.root_maxbytes
  fs.inotify.max_user_instances)
# Every followed container log costs the kubelet an inotify instance; at the
# usual default of 128, follows beyond that fail ("failed to create fsnotify
# watcher"), e.g. when a hundred hooked pods stop at once.
INOTIFY_INSTANCES=8192

# Drop pid files of processes that are gone (crash, reboot, kill -9).
clear_stale() {
  local f name
  mkdir -p "$RUN_DIR" "$LOG_DIR" "$CONF_DIR"
  for f in "$RUN_DIR"/*.pid; do
    [[ -e $f ]] || continue
    name=$(basename "$f" .pid)
    if ! pid_alive "$name"; then
      log "clearing stale pid file of $name"
      rm -f "$f" "$RUN_DIR/$name.spec"
    fi
  done
}

setup_host() {
  # Kubelet and containerd expect mount events to propagate (HostToContainer /
  # Bidirectional volumes); Debian without systemd leaves / private.
  [[ $(findmnt -no PROPAGATION /) == shared ]] || mount --make-rshared /
  if [[ ! -f $RUN_DIR/sysctl.orig ]]; then
    sysctl -e "${SYSCTLS[@]}" >"$RUN_DIR/sysctl.orig" 2>/dev/null || true
  fi
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  if (($(sysctl -n fs.inotify.max_user_instances) < INOTIFY_INSTANCES)); then
    sysctl -qw fs.inotify.max_user_instances=$INOTIFY_INSTANCES
  fi

  # The node's network: a bridge we own; 10.244.0.1 is the node IP. Nothing
  # routes from it to the outside (no masquerade, egress guard below).
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  # (No `| grep -q` under pipefail: an early grep exit fails the pipeline.)
  [[ $(ip -o -4 addr show dev "$BRIDGE") == *" $NODE_IP/24 "* ]] || ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up

  # Egress guard, two independent layers, so that neither a flushed iptables
  # chain nor a stopped kube-proxy lets a pod packet reach the real network.
  # 1. Routing: packets that arrive from the bridge and are not for a local
  #    address are routed with a table that knows only the pod subnet; anything
  #    else (outside world, an un-DNAT'ed service IP) is unreachable. DNAT to a
  #    pod or the node happens before routing, so services still work.
  ip route replace "$POD_CIDR" dev "$BRIDGE" table "$GUARD_TABLE"
  ip route replace unreachable default table "$GUARD_TABLE"
  [[ $(ip rule show pref "$GUARD_RULE_PREF") == *"lookup $GUARD_TABLE"* ]] ||
    ip rule add pref "$GUARD_RULE_PREF" from "$POD_CIDR" iif "$BRIDGE" lookup "$GUARD_TABLE"
  #    The host's own traffic to a service IP goes to the bridge, never to the
  #    default route, even when kube-proxy's DNAT is missing.
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
  # 2. Filtering: pods may talk to each other, to the node and (after DNAT) to
  #    services, never to anything beyond 10.244.0.0/24. Kept first in FORWARD.
  iptables -w -N "$EGRESS_CHAIN" 2>/dev/null || true
  iptables -w -F "$EGRESS_CHAIN"
  iptables -w -A "$EGRESS_CHAIN" -s "$POD_CIDR" ! -d "$POD_CIDR" \
    -m comment --comment "lifecycle-operator test cluster: pods never leave the node" -j DROP
  if [[ $(iptables -w -S FORWARD 2>/dev/null | sed -n 2p) != "-A FORWARD -j $EGRESS_CHAIN" ]]; then
    while iptables -w -D FORWARD -j "$EGRESS_CHAIN" 2>/dev/null; do :; done
    iptables -w -I FORWARD 1 -j "$EGRESS_CHAIN"
  fi
}

# Writes FILE from stdin only if its content changed (keeps mtimes and the
# restart-on-config-change check stable on warm runs).
write_file() {
  local tmp
  tmp=$(mktemp "$1.XXXX")
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

# Debian's containerd 1.6: config format version 2.
containerd_config_v2() {
  write_file "$CONF_DIR/containerd.toml" <<EOC
version = 2
root = "$CONTAINERD_ROOT"
state = "$CONTAINERD_STATE"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE_ROOT/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  # The machine's capability bounding set lacks CAP_SYS_RESOURCE, so nothing
  # may lower oom_score_adj below its own; the kubelet asks -998 for every pod
  # sandbox and runc would fail ("failed to update /proc/self/oom_score_adj").
  # This clamps such requests to containerd's own value instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state under our state dir, not the default /run/containerd/runc.
        Root = "$CONTAINERD_STATE/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CONF_DIR/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$CONF_DIR/certs.d"
EOC
}

# containerd 2.x: config format version 3 (the CRI plugin split into images,
# runtime and the gRPC server). Same settings as version 2 above.
containerd_config_v3() {
  write_file "$CONF_DIR/containerd.toml" <<EOC
version = 3
root = "$CONTAINERD_ROOT"
state = "$CONTAINERD_STATE"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE_ROOT/opt"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "registry.k8s.io/pause:3.10"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "$CONF_DIR/certs.d"

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  # See containerd_config_v2: no CAP_SYS_RESOURCE on these machines.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$CONTAINERD_STATE/runc"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$CONF_DIR/cni"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
EOC
}

write_configs() {
  mkdir -p "$CONF_DIR"/{cni,certs.d} "$CNI_STATE" "$KUBELET_ROOT" "$CONTAINERD_ROOT" "$CONTAINERD_STATE" \
    "$REGISTRY_DATA" "$POD_LOGS"

  write_file "$CONF_DIR/registry.yml" <<EOC
version: 0.1
log:
  level: warn
  accesslog: {disabled: true}
storage:
  filesystem:
    rootdirectory: $REGISTRY_DATA
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
EOC

  # Every registry the cluster may name resolves to the local one; containerd
  # runs with an unusable HTTP(S) proxy (see start_containerd) so a registry
  # not listed here fails fast instead of reaching the network.
  local reg
  for reg in docker.io registry.k8s.io "$REGISTRY_ADDR" localhost:5000; do
    mkdir -p "$CONF_DIR/certs.d/$reg"
    write_file "$CONF_DIR/certs.d/$reg/hosts.toml" <<EOC
server = "http://$REGISTRY_ADDR"

[host."http://$REGISTRY_ADDR"]
  capabilities = ["pull", "resolve"]
EOC
  done

  if [[ -n $CONTAINERD_VERSION ]]; then containerd_config_v3; else containerd_config_v2; fi

  # containerd's CRI plugin sets up lo itself (loopback plugin from bin_dir).
  write_file "$CONF_DIR/cni/10-lco-pods.conflist" <<EOC
{
  "cniVersion": "1.0.0",
  "name": "lco-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CNI_STATE/networks",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP", "rangeStart": "10.244.0.10"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOC

  # Pods get a resolver that answers nothing: no pod ever queries a real DNS server.
  write_file "$CONF_DIR/resolv.conf" <<<"nameserver 127.0.0.1"

  write_file "$CONF_DIR/kubelet.yaml" <<EOC
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI_DIR/ca.crt}
authorization:
  mode: Webhook
tlsCertFile: $PKI_DIR/kubelet-server.crt
tlsPrivateKeyFile: $PKI_DIR/kubelet-server.key
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
clusterDomain: cluster.local
resolvConf: $CONF_DIR/resolv.conf
podLogsDir: $POD_LOGS
failSwapOn: false
# Without CAP_SYS_RESOURCE (see containerd.toml) the default -999 cannot be set.
oomScoreAdj: 0
serializeImagePulls: false
# The test disk is shared with builds: never evict or GC images because of it.
evictionHard:
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
  memory.available: "100Mi"
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
maxPods: 110
# The host is cgroup v1 (hybrid). Kubelets up to 1.37 still run on it when
# told to (their default since 1.35 is to refuse it); each logs and records a
# CgroupV1 warning event on the node at start-up.
failCgroupV1: false
EOC

  write_file "$CONF_DIR/kube-proxy.yaml" <<EOC
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $PKI_DIR/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# NodePorts answer on the bridge address only.
nodePortAddresses: ["$NODE_IP/32"]
# 0 = leave the host's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
# Default -999 needs CAP_SYS_RESOURCE, which this machine does not grant.
oomScoreAdj: 0
iptables:
  minSyncPeriod: 1s
  syncPeriod: 30s
EOC
}

start_registry() {
  start_proc registry docker-registry serve "$CONF_DIR/registry.yml"
  wait_until 30 registry curl -fsS "http://$REGISTRY_ADDR/v2/" ||
    die "registry did not come up; see $LOG_DIR/registry.log"
}

start_containerd() {
  # Any registry without a hosts.toml above would be reached through this
  # proxy, which is a closed loopback port: no pull ever leaves the machine.
  (
    export HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost
    # PATH: containerd starts containerd-shim-runc-v2 of the same build.
    export PATH="$CONTAINERD_BIN_DIR:$PATH"
    START_SPEC_FILES="$CONF_DIR/containerd.toml" start_proc containerd "$CONTAINERD_BIN_DIR/containerd" --config "$CONF_DIR/containerd.toml"
  )
  wait_until 30 containerd "$CONTAINERD_BIN_DIR/ctr" --address "$CONTAINERD_SOCK" version ||
    die "containerd did not come up; see $LOG_DIR/containerd.log"
}

start_etcd() {
  mkdir -p "$ETCD_DATA"
  chmod 700 "$ETCD_DATA"
  # Loopback only. --unsafe-no-fsync: a throwaway test store on a disk busy
  # with builds; a process crash loses nothing (page cache survives).
  start_proc etcd "$CLUSTER_BIN/etcd" --name lco --data-dir "$ETCD_DATA" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster lco=http://127.0.0.1:2380 --unsafe-no-fsync \
    --auto-compaction-mode=periodic --auto-compaction-retention=1h
  wait_until 60 etcd curl -fsS http://127.0.0.1:2379/health || die "etcd did not come up; see $LOG_DIR/etcd.log"
}

start_apiserver() {
  local p=$PKI_DIR
  start_proc kube-apiserver "$CLUSTER_BIN/kube-apiserver" \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port="$APISERVER_PORT" \
    --etcd-servers=http://127.0.0.1:2379 \
    --client-ca-file="$p/ca.crt" --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --kubelet-certificate-authority="$p/ca.crt" --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$p/apiserver-kubelet-client.key" --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction --allow-privileged=true --profiling=false
  wait_until 120 apiserver kubectl get --raw /readyz ||
    die "kube-apiserver not ready; see $LOG_DIR/kube-apiserver.log"
}

start_controllers() {
  local p=$PKI_DIR
  # --leader-elect=false: one replica, and a restart after a crash need not
  # wait for the old lease to expire.
  start_proc kube-controller-manager "$CLUSTER_BIN/kube-controller-manager" \
    --kubeconfig="$p/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$p/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$p/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
    --allocate-node-cidrs=false --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false
  start_proc kube-scheduler "$CLUSTER_BIN/kube-scheduler" \
    --kubeconfig="$p/scheduler.kubeconfig" \
    --authentication-kubeconfig="$p/scheduler.kubeconfig" \
    --authorization-kubeconfig="$p/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
}

start_node() {
  START_SPEC_FILES="$CONF_DIR/kubelet.yaml" start_proc kubelet "$CLUSTER_BIN/kubelet" \
    --config="$CONF_DIR/kubelet.yaml" --kubeconfig="$PKI_DIR/kubelet.kubeconfig" \
    --root-dir="$KUBELET_ROOT" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP"
  START_SPEC_FILES="$CONF_DIR/kube-proxy.yaml" start_proc kube-proxy "$CLUSTER_BIN/kube-proxy" \
    --config="$CONF_DIR/kube-proxy.yaml"
}

# Ready as reported by the kubelet now running: after a restart the node
# object still carries the old kubelet's Ready=True, so the heartbeat must be
# newer than the current kubelet's start.
node_ready() {
  local out hb started
  out=$(kubectl get node "$NODE_NAME" \
    -o jsonpath='{range .status.conditions[?(@.type=="Ready")]}{.status} {.lastHeartbeatTime}{end}' 2>/dev/null) || return 1
  [[ $out == "True "* ]] || return 1
  hb=${out#True }
  started=$(stat -c %Y "$RUN_DIR/kubelet.pid")
  (($(date -d "$hb" +%s) >= started - 1))
}

main() {
  # One cluster per checkout: a cluster of another version is stopped first
  # (by down.sh, which knows the version it was brought up with); its state
  # stays in its own directories for when that version comes back.
  if [[ -s $UP_VERSION_FILE && $(<"$UP_VERSION_FILE") != "$K8S_MINOR" ]]; then
    log "a Kubernetes $(<"$UP_VERSION_FILE") cluster is up from this checkout; stopping it for $K8S_MINOR"
    bash "$HERE/down.sh"
  fi
  cluster_lock
  log "Kubernetes $K8S_VERSION (K8S_VERSION=$K8S_MINOR)${CONTAINERD_VERSION:+, containerd $CONTAINERD_VERSION}"
  bash "$HERE/install-deps.sh"
  bash "$HERE/preflight.sh"
  bash "$HERE/build.sh"
  phase "binaries ready"
  clear_stale
  echo "$K8S_MINOR" >"$UP_VERSION_FILE"
  setup_host
  bash "$HERE/certs.sh"
  write_configs
  start_registry
  start_containerd
  phase "registry and containerd up"
  bash "$HERE/images.sh"
  phase "images in the local registry"
  start_etcd
  start_apiserver
  phase "kube-apiserver ready"
  start_controllers
  start_node
  wait_until 180 node node_ready || die "node $NODE_NAME not Ready; see $LOG_DIR/kubelet.log"
  wait_until 120 "default ServiceAccount" kubectl -n default get serviceaccount default ||
    die "no default ServiceAccount; see $LOG_DIR/kube-controller-manager.log"
  phase "cluster up: node $NODE_NAME Ready, kubeconfig $KUBECONFIG_PATH"
  echo "export KUBECONFIG=$KUBECONFIG_PATH PATH=$CLUSTER_BIN:\$PATH"
}

# Sourcing (for debugging single steps) defines the functions without running.
[[ ${BASH_SOURCE[0]} != "$0" ]] || main "$@"
