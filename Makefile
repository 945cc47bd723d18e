# Bulkhead: embedded Linux images that an update or a power cut cannot brick.
#   make image BOARD=raspberrypi3   build deploy/<board>/ (image, xz, bmap, SBOM, checksums)
#   make test                       the whole suite (unit, filesystem, QEMU boots)
#   make update BOARD=<b> DEVICE=<host> [TOKEN=<api.token>]
#                                   send deploy/<b>/*-$(VERSION).bundle to a device, follow it to commit
#   make publish BOARD=<b> REF=<registry/repo:tag>
#                                   push the bundle to an OCI registry for devices to pull
# See README.md.

BOARD ?= raspberrypi3
GO ?= go
# The same inputs give the same image bytes: the build time is the last
# commit's time unless the caller fixes it.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 1700000000)
VERSION ?= $(shell git describe --tags --always 2>/dev/null || echo 0.0.0-dev)
export SOURCE_DATE_EPOCH

BUILDER := build/bin/builder

.PHONY: all image lock qemu update publish test test-short bench torture deps-image deps-test go-check clean FORCE

all: image

go-check:
	@command -v $(GO) >/dev/null 2>&1 || { echo "bulkhead: Go is not installed: install Go 1.26 or newer (https://go.dev/doc/install)" >&2; exit 1; }

deps-image:
	@sh scripts/install-deps.sh image

deps-test:
	@sh scripts/install-deps.sh test

$(BUILDER): go-check FORCE
	@$(GO) build -trimpath -o $@ ./builder

image: deps-image $(BUILDER)
	$(BUILDER) image -board $(BOARD) -version $(VERSION)

lock: $(BUILDER)
	$(BUILDER) lock -board $(BOARD)

qemu: deps-test $(BUILDER)
	$(BUILDER) qemu -board $(BOARD) -version $(VERSION)

# The device decides (verify, install, trial, commit or roll back); this
# uploads and reports. TOKEN defaults to $$BULKHEAD_TOKEN.
update: $(BUILDER)
	@test -n "$(DEVICE)" || { echo "bulkhead: set DEVICE=<host or host:port> of the device (and TOKEN=<api.token of its bulkhead/device.yaml>)" >&2; exit 1; }
	$(BUILDER) update -board $(BOARD) -version $(VERSION) -device $(DEVICE) $(if $(TOKEN),-token $(TOKEN))

publish: $(BUILDER)
	@test -n "$(REF)" || { echo "bulkhead: set REF=<registry>/<repository>:<tag>, e.g. REF=registry.example.com/fleet/os:stable" >&2; exit 1; }
	$(BUILDER) publish -board $(BOARD) -version $(VERSION) -ref $(REF)

test: deps-test go-check
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || { echo "bulkhead: gofmt needed on the files above" >&2; exit 1; }
	$(GO) vet ./...
	$(GO) test -timeout 80m ./...

# The full power-cut torture (tests/powercut_test.go): the regression
# fixtures (a failing one stops it), the write-log parser's fuzzing, then
# every enumerated crash state of a recorded update on each QEMU board and
# 110 random power cuts, with a report in build/torture/ (figures for
# docs/safety.md). Took 2 h 5 min on 2 cores (docs/safety.md, "Latest
# figures"); TORTURE_BOARD=x86_64 or TORTURE_BOARD=qemu-aarch64 runs one
# board (its half of the cuts), with report-<board>.md.
TORTURE_BOARD ?=
TORTURE_RUN := ^TestPowerCut$$$(if $(TORTURE_BOARD),/^$(TORTURE_BOARD)$$)
TORTURE_REPORT := build/torture/report$(if $(TORTURE_BOARD),-$(TORTURE_BOARD)).md
torture: deps-test go-check
	$(GO) test -count=1 -v -run '^TestRegressionFixtures$$' ./tests/powercut/
	$(GO) test -run '^$$' -fuzz FuzzParseLog -fuzztime 2m -fuzzminimizetime 5s ./tests/powercut/dmlog/
	BULKHEAD_TORTURE=full BULKHEAD_TORTURE_REPORT=$(TORTURE_REPORT) $(GO) test -count=1 -v -timeout 720m -run '$(TORTURE_RUN)' ./tests/

# Figures, never assertions: builder and boot (tests/bench), OTA
# (supervisor), engine, compression. docs/benchmarks.md records them.
bench: deps-test $(BUILDER)
	$(BUILDER) image -board raspberrypi3 -no-xz -version bench-warmup   # downloads, so the figures exclude them
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./tests/bench/ ./supervisor/... ./engine/integration/ ./builder/compress/

clean:
	rm -rf build deploy
