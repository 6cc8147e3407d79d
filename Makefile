# Shoal: `make run` starts a dev node, `make test` runs every test.
# Both install what is missing on Debian 12 first (scripts/install-deps.sh).

SHELL   := /bin/bash
GO      ?= go
export PATH := $(PATH):/usr/local/go/bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/shoal-video/shoal/internal/app.Version=$(VERSION)
# Go's test timeout for the whole suite; CI allows 90 minutes, we aim well under 30.
TEST_TIMEOUT ?= 25m

.PHONY: all build run test test-gpu test-faults deps test-deps fuzz vet fmt clean bench bench-transcode bench-vod bench-edge bench-latency bench-packager bench-swarm bench-storage web web-check

all: build

deps:
	@scripts/install-deps.sh

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/shoal ./cmd/shoal

run: deps build
	@scripts/run.sh

# SeaweedFS's weed, the real S3 server of the storage tests
# (internal/testutil/s3test), built from source once into
# ~/.cache/shoal/weed-<version> (a few minutes the first time; needs the Go
# module proxy), or taken from $$SHOAL_WEED. make run does not need it.
test-deps:
	@$(GO) run ./internal/testutil/s3test/buildweed </dev/null >/dev/null || \
		{ echo "make: could not build SeaweedFS (weed) for the S3 storage tests; see the go output above" >&2; exit 1; }

test: deps test-deps
	$(GO) vet ./...
	$(GO) test -race -timeout $(TEST_TIMEOUT) ./...

# The GPU tests (NVDEC, scale_cuda, NVENC; make test skips them), on a
# machine with an NVIDIA GPU and its driver (see README, GPU transcoding).
test-gpu: deps
	SHOAL_TEST_GPU=1 $(GO) test -count=1 -timeout 15m -v -run 'GPU|NVENC' ./transcode/ffmpeg

# The fault suite (faults/): real shoal processes under a connection flood,
# kill -9, a full disk, Redis emptied and forged or revoked credentials; it
# prints a table of what was survived and lost (see README, Reliability).
test-faults: deps
	$(GO) test -tags faults -count=1 -timeout 15m -v ./faults

# Benchmarks: each prints one summary line of name=value figures, ratios
# against a peer run side by side in the same command (see benchmarks/README.md).
bench: bench-transcode bench-vod bench-edge bench-latency bench-packager bench-swarm bench-storage

bench-transcode: deps
	$(GO) run ./benchmarks/transcode $(BENCH_ARGS)

bench-vod: deps
	$(GO) run ./benchmarks/vod $(BENCH_ARGS)

bench-latency: deps
	$(GO) run ./benchmarks/latency $(BENCH_ARGS)

bench-packager: deps
	$(GO) run ./benchmarks/packager $(BENCH_ARGS)

# Media on S3 (a local SeaweedFS, built by test-deps) against the local
# disk: VOD upload to ready on each, live upload delays on S3.
bench-storage: deps test-deps
	$(GO) run ./benchmarks/storage $(BENCH_ARGS)

# P2P offload: shoal dev (origin + edge), Redis, an ffmpeg publisher and
# N Go peers as viewers; BENCH_ARGS=-matrix for N=10/30/60 x 2 s/4 s.
bench-swarm: deps
	$(GO) run ./benchmarks/swarm $(BENCH_ARGS)

# nginx-light is the peer and wrk loads both; install-deps installs them
# with everything deps does.
bench-edge:
	@scripts/install-deps.sh nginx-light wrk
	$(GO) run ./benchmarks/edge $(BENCH_ARGS)

# Rebuilds web/dist from web/src with the pinned npm packages (needs Node.js
# 18+ and npm); web/dist is committed, so builds and CI never need npm.
web:
	web/build.sh

# Fails when the committed web/dist is not what web/src builds to.
web-check: web
	git diff --exit-code -- web/dist

# Runs every fuzz target for FUZZTIME each (new crashers land in testdata/fuzz).
FUZZTIME ?= 30s
fuzz:
	@scripts/fuzz.sh $(FUZZTIME)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
