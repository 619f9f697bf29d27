#!/usr/bin/env bash
# Checks, before `make test` builds anything, that the disk can hold the whole
# run. A full disk does not fail a build first: the kubelet sets DiskPressure,
# taints the node, and pods stay Pending with no reason in the tests' output
# (a CI run failed that way at 6 GiB free). So say it up front.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

gib_free() { df --output=avail -B1G "$1" | tail -1 | tr -d ' '; }
gib_used() { du -s -B1G "$1" 2>/dev/null | cut -f1 || echo 0; }

# Measured on 2026-12-03: a fresh checkout's target/ grows to ~12 GiB; a cold
# Kubernetes build fills Go's build and module caches with ~15 GiB; the
# cluster's images, logs and the kubelet's 1% eviction floor need ~4 GiB.
target_gib=$((12 - $(gib_used "$REPO_ROOT/target")))
((target_gib > 0)) || target_gib=0
go_gib=0
[[ -f $BIN_CACHE/.complete ]] || go_gib=15
need=$((target_gib + go_gib + 4))
free=$(gib_free "$REPO_ROOT")
if ((free < need)); then
  die "$free GiB free on the disk of $REPO_ROOT; make test needs about $need GiB" \
    "(target/ $target_gib, Go caches $go_gib, cluster 4). Free some space first:" \
    "other checkouts' target/, stale keys in $CACHE_ROOT."
fi
log "disk: $free GiB free, about $need GiB needed"
