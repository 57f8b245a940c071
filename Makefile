# rpixen developer entry points. `make help` lists them.
SHELL := /bin/bash
BOARD ?= qemu-virt
DIST  := dist
CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
RPIXEN := $(TARGET_DIR)/release/rpixen
DOCKER ?= /usr/bin/docker
DOCKER_TAG ?= rpixen
# Packages made of pinned .debs are rebuilt when their pkg.yml changes; those built from this
# repository are rebuilt every time (cargo and the build script decide what is stale).
PKG_DEBS  := busybox dropbear e2fsprogs firmware firmware-brcm kernel u-boot wireless-regdb wpasupplicant xen
PKG_BUILT := dom0-init hypervisor agent

.PHONY: help setup build lint test test-long test-source-build bench soak live run pkgs pkgs-built docker docker-bin clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup: ## Install the host tools the build and tests need (Debian 12, root)
	bash scripts/setup-host.sh

build: ## Build the rpixen CLI
	$(CARGO) build --release -p rpixen

pkgs: $(PKG_DEBS:%=$(DIST)/pkg/%/index.json) pkgs-built ## Build every package's OCI layout into dist/pkg/<name>

$(DIST)/pkg/%/index.json: pkg/%/pkg.yml | build
	$(RPIXEN) pkg build pkg/$*

pkgs-built: build
	$(RPIXEN) pkg build $(PKG_BUILT:%=pkg/%)

live: pkgs ## Write dist/live.raw for BOARD (default qemu-virt)
	$(RPIXEN) live $(BOARD) -o $(DIST)/live.raw

run: ## Boot dist/live.raw in QEMU for BOARD, serial console on this terminal (Ctrl-A X quits)
	RPIXEN=$(RPIXEN) bash scripts/run-qemu.sh $(BOARD) $(DIST)/live.raw

docker-bin: ## Build the static x86_64 rpixen the container carries (dist/docker/rpixen)
	$(CARGO) build --release -p rpixen --target x86_64-unknown-linux-musl
	mkdir -p $(DIST)/docker
	strip -o $(DIST)/docker/rpixen $(TARGET_DIR)/x86_64-unknown-linux-musl/release/rpixen
	bash scripts/sbom-sources.sh $(DIST)/docker/src

docker: pkgs docker-bin ## Build the rpixen container image (docker run rpixen live > live.raw)
	DOCKER_BUILDKIT=1 $(DOCKER) build --network=host --build-arg ARTIFACTS=context -t $(DOCKER_TAG) .

lint: ## Check formatting (rustfmt.toml) and clippy warnings for the whole workspace
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

test: lint ## Run every test (format and clippy checks, unit, tool-checked, QEMU boots)
	RPIXEN_BIN=$(abspath $(TARGET_DIR))/release/rpixen $(CARGO) test --workspace --release --no-fail-fast

test-long: ## The slow end-to-end flows outside CI (~45 min): fresh clone make live, docker run live, source build, the agent's QEMU chain
	RPIXEN_BIN=$(abspath $(TARGET_DIR))/release/rpixen $(CARGO) test --workspace --release --no-fail-fast -- --ignored --nocapture --test-threads=1

test-source-build: ## Build the container from source in a fresh clone (~15 min): equals make live, boots
	$(CARGO) test --release -p rpixen --test it source_build -- --ignored --nocapture

SOAK_CUTS ?= 50
soak: build ## The update agent's tortures, SOAK_CUTS rounds each (default 50; `make test` runs 10 process kills): process kills on the host, power cuts (QEMU killed) on QEMU virt
	AGENT_CUTS=$(SOAK_CUTS) $(CARGO) test --release -p rpixen-agent --test it killed_at_random_moments -- --nocapture
	AGENT_QEMU_CUTS=$(SOAK_CUTS) RPIXEN_BIN=$(abspath $(TARGET_DIR))/release/rpixen $(CARGO) test --release -p rpixen-agent --test it powercut -- --ignored --nocapture

bench: ## Run the benchmarks (each prints its ratio against the peer tool)
	$(CARGO) bench --workspace

clean: ## Remove build outputs
	rm -rf $(DIST) target
