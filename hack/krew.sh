#!/usr/bin/env bash
# The kubectl-lifecycle krew plugin: its archive and its manifest.
#   hack/krew.sh archive [debug|release]  builds target/krew/kubectl-lifecycle_<version>_linux_amd64.tar.gz
#                                         and target/krew/lifecycle.yaml (plugins/lifecycle.yaml with that
#                                         archive's sha256): what a release publishes
#   hack/krew.sh check                    (make lint) validates plugins/lifecycle.yaml with krew's own
#                                         validate-krew-manifest, then installs the manifest with
#                                         `kubectl krew install --archive` into a throwaway KREW_ROOT and
#                                         runs the installed plugin through kubectl
# krew and its validator are built from their Go module (sigs.k8s.io/krew).
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT" || exit 1

KREW_VERSION=v0.4.3
manifest=plugins/lifecycle.yaml
out=target/krew
version=v$(awk -F'"' '$1=="version = "{print $2; exit}' Cargo.toml)
archive=$out/kubectl-lifecycle_${version}_linux_amd64.tar.gz

build_archive() {
  local profile=${1:-release} dir
  local flag=(--release)
  [[ $profile == debug ]] && flag=()
  cargo build --quiet --locked "${flag[@]}" --bin kubectl-lifecycle
  mkdir -p "$out"
  dir=$(mktemp -d)
  cp "target/$profile/kubectl-lifecycle" LICENSE "$dir/"
  # Reproducible for the same binary: fixed order, owner and time.
  tar -C "$dir" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -czf "$archive" kubectl-lifecycle LICENSE
  rm -rf "$dir"
  local sum
  sum=$(sha256sum "$archive" | cut -d' ' -f1)
  sed -E "s/^( +sha256: ).*/\1\"$sum\"/" "$manifest" >"$out/lifecycle.yaml"
  echo "$archive ($sum), $out/lifecycle.yaml"
}

check_manifest() {
  go_tool validate-krew-manifest sigs.k8s.io/krew/cmd/validate-krew-manifest "$KREW_VERSION"
  go_tool krew sigs.k8s.io/krew/cmd/krew "$KREW_VERSION"
  grep -q "version: $version\$" "$manifest" || die "$manifest is not for $version (Cargo.toml)"
  # The uri is the release's, not reachable here: structure and platforms only.
  "$TOOLS_BIN/validate-krew-manifest-$KREW_VERSION" -manifest "$manifest" -skip-install
  build_archive debug >/dev/null
  local root bin
  root=$(mktemp -d)
  bin=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: the dirs are this call's
  trap "rm -rf '$root' '$bin'" RETURN
  ln -s "$TOOLS_BIN/krew-$KREW_VERSION" "$bin/kubectl-krew"
  PATH="$bin:$PATH" KREW_ROOT="$root" "$CLUSTER_BIN/kubectl" krew install \
    --manifest "$out/lifecycle.yaml" --archive "$archive" >/dev/null 2>&1 ||
    die "kubectl krew install --manifest $out/lifecycle.yaml --archive $archive failed"
  PATH="$root/bin:$PATH" "$CLUSTER_BIN/kubectl" lifecycle --version | grep -q "kubectl-lifecycle ${version#v}" ||
    die "the krew-installed plugin does not run as 'kubectl lifecycle'"
  echo "krew: $manifest valid; installed from $archive and ran as 'kubectl lifecycle'"
}

case ${1:-} in
  archive) build_archive "${2:-release}" ;;
  check) check_manifest ;;
  *) die "usage: hack/krew.sh archive [debug|release] | check" ;;
esac
