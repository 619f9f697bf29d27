#!/usr/bin/env bash
# Regenerates charts/lifecycle-operator/README.md from README.md.gotmpl and the
# `# --` comments of values.yaml (helm-docs). `make lint` fails when it drifts.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
bash "$REPO_ROOT/hack/tools/install-lint-tools.sh"
"$TOOLS_BIN/helm-docs" --chart-search-root "$REPO_ROOT/charts/lifecycle-operator"
