#!/usr/bin/env bash
# `make lint` beyond fmt and clippy: helm lint --strict, kube-score on the
# rendered chart, shellcheck on every script, yamllint on crds/ and the chart,
# the YAML 1.1 reading of crds/, the chart README against values.yaml, and
# the krew manifest of kubectl-lifecycle (hack/krew.sh check).
# Installs the tools it needs (hack/tools/install-lint-tools.sh) and helm
# (hack/cluster/build.sh, cached).
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/../hack/lib.sh"
cd "$REPO_ROOT" || exit 1
bash hack/tools/install-lint-tools.sh
bash hack/cluster/build.sh
chart=charts/lifecycle-operator
out=target/lint
mkdir -p "$out"
# Offline rendering needs no --kube-version: our helm is built like its
# release and assumes the Kubernetes of its client-go.
kv=()
status=0
step() { echo "== $1"; shift; "$@" || { echo "FAILED: $*" >&2; status=1; }; }

step "helm lint --strict" helm lint --strict "$chart" "${kv[@]}"
step "helm lint --strict (two replicas, everything on)" helm lint --strict "$chart" "${kv[@]}" \
  --set replicaCount=2 --set networkPolicy.enabled=true --set metrics.serviceMonitor.enabled=true \
  --set metrics.prometheusRule.enabled=true --set metrics.grafanaDashboard.enabled=true

# helm v4 ends its output with a blank line, which yamllint refuses: dropped.
trim() { sed -e ':a' -e '/^\n*$/{$d;N;ba' -e '}'; }
helm template lco "$chart" -n lco-system "${kv[@]}" | trim >"$out/default.yaml"
helm template lco "$chart" -n lco-system "${kv[@]}" --set replicaCount=2 --set networkPolicy.enabled=true \
  --set metrics.serviceMonitor.enabled=true --set metrics.prometheusRule.enabled=true \
  --set metrics.grafanaDashboard.enabled=true | trim >"$out/ha.yaml"

# kube-score checks turned off, and why:
# - container CPU limit (--ignore-container-cpu-limit): a CPU limit only
#   throttles reconciles and probes; the request reserves what it needs.
# - container-image-pull-policy: the image is pinned by tag or digest;
#   Always adds a registry round trip to every start and fails starts while
#   the registry is down.
ks=(score --ignore-container-cpu-limit --ignore-test container-image-pull-policy)
# The default, two replicas (both serve the webhook) without a NetworkPolicy
# (opt-in, since it needs the API server's real port).
step "kube-score (default values)" "$TOOLS_BIN/kube-score" "${ks[@]}" \
  --ignore-test pod-networkpolicy "$out/default.yaml"
step "kube-score (two replicas, NetworkPolicy)" "$TOOLS_BIN/kube-score" "${ks[@]}" "$out/ha.yaml"

mapfile -t scripts < <(git ls-files '*.sh' .ci/run)
step "shellcheck (${#scripts[@]} scripts)" shellcheck -x "${scripts[@]}"

step "yamllint crds/, examples/, plugins/, the chart's values and its renderings" yamllint --strict -c .yamllint.yaml \
  crds/ examples/ plugins/ "$chart/Chart.yaml" "$chart/values.yaml" "$chart/files/" "$out/default.yaml" "$out/ha.yaml"
step "YAML 1.1 (PyYAML) reads every enum of crds/ as a string" /usr/bin/python3 tests/crd_yaml11.py crds/*.yaml

readme_current() {
  "$TOOLS_BIN/helm-docs" --chart-search-root "$chart" --dry-run 2>/dev/null >"$out/README.md"
  diff -u "$chart/README.md" "$out/README.md" || { echo "run 'make chart-readme' and commit" >&2; return 1; }
}
step "chart README.md generated from values.yaml (helm-docs)" readme_current
step "krew: plugins/lifecycle.yaml validated, installed and run (hack/krew.sh)" bash hack/krew.sh check
exit $status
