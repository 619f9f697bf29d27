# Sourced by the scripts under tests/ that talk to the local cluster: the
# cluster's kubeconfig and its own kubectl and helm builds.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export KUBECONFIG=$PWD/target/cluster/kubeconfig
bin=$PWD/target/cluster/bin
kubectl() { "$bin/kubectl" "$@"; }
helm() { "$bin/helm" "$@"; }
