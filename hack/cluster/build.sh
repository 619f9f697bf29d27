#!/usr/bin/env bash
# Builds etcd, the Kubernetes components, kubectl (and, for versions that
# need it, containerd) from their Go modules into a cache keyed by version,
# and helm into a cache of its own; a no-op when the caches are warm.
# K8S_VERSION (a minor, default the newest) picks hack/k8s/<minor>/.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

# The ldflags of Kubernetes' own release builds (hack/lib/version.sh):
# gitVersion, gitMajor/gitMinor, gitTreeState and buildDate, in both version
# packages. buildDate is the tag's time from the module proxy (reproducible);
# the proxy does not say the commit, so gitCommit stays empty.
k8s_ldflags() {
  local minor=${K8S_VERSION#v1.} date p flags="-s -w"
  minor=${minor%%.*}
  date=$(cd "$K8S_MODULE_DIR" && go list -m -json "k8s.io/kubernetes@$K8S_VERSION" | jq -er .Time) ||
    die "no release time for k8s.io/kubernetes@$K8S_VERSION from the module proxy"
  date=$(date -u -d "$date" +%Y-%m-%dT%H:%M:%SZ) || die "bad release time $date"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    flags+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  echo "$flags"
}

build_kubernetes() {
  local ldflags
  ldflags=$(k8s_ldflags) || exit 1
  (
    cd "$K8S_MODULE_DIR"
    export CGO_ENABLED=0 GOFLAGS=-mod=mod
    go build -trimpath -ldflags "$ldflags" -o "$BIN_CACHE/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
      k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl
    go build -trimpath -ldflags "-s -w" -o "$BIN_CACHE/etcd" ./etcd
  )
}

# containerd as its Makefile builds a static release (tags, version ldflag;
# btrfs is not used here and needs cgo). Its go.mod has no replace
# directives, so `go install pkg@version` builds it as pinned.
build_containerd() {
  local pkg=github.com/containerd/containerd/v2
  CGO_ENABLED=0 GOBIN="$BIN_CACHE" go install -trimpath \
    -tags "urfave_cli_no_docs osusergo netgo static_build no_btrfs" \
    -ldflags "-s -w -X $pkg/version.Version=$CONTAINERD_VERSION -X $pkg/version.Package=$pkg" \
    "$pkg/cmd/containerd@$CONTAINERD_VERSION" "$pkg/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "$pkg/cmd/ctr@$CONTAINERD_VERSION"
}

# helm with the ldflags of its Makefile: version and tree state (the commit
# is not known from the proxy), and the Kubernetes version helm assumes
# offline (`helm template`, `helm lint`) from the client-go it is built with:
# major+1 and minor of client-go v0.36.2 = 1.36. Without these (a plain
# `go install`) helm believes Kubernetes is 1.20 and the chart's kubeVersion
# refuses to render without --kube-version.
build_helm() {
  local client_go major minor p=helm.sh/helm/v3 flags
  client_go=$(cd "$K8S_MODULE_DIR" && go mod download -json "$p@$HELM_VERSION" | jq -er .GoMod) ||
    die "no go.mod of $p@$HELM_VERSION from the module proxy"
  client_go=$(awk '$1=="k8s.io/client-go"{print $2; exit}' "$client_go")
  [[ $client_go =~ ^v0\.([0-9]+)\. ]] || die "cannot read helm's client-go version ($client_go)"
  major=1 minor=${BASH_REMATCH[1]}
  flags="-s -w -X $p/internal/version.version=$HELM_VERSION -X $p/internal/version.gitTreeState=clean"
  flags+=" -X $p/pkg/lint/rules.k8sVersionMajor=$major -X $p/pkg/lint/rules.k8sVersionMinor=$minor"
  flags+=" -X $p/pkg/chartutil.k8sVersionMajor=$major -X $p/pkg/chartutil.k8sVersionMinor=$minor"
  mkdir -p "$HELM_CACHE"
  CGO_ENABLED=0 GOBIN="$HELM_CACHE" go install -trimpath -ldflags "$flags" "$p/cmd/helm@$HELM_VERSION"
  touch "$HELM_CACHE/.complete"
}

stamp="$BIN_CACHE/.complete"
if [[ ! -f $stamp ]]; then
  command -v go >/dev/null || die "go is required to build the cluster components"
  log "building Kubernetes $K8S_VERSION, etcd${CONTAINERD_VERSION:+, containerd $CONTAINERD_VERSION} into $BIN_CACHE (cold cache: ~20 min on 2 cores)"
  mkdir -p "$BIN_CACHE"
  build_kubernetes
  [[ -z $CONTAINERD_VERSION ]] || build_containerd
  touch "$stamp"
fi
if [[ ! -f $HELM_CACHE/.complete ]]; then
  command -v go >/dev/null || die "go is required to build helm"
  log "building helm $HELM_VERSION into $HELM_CACHE"
  build_helm
fi
mkdir -p "$CLUSTER_BIN"
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  ln -sfn "$BIN_CACHE/$b" "$CLUSTER_BIN/$b"
done
ln -sfn "$HELM_CACHE/helm" "$CLUSTER_BIN/helm"
# The cluster's containerd: ours when the version pins one, else Debian's.
for b in containerd containerd-shim-runc-v2 ctr; do
  if [[ -n $CONTAINERD_VERSION ]]; then
    ln -sfn "$BIN_CACHE/$b" "$CLUSTER_BIN/$b"
  else
    ln -sfn "/usr/bin/$b" "$CLUSTER_BIN/$b"
  fi
done
