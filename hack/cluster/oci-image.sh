#!/usr/bin/env bash
# Turns a root filesystem directory into a single-layer OCI image and pushes it
# to the test cluster's local registry (127.0.0.1:5000) with skopeo.
#
# Usage:
#   oci-image.sh ROOTFS_DIR REF [options]
#
#   ROOTFS_DIR   directory whose contents become the image's only layer
#   REF          NAME[:TAG] in the local registry (TAG defaults to latest), e.g.
#                library/nginx:latest  -> pulled by the cluster as `nginx`
#                lifecycle-operator:dev -> `127.0.0.1:5000/lifecycle-operator:dev`
# Options (all optional, may come in any order after REF):
#   --entrypoint JSON   e.g. '["/operator"]'
#   --cmd JSON          e.g. '["--help"]'
#   --env K=V           repeatable; PATH defaults to the usual value if not given
#   --user U            e.g. 65532:65532
#   --workdir D         e.g. /
#   --stop-signal SIG   e.g. SIGQUIT
#   --expose PORT/PROTO repeatable, e.g. 80/tcp
#   --label K=V         repeatable
#   --oci-dir DIR       also keep the OCI layout in DIR (default: a temp dir)
# Environment: LCO_REGISTRY overrides the registry address (default 127.0.0.1:5000).
#
# Output: the pushed reference with its digest on stdout (REGISTRY/NAME@sha256:...).
# The layer is reproducible: tar --sort=name --mtime=@0 --owner=0 --group=0
# --numeric-owner, gzip -n, and a fixed creation time, so the same rootfs gives
# the same digest.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

usage() { sed -n '2,/^# Output/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

(($# >= 2)) || usage
rootfs=$1 ref=$2; shift 2
[[ -d $rootfs ]] || die "rootfs directory not found: $rootfs"
registry=${LCO_REGISTRY:-$REGISTRY_ADDR}
name=${ref%%:*} tag=latest
[[ $ref == *:* ]] && tag=${ref#*:}
[[ $name =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]] || die "bad image name '$name' (NAME[:TAG], registry is implied)"

entrypoint=null cmd=null user="" workdir="" stop_signal="" oci_dir=""
envs=() ports=() labels=()
while (($#)); do
  case $1 in
    --entrypoint) entrypoint=$2 ;;
    --cmd) cmd=$2 ;;
    --env) envs+=("$2") ;;
    --user) user=$2 ;;
    --workdir) workdir=$2 ;;
    --stop-signal) stop_signal=$2 ;;
    --expose) ports+=("$2") ;;
    --label) labels+=("$2") ;;
    --oci-dir) oci_dir=$2 ;;
    *) usage ;;
  esac
  shift 2 || usage
done
for j in "$entrypoint" "$cmd"; do
  jq -e 'type == "null" or (type == "array" and all(type == "string"))' <<<"$j" >/dev/null 2>&1 ||
    die "--entrypoint/--cmd take a JSON array of strings, got: $j"
done
[[ $'\n'"$(printf '%s\n' "${envs[@]}")" == *$'\n'PATH=* ]] ||
  envs=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "${envs[@]}")

case $(uname -m) in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch=$(uname -m) ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[[ -n $oci_dir ]] || oci_dir=$work/oci
rm -rf "$oci_dir"
mkdir -p "$oci_dir/blobs/sha256"

# put_blob FILE: moves FILE into the layout under its digest; prints "DIGEST SIZE".
put_blob() {
  local sum size
  sum=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$oci_dir/blobs/sha256/$sum"
  echo "sha256:$sum $size"
}

# The layer. GNU tar: entries sorted, owner root, mtime 0, so the bytes depend
# only on file names, modes and contents.
# The rootfs directory itself is left out (no "./" entry): it is often a
# mktemp -d with mode 0700, which would make / unreadable for non-root users.
mapfile -t top < <(cd "$rootfs" && LC_ALL=C ls -A)
((${#top[@]})) || die "rootfs $rootfs is empty"
tar -C "$rootfs" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  --format=gnu -cf "$work/layer.tar" -- "${top[@]}"
diff_id=sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -6 "$work/layer.tar"
read -r layer_digest layer_size < <(put_blob "$work/layer.tar.gz")

json_array() { if (($#)); then printf '%s\n' "$@" | jq -R . | jq -sc .; else echo '[]'; fi; }
json_object() { # K=V... -> {"K":"V",...}
  if (($#)); then printf '%s\n' "$@" | jq -R 'capture("^(?<k>[^=]*)=(?<v>.*)$")' | jq -sc 'map({(.k): .v}) | add'; else echo '{}'; fi
}

jq -n --sort-keys --arg arch "$arch" --arg diff "$diff_id" \
  --argjson entrypoint "$entrypoint" --argjson cmd "$cmd" \
  --argjson env "$(json_array "${envs[@]}")" \
  --argjson ports "$(json_array "${ports[@]}")" \
  --argjson labels "$(json_object "${labels[@]}")" \
  --arg user "$user" --arg workdir "$workdir" --arg stop "$stop_signal" \
  '{
     created: "1970-01-01T00:00:00Z",
     architecture: $arch,
     os: "linux",
     config: ({Env: $env}
       + (if $entrypoint then {Entrypoint: $entrypoint} else {} end)
       + (if $cmd then {Cmd: $cmd} else {} end)
       + (if $user != "" then {User: $user} else {} end)
       + (if $workdir != "" then {WorkingDir: $workdir} else {} end)
       + (if $stop != "" then {StopSignal: $stop} else {} end)
       + (if ($ports | length) > 0 then {ExposedPorts: ($ports | map({(.): {}}) | add)} else {} end)
       + (if ($labels | length) > 0 then {Labels: $labels} else {} end)),
     rootfs: {type: "layers", diff_ids: [$diff]},
     history: [{created: "1970-01-01T00:00:00Z", created_by: "hack/cluster/oci-image.sh"}]
   }' | tr -d '\n' >"$work/config.json"
read -r config_digest config_size < <(put_blob "$work/config.json")

jq -n --sort-keys --arg cd "$config_digest" --argjson cs "$config_size" \
  --arg ld "$layer_digest" --argjson ls "$layer_size" \
  '{
     schemaVersion: 2,
     mediaType: "application/vnd.oci.image.manifest.v1+json",
     config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
     layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $ld, size: $ls}]
   }' | tr -d '\n' >"$work/manifest.json"
read -r manifest_digest manifest_size < <(put_blob "$work/manifest.json")

jq -n --arg md "$manifest_digest" --argjson ms "$manifest_size" --arg tag "$tag" \
  '{schemaVersion: 2, manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json",
     digest: $md, size: $ms, annotations: {"org.opencontainers.image.ref.name": $tag}}]}' \
  >"$oci_dir/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$oci_dir/oci-layout"

# --preserve-digests: push the manifest byte for byte, so the digest printed
# below is the one the registry serves.
skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
  "oci:$oci_dir:$tag" "docker://$registry/$name:$tag" >&2
echo "$registry/$name@$manifest_digest"
