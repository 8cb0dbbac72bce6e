# sidecar-order: build, test and run. Targets that talk to a cluster use
# $KUBECONFIG when it is set (the local cluster's kubeconfig otherwise).
SHELL := /bin/bash
CARGO ?= cargo
STATE ?= $(or $(SIDECAR_ORDER_STATE),/tmp/sidecar-order-cluster)
export KUBECONFIG ?= $(STATE)/kubeconfig

.PHONY: build test lint fmt bench fuzz crds cluster-up cluster-down cluster-smoke

build:
	$(CARGO) build --release --locked

test:
	$(CARGO) test --locked

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench --locked --bench engine

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
