#!/usr/bin/env bash
# Builds etcd, the Kubernetes components, kubectl and helm from their Go
# modules into a cache keyed by version; a no-op when the cache is warm.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

stamp="$BIN_CACHE/.complete"
if [[ ! -f $stamp ]]; then
  command -v go >/dev/null || die "go is required to build the cluster components"
  log "building Kubernetes $K8S_VERSION, etcd and helm $HELM_VERSION into $BIN_CACHE (cold cache: ~20 min on 2 cores)"
  mkdir -p "$BIN_CACHE"
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ver_pkgs=(k8s.io/component-base/version k8s.io/client-go/pkg/version)
  ldflags="-s -w"
  for p in "${ver_pkgs[@]}"; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  (
    cd "$K8S_MODULE_DIR"
    export CGO_ENABLED=0 GOFLAGS=-mod=mod
    go build -trimpath -ldflags "$ldflags" -o "$BIN_CACHE/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
      k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl
    go build -trimpath -ldflags "-s -w" -o "$BIN_CACHE/etcd" ./etcd
  )
  # helm's own go.mod has no replace directives, so `go install pkg@version` builds it as pinned.
  CGO_ENABLED=0 GOBIN="$BIN_CACHE" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  touch "$stamp"
fi
mkdir -p "$CLUSTER_BIN"
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl helm; do
  ln -sfn "$BIN_CACHE/$b" "$CLUSTER_BIN/$b"
done
