# lifecycle-operator: `make demo` shows it working, `make test` runs every test.
SHELL := /bin/bash

.PHONY: test test-compat deps disk lint chart-test chart-readme unit test-cluster test-harness test-operator test-e2e chaos bench bench-ci image cluster-up cluster-down demo demo-down crds build

## test: formatting, lints, unit tests, then the harness and operator tests on a real local cluster of the newest Kubernetes (hack/k8s/), chaos, and the small benchmark
test: deps disk lint unit cluster-up test-cluster chaos bench-ci

# The oldest supported Kubernetes: the last of K8S_VERSIONS in hack/lib.sh.
OLDEST_K8S = $(shell bash -c 'source hack/lib.sh && echo $$K8S_OLDEST')

## test-compat: the cluster suites (harness, operator, e2e) on the oldest supported Kubernetes; stops any other cluster first and its own at the end
test-compat: deps
	$(MAKE) --no-print-directory cluster-down
	K8S_VERSION=$(OLDEST_K8S) $(MAKE) --no-print-directory cluster-up test-cluster; \
	  status=$$?; K8S_VERSION=$(OLDEST_K8S) $(MAKE) --no-print-directory cluster-down; exit $$status

## deps: the Debian packages the tests need (busybox for the marker tests, the cluster's own); a no-op when present
deps:
	bash hack/cluster/install-deps.sh

## disk: fails up front when the disk cannot hold a whole make test (hack/disk.sh says how much it needs)
disk:
	bash hack/disk.sh

## lint: fmt, clippy, then helm lint, kube-score, shellcheck, yamllint, chart README drift (tests/lint.sh), then make chart-test
lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --all-features -- -D warnings
	bash tests/lint.sh
	@$(MAKE) --no-print-directory chart-test

## chart-test: the chart's render checks, no cluster: helm template with various values, asserting on the YAML (tests/chart.sh)
chart-test:
	bash tests/chart.sh

## chart-readme: regenerate charts/lifecycle-operator/README.md from values.yaml (helm-docs)
chart-readme:
	bash hack/tools/chart-readme.sh

unit:
	cargo test

test-cluster: test-harness test-operator test-e2e

test-harness:
	bash hack/cluster/selftest.sh

test-operator:
	bash tests/run-cluster-tests.sh

test-e2e:
	bash tests/e2e.sh
	bash tests/admission.sh

## chaos: shutdowns, kills, control-plane restarts and two operators on the local cluster
chaos: cluster-up
	bash tests/chaos.sh

## bench: the operator vs a raw server-side-apply loop, writes, CPU, RSS per object (kwok pods), hook-to-status latency: one table, also in target/bench/table.md (README: Performance)
bench: cluster-up
	bash tests/bench.sh

## bench-ci: the same at a small size, last in make test, so that the benchmark cannot rot
bench-ci: cluster-up
	bash tests/bench.sh ci

## image: the operator image (static binary, no Docker) pushed to the local registry
image:
	bash hack/image.sh

## cluster-up / cluster-down: the single-node cluster (kubeconfig: target/cluster/kubeconfig); K8S_VERSION=1.32 picks another version (hack/k8s/<minor>/), default K8S_DEFAULT (hack/lib.sh); cluster-down stops whichever is up
cluster-up:
	bash hack/cluster/up.sh

cluster-down: demo-down
	bash hack/cluster/down.sh

## demo: cluster up, operator running, the nginx example applied, its status printed
demo: cluster-up
	bash hack/demo.sh

demo-down:
	bash hack/demo.sh stop

## crds: regenerate crds/ from the Rust types
crds:
	for f in lifecyclepolicies.yaml clusterlifecyclepolicies.yaml; do \
	  cargo run --quiet --bin crdgen -- "$$f" > "crds/$$f" && cp "crds/$$f" charts/lifecycle-operator/files/ || exit 1; \
	done

build:
	cargo build --release --bin lifecycle-operator
