# sidecar-order: build, test and run. Targets that talk to a cluster use
# $KUBECONFIG when it is set (the local cluster's kubeconfig otherwise).
SHELL := /bin/bash
CARGO ?= cargo
STATE ?= $(or $(SIDECAR_ORDER_STATE),/tmp/sidecar-order-cluster)
export KUBECONFIG ?= $(STATE)/kubeconfig

.PHONY: build test e2e check lint fmt bench fuzz crds cluster-up cluster-down cluster-smoke image deploy undeploy run demo print-kubectl chart-check install-plugin load chaos e2e-matrix e2e-oldest

build:
	$(CARGO) build --release --locked

KUBECTL ?= $(shell command -v $(HOME)/.cache/sidecar-order/k8s-$(or $(K8S_VERSION),v1.34.4)/bin/kubectl || command -v kubectl)
IMAGE ?= localhost/sidecar-order:dev
STATIC_BIN := target/static/x86_64-unknown-linux-gnu/image/sidecar-order

# A static binary (glibc, crt-static) in an image built from the
# Containerfile by buildah (installed when missing), written to
# target/image/sidecar-order.oci.tar and imported into the local cluster's
# containerd when it runs (no registry needed).
image:
	RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=target/static \
	  $(CARGO) build --locked --profile image --features jemalloc --target x86_64-unknown-linux-gnu
	STATE=$(STATE) bash scripts/image.sh $(STATIC_BIN) $(IMAGE)

# Installs the CRD, RBAC and the controller with the real config/ manifests.
deploy:
	$(KUBECTL) apply -k config/default
	$(KUBECTL) -n sidecar-order-system rollout restart deployment/sidecar-order-controller
	$(KUBECTL) -n sidecar-order-system rollout status deployment/sidecar-order-controller --timeout=180s

undeploy:
	$(KUBECTL) delete -k config/default --ignore-not-found --wait=false

# Runs the controller here, against $$KUBECONFIG (the CRD must be installed).
run:
	$(KUBECTL) apply -f crds/sidecarorderreports.yaml
	$(CARGO) run --locked -- run --metrics-addr 127.0.0.1:8080

# From a fresh machine: cluster, image, deploy, the article's pods, reports.
demo:
	bash e2e/demo.sh

test:
	$(CARGO) test --locked
	$(CARGO) test --locked --features jemalloc --lib controller::memory

# The live-cluster suite: cluster up, controller image and deploy, scenarios
# 1-11, cluster down (KEEP_CLUSTER=1 leaves it running). See e2e/run.sh.
e2e:
	bash e2e/run.sh

# The live suite on every kubelet release from 1.29 to 1.37 (each build
# cached by version), one table; MATRIX_VERSIONS="v1.29.6 v1.37.2" for some.
# See e2e/matrix.sh.
e2e-matrix:
	bash e2e/matrix.sh

# The load harness (issue 12): kwok fake nodes on the local cluster (started
# when it is not running), the controller as a process here (default: the
# static binary of make image; LOAD_CONTROLLER_BIN=...), LOAD_PODS pods at
# LOAD_RATE/s, LOAD_CHURN pods/s for LOAD_SECONDS, a restart, one table, and
# every verdict checked against its pod's labels. See load/run.sh.
load:
	bash load/run.sh

# The chaos run (issue 9): the load harness' kwok pods judged by two
# controller replicas with --leader-elect (CHAOS_REPLICAS), each through its
# own TCP proxy to the API server, while, during churn, leaders and
# standbys are SIGKILLed, the API server restarted (e2e/cluster/apiserver.sh),
# etcd compacted with every connection dropped (relists) and the leader's
# network cut; one table: verdicts, increments counted once, duplicate
# Events, failover, RSS. Defaults: CHAOS_PODS=5000 CHAOS_CHURN=20
# CHAOS_KILLS=50 CHAOS_APISERVER_RESTARTS=5 CHAOS_RELISTS=3 CHAOS_CUTS=3.
# See load/chaos/main.rs.
chaos:
	LOAD_TARGET=chaos LOAD_NAMESPACE=$${LOAD_NAMESPACE:-sidecar-order-chaos} \
	  LOAD_DIR=$${LOAD_DIR:-/tmp/sidecar-order-chaos} bash load/run.sh

# CI's slice of make e2e-matrix: the oldest kubelet sidecar-order claims
# (v1.29.6 on a v1.30.14 control plane, kubernetes#125880 visible) with the
# short suite. The whole matrix does not fit CI's 90 minutes (README, Test).
e2e-oldest:
	MATRIX_VERSIONS=v1.29.6 MATRIX_SUITE=smoke MATRIX_OUT=/tmp/sidecar-order-matrix-ci.txt bash e2e/matrix.sh

# What CI runs (.ci/run): lint, unit tests, the live-cluster suite, then
# the short suite on the oldest kubelet.
check: lint test e2e e2e-oldest

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(MAKE) --no-print-directory chart-check

# Helm chart: helm lint and helm template (default and full values) with
# Helm 3 and 4 (built from the Go module proxy, cached), the rendered
# manifests checked, and the rendered flags parsed by the binary.
chart-check:
	CARGO=$(CARGO) bash scripts/chart-check.sh

# The binary as a kubectl plugin: `kubectl sidecar-order show|analyze`.
PLUGIN_DIR ?= /usr/local/bin
install-plugin: build
	install -D -m 0755 target/release/sidecar-order $(PLUGIN_DIR)/kubectl-sidecar_order
	@echo "installed $(PLUGIN_DIR)/kubectl-sidecar_order: try kubectl sidecar-order --help"

fmt:
	$(CARGO) fmt --all

# Engine throughput (criterion) and the controller's steady memory per pod.
bench:
	$(CARGO) bench --locked --bench engine
	$(CARGO) bench --locked --bench store_memory

# Fuzz parse + judge for FUZZ_SECONDS (needs nightly-free cargo-fuzz via RUSTC_BOOTSTRAP).
FUZZ_SECONDS ?= 60
fuzz:
	bash fuzz/run.sh $(FUZZ_SECONDS)

cluster-up:
	bash e2e/cluster/deps.sh && bash e2e/cluster/build.sh && bash e2e/cluster/up.sh

cluster-down:
	bash e2e/cluster/down.sh

cluster-smoke:
	bash e2e/cluster/smoke.sh

# The CRD is generated from the Rust types; a test fails when these differ.
crds:
	$(CARGO) run --quiet --locked -- crd > crds/sidecarorderreports.yaml
	cp crds/sidecarorderreports.yaml config/crd/sidecarorderreports.yaml
	cp crds/sidecarorderreports.yaml charts/sidecar-order/crds/sidecarorderreports.yaml

print-kubectl:
	@echo $(KUBECTL)
