# The two commands the README promises: `make run` and `make test`.
CARGO ?= cargo
CONFIG ?= config
HOST := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
# Release builds are non-PIE and statically linked (glibc included): without
# load-time relocations or a dynamic loader the binary starts faster (a third
# of `ductile version`'s time) and its pages stay shared. The explicit --target
# keeps these flags off build scripts and proc macros.
RELEASE_FLAGS ?= -C relocation-model=static -C target-feature=+crt-static
BIN := target/$(HOST)/release/ductile

.PHONY: run build plugins test lint bench release clean

build: plugins
	RUSTFLAGS="$(RELEASE_FLAGS)" $(CARGO) build --release --target $(HOST) --bin ductile
	cp -f $(BIN) target/ductile

## The bundled plugins (docs/PLUGINS.md): every plugins/<name>/ with a Cargo.toml and a manifest
## is built as `ductile-<name>` and copied next to its manifest as `run`, the
## entrypoint the manifest names (renamed into place, so a running job keeps its file).
PLUGIN_CRATES := $(filter $(patsubst plugins/%/manifest.yaml,%,$(wildcard plugins/*/manifest.yaml)),$(patsubst plugins/%/Cargo.toml,%,$(wildcard plugins/*/Cargo.toml)))
PLUGIN_OUT := plugins/target/$(HOST)/release
# sqlite_change reads plain tables: SQLite's full-text, R-tree, dbstat and
# extension loading stay out of its build, which keeps it under 2 MB.
PLUGIN_SQLITE_FLAGS ?= -USQLITE_ENABLE_FTS3 -USQLITE_ENABLE_FTS3_PARENTHESIS -USQLITE_ENABLE_FTS5 \
	-USQLITE_ENABLE_RTREE -USQLITE_ENABLE_DBSTAT_VTAB -USQLITE_ENABLE_STAT4 \
	-USQLITE_ENABLE_LOAD_EXTENSION -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_OMIT_DEPRECATED \
	-DSQLITE_OMIT_SHARED_CACHE
plugins:
	LIBSQLITE3_FLAGS="$(PLUGIN_SQLITE_FLAGS)" RUSTFLAGS="$(RELEASE_FLAGS)" $(CARGO) build --release --target $(HOST) --manifest-path plugins/Cargo.toml --bins
	@for p in $(PLUGIN_CRATES); do \
		cp -f $(PLUGIN_OUT)/ductile-$$p plugins/$$p/run.new && mv -f plugins/$$p/run.new plugins/$$p/run || exit 1; \
		echo "plugins/$$p/run"; \
	done

## Build and start the daemon on the shipped config (echo plugin, local SQLite).
run: build
	./target/ductile system start --config $(CONFIG)

## Everything CI runs: formatting, lints, forbidden patterns, every test.
test: lint
	$(CARGO) test --manifest-path plugins/Cargo.toml
	$(CARGO) test

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) fmt --manifest-path plugins/Cargo.toml --all -- --check
	$(CARGO) clippy --manifest-path plugins/Cargo.toml --all-targets -- -D warnings
	./scripts/forbid

## Benchmarks: prints figures; not part of `make test`. The http section
## drives the listeners with wrk (installed from Debian when missing). Ends with the crash
## storm at full size (STORM_KILLS daemon kills under STORM_CLIENTS one-shot loops) and
## the pipeline crash storm (PIPELINE_STORM_KILLS kills while PIPELINE_STORM_CLIENTS
## loops start pipeline trees).
STORM_KILLS ?= 60
STORM_CLIENTS ?= 4
PIPELINE_STORM_KILLS ?= 60
PIPELINE_STORM_CLIENTS ?= 3
bench: release
	@command -v wrk >/dev/null || apt-get install -y -qq wrk
	DUCTILE_BIN=$(CURDIR)/target/ductile $(CARGO) bench --bench bench
	$(PLUGIN_OUT)/plugin-bench 200
	DUCTILE_STORM_KILLS=$(STORM_KILLS) DUCTILE_STORM_CLIENTS=$(STORM_CLIENTS) \
		$(CARGO) test --test it hardening::crash_storm -- --nocapture
	DUCTILE_PIPELINE_STORM_KILLS=$(PIPELINE_STORM_KILLS) DUCTILE_PIPELINE_STORM_CLIENTS=$(PIPELINE_STORM_CLIENTS) \
		$(CARGO) test --test it pipeline_crash_storm -- --nocapture

release: build
	@ls -l target/ductile

clean:
	$(CARGO) clean
