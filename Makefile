# The two commands the README promises: `make run` and `make test`.
CARGO ?= cargo
CONFIG ?= config
HOST := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
# The target triple to build for: this machine by default; cross builds name
# another (TARGET=aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf;
# linker and C compiler as in docs/DEPLOYMENT.md, "Cross builds").
TARGET ?= $(HOST)
# Release builds are non-PIE and statically linked (glibc included): without
# load-time relocations or a dynamic loader the binary starts faster (a third
# of `ductile version`'s time) and its pages stay shared. No CPU-specific
# flags: the binary runs on any machine of its architecture. The explicit
# --target keeps these flags off build scripts and proc macros.
RELEASE_FLAGS ?= -C relocation-model=static -C target-feature=+crt-static
BIN := target/$(TARGET)/release/ductile
# The build date `ductile version` reports: the last commit's time unless
# SOURCE_DATE_EPOCH is set, so a rebuild of one commit is the same binary.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)

.PHONY: run build plugins test lint bench release clean dist image-context image

build: plugins
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) RUSTFLAGS="$(RELEASE_FLAGS)" \
		$(CARGO) build --release --target $(TARGET) --bin ductile
	$(if $(filter $(HOST),$(TARGET)),cp -f $(BIN) target/ductile)

## The bundled plugins (docs/PLUGINS.md): every plugins/<name>/ with a Cargo.toml and a manifest
## is built as `ductile-<name>` and copied next to its manifest as `run`, the
## entrypoint the manifest names (renamed into place, so a running job keeps its file).
PLUGIN_CRATES := $(filter $(patsubst plugins/%/manifest.yaml,%,$(wildcard plugins/*/manifest.yaml)),$(patsubst plugins/%/Cargo.toml,%,$(wildcard plugins/*/Cargo.toml)))
# The plugins link statically against musl when its Rust target and C
# compiler are installed (scripts/bootstrap installs both): each is about
# 0.8 MB smaller than with static glibc, which keeps fetch and notify under
# 2 MB. Without them they are static glibc binaries, like the daemon (which
# stays on glibc: its SQLite work is faster with glibc's allocator).
MUSL_TARGET := $(subst -gnu,-musl,$(TARGET))
MUSL_CC := $(firstword $(subst -, ,$(TARGET)))-linux-musl-gcc
PLUGIN_TARGET ?= $(if $(and $(filter $(MUSL_TARGET),$(shell rustup target list --installed 2>/dev/null)),$(shell command -v $(MUSL_CC) 2>/dev/null)),$(MUSL_TARGET),$(TARGET))
PLUGIN_OUT := plugins/target/$(PLUGIN_TARGET)/release
# sqlite_change reads plain tables: SQLite's full-text, R-tree, dbstat and
# extension loading stay out of its build, which keeps it under 2 MB.
PLUGIN_SQLITE_FLAGS ?= -USQLITE_ENABLE_FTS3 -USQLITE_ENABLE_FTS3_PARENTHESIS -USQLITE_ENABLE_FTS5 \
	-USQLITE_ENABLE_RTREE -USQLITE_ENABLE_DBSTAT_VTAB -USQLITE_ENABLE_STAT4 \
	-USQLITE_ENABLE_LOAD_EXTENSION -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_OMIT_DEPRECATED \
	-DSQLITE_OMIT_SHARED_CACHE
# The plugins link without .eh_frame_hdr, the lookup index of the unwind
# tables: a panic=abort binary unwinds only to print a backtrace, which the
# static C runtime still finds through its registered frames (GNU ld and lld
# both take the flag). About 30 KB off each plugin.
PLUGIN_LINK_FLAGS ?= -C link-arg=-Wl,--no-eh-frame-hdr
plugins:
	LIBSQLITE3_FLAGS="$(PLUGIN_SQLITE_FLAGS)" RUSTFLAGS="$(RELEASE_FLAGS) $(PLUGIN_LINK_FLAGS)" $(CARGO) build --release --target $(PLUGIN_TARGET) --manifest-path plugins/Cargo.toml --bins
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
	@ls -l $(BIN)

## The release tarball: target/dist/ductile-VERSION-TARGET.tar.gz holding the
## binary, the bundled plugins, the shipped config, the unit files, the
## container and Unraid files and the docs. Reproducible: file times, owners
## and order are fixed, as is the binary's build date (SOURCE_DATE_EPOCH).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DIST_NAME := ductile-$(VERSION)-$(TARGET)
DIST_DIR := target/dist/$(DIST_NAME)
dist: build
	rm -rf $(DIST_DIR) $(DIST_DIR).tar.gz
	mkdir -p $(DIST_DIR)/docs
	install -m 0755 $(BIN) $(DIST_DIR)/ductile
	git ls-files -z plugins config | xargs -0 cp --parents -p -t $(DIST_DIR)
	for p in $(PLUGIN_CRATES); do install -m 0755 plugins/$$p/run $(DIST_DIR)/plugins/$$p/run || exit 1; done
	cp -R docs/systemd docs/container docs/unraid $(DIST_DIR)/
	cp README.md $(DIST_DIR)/
	cp docs/*.md $(DIST_DIR)/docs/
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@$(SOURCE_DATE_EPOCH) \
		-C target/dist -cf - $(DIST_NAME) | gzip -9n > $(DIST_DIR).tar.gz
	cd target/dist && sha256sum $(DIST_NAME).tar.gz > $(DIST_NAME).tar.gz.sha256
	@ls -l $(DIST_DIR).tar.gz

## The container image's build context (docs/container/Containerfile):
## target/image/ with the static binary, a static busybox (BUSYBOX, from
## Debian's busybox-static), the CA bundle fetch and notify trust for HTTPS
## (CA_BUNDLE, from Debian's ca-certificates), the bundled plugins and the
## container's starter config.
BUSYBOX ?= /bin/busybox
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
ENGINE ?= podman
IMAGE ?= ductile:$(VERSION)
image-context: build
	rm -rf target/image && mkdir -p target/image
	install -m 0755 $(BIN) target/image/ductile
	install -m 0755 $(BUSYBOX) target/image/busybox
	install -m 0644 $(CA_BUNDLE) target/image/ca-certificates.crt
	git ls-files -z plugins | xargs -0 cp --parents -p -t target/image
	for p in $(PLUGIN_CRATES); do install -m 0755 plugins/$$p/run target/image/plugins/$$p/run || exit 1; done
	cp -R docs/container/config target/image/config
	install -m 0755 docs/container/entrypoint.sh target/image/entrypoint.sh

## Builds the image with $(ENGINE) (podman or docker) from that context;
## podman writes the Docker format, which keeps HEALTHCHECK.
IMAGE_FLAGS ?= $(if $(filter podman,$(ENGINE)),--format docker)
image: image-context
	$(ENGINE) build $(IMAGE_FLAGS) -t $(IMAGE) -f docs/container/Containerfile target/image

clean:
	$(CARGO) clean

## The Python plugin helper's and the teaching template's unit tests; part of
## `make test` (an extra prerequisite, so the test recipe above stays as is).
PYTHON ?= python3
.PHONY: python-test
test: python-test
python-test:
	cd plugins/_lib && PYTHONDONTWRITEBYTECODE=1 $(PYTHON) -m unittest -q
	cd plugins/_template && PYTHONDONTWRITEBYTECODE=1 $(PYTHON) -m unittest -q
