#!/usr/bin/env bash
# Builds the cluster's base images and pushes them to the local registry
# (which must be running; up.sh starts it first):
#   library/busybox:latest  busybox-static + applet symlinks, CMD sh
#   library/nginx:latest    Debian bookworm minbase + nginx, psmisc, procps
#   pause:3.10              hack/cluster/pause.c, statically linked
# Each image is rebuilt only when its recipe (this file, oci-image.sh and its
# inputs) changes or the registry lost it; the debootstrap rootfs is cached as
# a tarball in $CACHE_ROOT/rootfs so a recipe change does not re-download it.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
HERE="$REPO_ROOT/hack/cluster"
STAMPS="$CACHE_ROOT/images"
DEBIAN_MIRROR=http://deb.debian.org/debian
DEBIAN_SUITE=bookworm
NGINX_PACKAGES=nginx,psmisc,procps
mkdir -p "$STAMPS" "$CACHE_ROOT/rootfs"

# Scratch directories to remove however the script ends (debootstrap mounts
# /proc and /sys inside its target: unmount before removing).
SCRATCH=()
cleanup() {
  local d
  for d in "${SCRATCH[@]}"; do
    umount -R "$d/proc" "$d/sys" 2>/dev/null || true
    rm -rf --one-file-system "$d"
  done
}
trap cleanup EXIT
# Scratch directories of a run that was killed (up.sh holds the cluster lock,
# so no other images.sh is using them).
for stale in "$CACHE_ROOT"/rootfs/build.* "$CACHE_ROOT"/rootfs/debootstrap.*/; do
  [[ -d $stale ]] && SCRATCH+=("${stale%/}")
done
cleanup
SCRATCH=()

recipe_key() { # extra inputs... -> short hash of the recipe
  cat "$HERE/images.sh" "$HERE/oci-image.sh" "$@" | sha256sum | cut -c1-16
}

# in_registry NAME TAG: the registry serves that manifest.
in_registry() {
  curl -fsS -o /dev/null -I \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY_ADDR/v2/$1/manifests/$2" 2>/dev/null
}

# build_if_needed NAME TAG KEY BUILDER: runs BUILDER ROOTFS, then pushes.
build_if_needed() {
  local name=$1 tag=$2 key=$3 builder=$4 stamp rootfs
  stamp="$STAMPS/${name//\//_}-$tag.$key"
  if [[ -f $stamp ]] && in_registry "$name" "$tag"; then
    return 0
  fi
  log "building image $name:$tag (recipe $key)"
  rootfs=$(mktemp -d "$CACHE_ROOT/rootfs/build.XXXXXX")
  SCRATCH+=("$rootfs")
  "$builder" "$rootfs"
  rm -f "$STAMPS/${name//\//_}-$tag".*
  "$HERE/oci-image.sh" "$rootfs" "$name:$tag" "${IMAGE_ARGS[@]}" >"$stamp.tmp"
  mv "$stamp.tmp" "$stamp"
  log "pushed $(<"$stamp")"
}

# Directories and files every image gets, so tools that expect a conventional
# filesystem (e.g. kubectl exec with $HOME, /tmp) work.
base_layout() {
  local r=$1
  mkdir -p "$r"/{bin,dev,etc,proc,sys,root,var/run,usr/bin,usr/sbin,sbin}
  install -d -m 1777 "$r/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
}

build_busybox() {
  local r=$1 applet
  base_layout "$r"
  cp /bin/busybox "$r/bin/busybox"
  # One symlink per applet at its canonical path (bin/sh, usr/bin/wget, ...).
  while read -r applet; do
    [[ $applet == bin/busybox || -e $r/$applet ]] && continue
    mkdir -p "$r/$(dirname "$applet")"
    ln -s /bin/busybox "$r/$applet"
  done < <("$r/bin/busybox" --list-full)
  IMAGE_ARGS=(--cmd '["sh"]')
}

build_pause() {
  local r=$1
  gcc -static -O2 -Wall -o "$r/pause" "$HERE/pause.c"
  strip "$r/pause"
  # Like the upstream pause image: run as nobody.
  IMAGE_ARGS=(--entrypoint '["/pause"]' --user 65535:65535)
}

# The debootstrap'd rootfs, unmodified, as a tarball in the cache.
DEBIAN_TARBALL="$CACHE_ROOT/rootfs/debian-$DEBIAN_SUITE-nginx-$(
  echo "$DEBIAN_MIRROR $DEBIAN_SUITE minbase $NGINX_PACKAGES" | sha256sum | cut -c1-16).tar"
ensure_debian_tarball() {
  local tarball=$DEBIAN_TARBALL tmp
  if [[ ! -s $tarball ]]; then
    log "debootstrap $DEBIAN_SUITE (minbase + $NGINX_PACKAGES) from $DEBIAN_MIRROR; takes a few minutes"
    tmp=$(mktemp -d "$CACHE_ROOT/rootfs/debootstrap.XXXXXX")
    SCRATCH+=("$tmp")
    debootstrap --variant=minbase --include="$NGINX_PACKAGES" "$DEBIAN_SUITE" "$tmp" "$DEBIAN_MIRROR" \
      >"$CACHE_ROOT/rootfs/debootstrap.log" 2>&1 ||
      die "debootstrap failed, see $CACHE_ROOT/rootfs/debootstrap.log"
    # Drop what a container image must not carry: apt caches, logs, device nodes.
    rm -rf "${tmp:?}"/var/cache/apt/*.bin "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* \
      "${tmp:?}"/var/log/*.log "${tmp:?}"/var/log/apt/* "${tmp:?}"/dev/* "${tmp:?}"/proc/* "${tmp:?}"/sys/* "${tmp:?}"/run/*
    tar -C "$tmp" --sort=name --mtime=@0 --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
  fi
}

build_nginx() {
  local r=$1
  ensure_debian_tarball
  tar -C "$r" --numeric-owner -xf "$DEBIAN_TARBALL"
  # Same conventions as the upstream nginx image: logs to the container's
  # stdout/stderr, content in /usr/share/nginx/html, port 80.
  ln -sfn /dev/stdout "$r/var/log/nginx/access.log"
  ln -sfn /dev/stderr "$r/var/log/nginx/error.log"
  # Upstream logs at "notice", so a graceful shutdown shows in the pod's log.
  sed -i 's|^error_log /var/log/nginx/error.log;$|error_log /var/log/nginx/error.log notice;|' "$r/etc/nginx/nginx.conf"
  grep -q '^error_log .* notice;$' "$r/etc/nginx/nginx.conf" || die "nginx.conf: error_log line not found"
  rm -f "$r"/etc/nginx/sites-enabled/*
  cat >"$r/etc/nginx/conf.d/default.conf" <<'CONF'
server {
    listen       80;
    listen  [::]:80;
    server_name  localhost;
    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }
}
CONF
  mkdir -p "$r/usr/share/nginx/html"
  cat >"$r/usr/share/nginx/html/index.html" <<'HTML'
<!DOCTYPE html>
<html>
<head><title>Welcome to nginx!</title></head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and working.</p>
</body>
</html>
HTML
  IMAGE_ARGS=(--cmd '["nginx", "-g", "daemon off;"]' --stop-signal SIGQUIT --expose 80/tcp)
}

curl -fsS -o /dev/null "http://$REGISTRY_ADDR/v2/" || die "local registry not reachable at $REGISTRY_ADDR (start it with up.sh)"
build_if_needed library/busybox latest "$(recipe_key /bin/busybox)" build_busybox
build_if_needed pause 3.10 "$(recipe_key "$HERE/pause.c")" build_pause
build_if_needed library/nginx latest "$(recipe_key)" build_nginx
