#!/usr/bin/env bash
# Regenerates charts/lifecycle-operator/README.md from README.md.gotmpl and the
# `# --` comments of values.yaml (helm-docs). `make lint` fails when it drifts.
# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
bash "$REPO_ROOT/tests/tools/install-lint-tools.sh"
"$TOOLS_BIN/helm-docs" --chart-search-root "$REPO_ROOT/charts/lifecycle-operator"
