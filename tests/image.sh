#!/usr/bin/env bash
# Builds the operator image without Docker: a statically linked binary alone in
# a root filesystem, turned into an OCI image and pushed to the local registry
# by the harness's oci-image.sh. Prints the pushed reference.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-$(awk -F'"' '/^appVersion:/{print $2}' charts/lifecycle-operator/Chart.yaml)}
target=x86_64-unknown-linux-gnu
# glibc's static libraries come with libc6-dev; the rustup musl target is not
# reachable from here, and a static glibc binary needs no DNS (it dials the
# API server's IP from KUBERNETES_SERVICE_HOST).
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release --locked --target $target --bin lifecycle-operator >&2
bin=target/$target/release/lifecycle-operator
if ldd "$bin" 2>&1 | grep -q '=>'; then
  echo "image: $bin is not statically linked" >&2
  exit 1
fi
rootfs=target/image/rootfs
rm -rf "$rootfs" && mkdir -p "$rootfs/tmp"
# Debug symbols stay in target/ for local debugging; the image gets a stripped copy.
strip -o "$rootfs/lifecycle-operator" "$bin"
chmod 0755 "$rootfs/lifecycle-operator"
bash tests/cluster/oci-image.sh "$rootfs" "lifecycle-operator:$tag" \
  --entrypoint '["/lifecycle-operator"]' --user 65532:65532 --expose 8080/tcp
