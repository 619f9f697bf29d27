#!/usr/bin/env bash
# Installs the Debian packages the test cluster needs. Idempotent: does
# nothing (not even `apt-get update`) when every package is already installed.
# Go (for build.sh) is not installed here: the machine image provides it.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PACKAGES=(containerd runc containernetworking-plugins docker-registry skopeo debootstrap
  busybox-static iptables conntrack socat ethtool ebtables jq openssl curl gcc libc6-dev
  iproute2 util-linux mount procps tar gzip binutils)

missing=()
for p in "${PACKAGES[@]}"; do
  # dpkg-query prints "install ok installed" only for fully installed packages.
  [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
[[ $EUID -eq 0 ]] || die "need root to install: ${missing[*]}"
log "installing missing packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The docker-registry package ships an init script that would start a second
# registry on :5000 (all interfaces) and clash with ours: forbid service starts
# during the install unless the machine already has a policy in place.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
# --no-install-recommends: docker-registry/containerd recommend things we don't want (e.g. a system service setup).
apt-get install -y -qq --no-install-recommends "${missing[@]}"
