# The two commands the README promises: `make run` and `make test`.
CARGO ?= cargo
CONFIG ?= config

.PHONY: run build test lint bench release clean

build:
	$(CARGO) build --release

## Build and start the daemon on the shipped config (echo plugin, local SQLite).
run: build
	./target/release/ductile system start --config $(CONFIG)

## Everything CI runs: formatting, lints, forbidden patterns, every test.
test: lint
	$(CARGO) test

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	./scripts/forbid

## Benchmarks: prints figures; not part of `make test`.
bench: release
	$(CARGO) bench --bench bench

release:
	$(CARGO) build --release
	@ls -l target/release/ductile

clean:
	$(CARGO) clean
