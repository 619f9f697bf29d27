#!/usr/bin/env bash
# Installs the linters `make lint` runs, idempotently: shellcheck and yamllint
# from Debian, PyYAML (the YAML 1.1 parser of the CRD test, and the chart
# tier's YAML reader) and jq (the chart tier's assertions) from Debian, and
# kube-score and helm-docs built from their Go modules into the shared cache.
# Prints nothing when everything is already there.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

KUBE_SCORE_VERSION=v1.20.0
HELM_DOCS_VERSION=v1.14.2

PACKAGES=(shellcheck yamllint python3-yaml jq)
missing=()
for p in "${PACKAGES[@]}"; do
  [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  [[ $EUID -eq 0 ]] || die "need root to install: ${missing[*]}"
  log "installing missing packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

go_tool kube-score github.com/zegl/kube-score/cmd/kube-score "$KUBE_SCORE_VERSION"
go_tool helm-docs github.com/norwoodj/helm-docs/cmd/helm-docs "$HELM_DOCS_VERSION"
# Stable names for the Makefile and scripts.
ln -sfn "kube-score-$KUBE_SCORE_VERSION" "$TOOLS_BIN/kube-score"
ln -sfn "helm-docs-$HELM_DOCS_VERSION" "$TOOLS_BIN/helm-docs"
