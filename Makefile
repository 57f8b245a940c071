# rpixen developer entry points. `make help` lists them.
SHELL := /bin/bash
BOARD ?= qemu-virt
DIST  := dist
CARGO ?= cargo

.PHONY: help setup build test bench live run pkgs docker clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

setup: ## Install the host tools the build and tests need (Debian 12, root)
	bash scripts/setup-host.sh

build: ## Build the rpixen CLI
	$(CARGO) build --release -p rpixen

test: ## Run every test (unit, tool-checked, QEMU boots)
	$(CARGO) test --workspace --release

clean: ## Remove build outputs
	rm -rf $(DIST) target
