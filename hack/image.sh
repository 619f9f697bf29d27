#!/usr/bin/env bash
# Builds the operator image without Docker: a statically linked binary alone in
# a root filesystem, turned into an OCI image and pushed to the local registry
# by the harness's oci-image.sh. Prints the pushed reference.
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
tag=${1:-$(awk -F'"' '/^appVersion:/{print $2}' charts/lifecycle-operator/Chart.yaml)}
bin=$(build_image_binary)
if ldd "$bin" 2>&1 | grep -q '=>'; then
  echo "image: $bin is not statically linked" >&2
  exit 1
fi
rootfs=target/image/rootfs
rm -rf "$rootfs" && mkdir -p "$rootfs/tmp"
# Debug symbols stay in target/ for local debugging; the image gets a stripped copy.
strip -o "$rootfs/lifecycle-operator" "$bin"
chmod 0755 "$rootfs/lifecycle-operator"
bash hack/cluster/oci-image.sh "$rootfs" "lifecycle-operator:$tag" \
  --entrypoint '["/lifecycle-operator"]' --user 65532:65532 --expose 8080/tcp
