# shellcheck shell=bash disable=SC2154 # app_ns, out: set by tests/e2e.sh
# `kubectl lifecycle` (the kubectl-lifecycle plugin) on the demo: sourced
# by tests/e2e.sh while examples/nginx.yaml is applied in $app_ns and the
# chart's operator runs. kubectl finds the plugin on PATH, as a user's would.

plugin_bin=$REPO_ROOT/target/debug
check "plugin builds" cargo build --quiet --bin kubectl-lifecycle
lifecycle() { PATH="$plugin_bin:$PATH" "$CLUSTER_BIN/kubectl" lifecycle "$@"; }
check "kubectl finds the plugin" bash -c "PATH=$plugin_bin:\$PATH $CLUSTER_BIN/kubectl plugin list 2>/dev/null | grep -q kubectl-lifecycle"

# status: both workloads, their pods, each postStart counted from its marker.
lifecycle status nginx-graceful -n "$app_ns" >"$out/plugin-status.txt" 2>&1
sed 's/^/# /' "$out/plugin-status.txt"
status_shows_both() {
  grep -q '^  Deployment/frontend  Patched' "$out/plugin-status.txt" &&
    grep -q '^  DaemonSet/edge  Patched' "$out/plugin-status.txt"
}
check "status: both workloads" status_shows_both
pods_counted() {
  lifecycle status nginx-graceful -n "$app_ns" -o json |
    jq -e '[.workloads[] | select(.pods | length > 0)] | length == 2 and
      all(.[].pods[].containers[].hooks[] | select(.hook == "postStart"); .outcome == "ran" or .outcome == "implied") and
      any(.[].pods[].containers[].hooks[]; .hook == "postStart" and .outcome == "ran" and .evidence == "marker")'
}
check "status: every pod of both workloads, postStart counted (marker)" pods_counted
check "status -o yaml parses" bash -c "PATH=$plugin_bin:\$PATH $CLUSTER_BIN/kubectl lifecycle status nginx-graceful -n $app_ns -o yaml | python3 -c 'import sys, yaml; assert yaml.safe_load(sys.stdin)[\"policy\"][\"name\"] == \"nginx-graceful\"'"

# pod --follow, then the pod's deletion: its preStop with evidence and duration.
victim=$(kubectl -n "$app_ns" get pods -l pod=frontend --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}')
lifecycle pod "$victim" -n "$app_ns" --follow --timeout 120 >"$out/plugin-pod.txt" 2>&1 &
follower=$!
sleep 2
kubectl -n "$app_ns" delete pod "$victim" --wait=false >/dev/null
wait "$follower"
follow_rc=$?
sed 's/^/# /' "$out/plugin-pod.txt"
check "pod --follow exits 0 once the pod stopped" test "$follow_rc" = 0
check "pod: the preStop ran, proven by its marker, with its duration" \
  grep -Eq '^  preStop: +ran: exit code 0 in 5\.[0-9]{3}s of a [0-9]+s grace period' "$out/plugin-pod.txt"
check "pod: who put the hook there" grep -q 'owner     LifecyclePolicy nginx-graceful' "$out/plugin-pod.txt"
check "pod: the policy's script, not the wrapper" grep -q 'handler   exec: sleep 5' "$out/plugin-pod.txt"

# Without permission to read logs: said, and the rest still shown.
kubectl -n "$app_ns" create role e2e-nolog --verb=get,list --resource=pods,events,deployments,daemonsets,lifecyclepolicies.lifecycle-operator.io >/dev/null
kubectl -n "$app_ns" create rolebinding e2e-nolog --role=e2e-nolog --user=e2e-erin >/dev/null
one=$(kubectl -n "$app_ns" get pods -l pod=frontend --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}')
nolog() { lifecycle pod "$one" -n "$app_ns" --as e2e-erin 2>&1 | grep -q 'log of nginx not read: no permission to get pods/log in namespace'; }
check "pod: a missing pods/log permission is named" until_ok 30 nolog

# explain: slots, the ledger's originals, the owners, what a release restores.
lifecycle explain deployment/frontend -n "$app_ns" >"$out/plugin-explain.txt" 2>&1
sed 's/^/# /' "$out/plugin-explain.txt"
check "explain: the ledger's originals" grep -Eq '^    terminationGracePeriodSeconds +original: 30$' "$out/plugin-explain.txt"
check "explain: an unset original" grep -Eq '^    nginx/preStop +original: unset$' "$out/plugin-explain.txt"
check "explain: the owner in managedFields" grep -q 'lifecycle-operator/nginx-graceful (Apply): nginx/postStart, nginx/preStop, terminationGracePeriodSeconds' "$out/plugin-explain.txt"
check "explain: the release's diff" grep -q '^+      terminationGracePeriodSeconds: 30$' "$out/plugin-explain.txt"

# diff -f: the policy as it is applied changes nothing (exit 0), read back
# whole with kubectl (status, uid and all; the example's own grace period was
# patched twice above); a new policy prints its diff and exits 1, creating nothing.
kubectl -n "$app_ns" get lcp nginx-graceful -o yaml >"$out/plugin-live.yaml"
lifecycle diff -f "$out/plugin-live.yaml" -n "$app_ns" >"$out/plugin-diff-same.txt" 2>&1
same_rc=$?
sed 's/^/# /' "$out/plugin-diff-same.txt"
check "diff -f of the applied policy exits 0" test "$same_rc" = 0
check "diff -f of the applied policy shows no diff" bash -c "! grep -q '^+++' $out/plugin-diff-same.txt && grep -q 'changes 0 of 2 matched workloads' $out/plugin-diff-same.txt"
# The example file (three documents) against it: only the grace period the
# patches above moved (50 s) back to the example's 60 s, only the policy compared.
lifecycle diff -f examples/nginx.yaml -n "$app_ns" >"$out/plugin-diff-example.txt" 2>&1
example_rc=$?
example_diff() {
  local f=$out/plugin-diff-example.txt
  [[ $example_rc == 1 ]] && grep -q '^-      terminationGracePeriodSeconds: 50$' "$f" &&
    grep -q '^+      terminationGracePeriodSeconds: 60$' "$f" &&
    [[ $(grep -c '^[-+] ' "$f") == 4 ]] && grep -q '^Note: only the policy is compared' "$f"
}
check "diff -f of the example file: exit 1, only the patched grace period, only the policy" example_diff
kubectl -n "$app_ns" create deployment plain --image=busybox:latest -- sleep 3600 >/dev/null
kubectl -n "$app_ns" label deployment plain app=plain >/dev/null
lifecycle diff -f tests/e2e/plugin-diff.yaml -n "$app_ns" >"$out/plugin-diff-new.txt" 2>&1
new_rc=$?
sed 's/^/# /' "$out/plugin-diff-new.txt"
check "diff -f of a new policy exits 1" test "$new_rc" = 1
check "diff -f prints the template diff" bash -c "grep -q '^--- Deployment/plain (live)' $out/plugin-diff-new.txt && grep -q '^+        lifecycle:' $out/plugin-diff-new.txt"
check "diff -f created nothing" bash -c "! $CLUSTER_BIN/kubectl -n $app_ns get lcp plain-drain >/dev/null 2>&1"
check "diff -f left the Deployment alone" bash -c "test -z \"\$($CLUSTER_BIN/kubectl -n $app_ns get deploy plain -o jsonpath='{.spec.template.spec.containers[0].lifecycle}')\""
kubectl -n "$app_ns" delete deployment plain --wait=false >/dev/null

# Errors a person understands.
lifecycle status nope -n "$app_ns" >"$out/plugin-nope.txt" 2>&1
nope_rc=$?
check "status of a missing policy exits 1, naming it" bash -c "test $nope_rc = 1 && grep -q 'LifecyclePolicy \"nope\" not found in namespace \"$app_ns\"' $out/plugin-nope.txt"
check "completion scripts" bash -c "$plugin_bin/kubectl-lifecycle completion bash | grep -q kubectl-lifecycle"
