# AttestMesh: one target per habit. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The native binaries the npm packages ship. Not node_modules/.bin/*: those are Node wrappers
# that exit 0 even when the tool fails, which would turn every red check green.
FOUNDRY := node_modules/@foundry-rs
FORGE := $(FOUNDRY)/forge-linux-amd64/bin/forge
CARGO ?= cargo

.PHONY: help demo bench deps system-deps python-deps container-deps nextest build images fmt lint bindings bindings-check devnet devnet-down test test-long test-contracts test-deploy test-rust test-compose snapshots clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

deps: node_modules/.installed system-deps python-deps ## Install the pinned offline toolchain (Foundry from npm, solc-js, Solidity libraries) and the system tools the tests use

system-deps: ## ip (namespaces) and nft (fault injection) from Debian, when missing
	@command -v ip >/dev/null && command -v nft >/dev/null || { \
		echo "installing iproute2 and nftables (apt)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 nftables; }

# A real Python gRPC client (grpcio, gRPC C-core) for agent/tests/it/grpcio.rs, in a venv the
# test finds at target/pyenv (ATTESTMESH_TEST_PYTHON overrides it).
PYENV := target/pyenv
python-deps: $(PYENV)/.installed ## grpcio from PyPI into target/pyenv, for the test of a Python client on the agent socket

$(PYENV)/.installed: agent/tests/grpcio-requirements.txt
	@python3 -m venv --clear $(PYENV) 2>/dev/null || { \
		echo "installing python3 and python3-venv (apt)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv && \
		python3 -m venv --clear $(PYENV); }
	$(PYENV)/bin/pip install --quiet --disable-pip-version-check -r agent/tests/grpcio-requirements.txt
	@touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 20+ (apt-get install nodejs npm)"; exit 1; }
	@command -v $(CARGO) >/dev/null || { echo "cargo is missing: install Rust 1.95 (rustup)"; exit 1; }
	npm ci --no-audit --no-fund
	@touch $@

build: deps ## Compile contracts and Rust crates
	$(FORGE) build
	$(CARGO) build --workspace --all-targets

fmt: deps ## Format Solidity and Rust
	$(FORGE) fmt
	$(CARGO) fmt --all

bindings: deps ## Regenerate bindings/abi/*.json from the contracts (the Rust bindings read them)
	$(FORGE) build
	node tools/export-abi.js

bindings-check: bindings ## Fail when the committed ABIs differ from what the contracts produce
	@git diff --exit-code -- bindings/abi || { echo "bindings/abi is stale: run 'make bindings' and commit it"; exit 1; }
	@test -z "$$(git status --porcelain -- bindings/abi)" || { echo "bindings/abi has uncommitted files: run 'make bindings' and commit them"; exit 1; }

lint: deps bindings-check ## Formatting checks, bindings drift, clippy with warnings as errors, no import circles between a crate's modules
	$(FORGE) fmt --check
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 tools/module-cycles.py .

test-contracts: deps ## Foundry unit, fuzz and invariant tests; fails when a gas snapshot moved
	FORGE_SNAPSHOT_CHECK=true $(FORGE) test

test-deploy: deps ## Deploy script against a real anvil, twice (idempotency)
	test/deploy/deploy-on-anvil.sh

nextest: ## cargo-nextest, when missing
	@$(CARGO) nextest --version >/dev/null 2>&1 || $(CARGO) install cargo-nextest --locked

test-rust: deps nextest ## Rust unit and integration tests (cargo-nextest), then doc tests
	$(CARGO) test --workspace --doc
	$(CARGO) nextest run --workspace --no-fail-fast

# The compose tests are ignored in the plain nextest run: they need the images test-compose
# builds first.
COMPOSE_TESTS := test(/^podman_compose::/)

test: lint test-contracts test-deploy test-rust test-compose ## Everything CI runs

test-long: deps nextest ## The longer profile: the tests too slow for every run (8-node cold start)
	$(CARGO) nextest run --workspace --run-ignored only --no-fail-fast -E 'not $(COMPOSE_TESTS)'

container-deps: ## podman with runc, netavark and debootstrap from Debian, when missing (podman-compose comes from PyPI on first use)
	deploy/podman/install-deps.sh

images: container-deps ## Build the agent, webhook and indexer images with podman from release binaries, nothing pulled (debootstrap base): localhost/attestmesh/<bin>:dev
	deploy/podman/build-images.sh

# CI builds the images from the debug binaries the test run compiled already (the same recipe,
# --profile dev): a cold release build would add about 8 minutes.
test-compose: deps container-deps nextest ## The node's compose file under podman-compose against the devnet: health gate, app on the socket, meshing, restart, bad input (needs root)
	deploy/podman/build-images.sh --profile dev
	$(CARGO) nextest run -p attestmesh-deploy --run-ignored only -E '$(COMPOSE_TESTS)' --test-threads 1 --no-fail-fast

snapshots: deps ## Re-record gas snapshots after an intended gas change (commit snapshots/)
	rm -rf snapshots
	$(FORGE) test

# EXIT_WHEN_HEALTHY=1: exit 0 once every node is healthy and the round trip worked.
demo: deps ## The devnet and NODES=3 agents, each in its own namespace with attestmesh0, shown healthy (needs root); Ctrl-C stops and cleans up
	$(CARGO) build --quiet -p cluster-mesh-agent -p attestmesh-testbed -p attestmesh-indexer --bins
	target/debug/attestmesh-testbed demo --nodes $(or $(NODES),3) --agent-bin target/debug/cluster-mesh-agent \
		--indexer-bin target/debug/attestmesh-indexer \
		$(if $(filter 1 true yes,$(EXIT_WHEN_HEALTHY)),--exit-when-healthy)

bench: deps ## Measure clusters at 2 s blocks and instant mining (start/restart to whole at 3-32 nodes, a join, sponsored operations, steady-state cost, iperf3 over attestmesh0 vs veth, gas, indexer catch-up) into bench/RESULTS.md + SVG (needs root)
	@command -v iperf3 >/dev/null || { echo "installing iperf3 (apt)"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3; }
	$(CARGO) build --release --quiet -p cluster-mesh-agent -p attestmesh-testbed -p attestmesh-indexer --bins
	target/release/attestmesh-testbed bench --agent-bin target/release/cluster-mesh-agent \
		--indexer-bin target/release/attestmesh-indexer

devnet: deps ## Bring the local devnet up in the foreground (NODES=3); Ctrl-C stops it
	$(CARGO) run --quiet -p attestmesh-devnet -- up --nodes $(or $(NODES),3)

devnet-down: ## Clean up after a devnet that crashed
	$(CARGO) run --quiet -p attestmesh-devnet -- down

clean: ## Remove build outputs
	rm -rf out cache target node_modules
