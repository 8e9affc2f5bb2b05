# ztgate — see README.md. `make run` and `make test` are all a new user needs.
GO        ?= go
BIN       := bin/ztgate
PKGS      := ./...
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/ztgate/ztgate/cmd/ztgate/internal/version.Version=$(VERSION)
export PATH := $(shell $(GO) env GOPATH)/bin:$(PATH)

.PHONY: all build run test test-short deps vet fmt fuzz bench bench-quick bench-tools clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/ztgate

## run: build and run the gateway on the embedded dev config (configs/dev.yaml).
run: build
	./$(BIN) run -c configs/dev.yaml

## deps: install the tools the tests use (apt packages, go install).
deps:
	./e2e/deps.sh

## test: install what the tests need, then vet and run every test with -race.
test: deps vet
	TESTENV_REQUIRE_TOOLS=1 $(GO) test -race -timeout 25m -count=1 $(PKGS)

## test-short: the unit tests only, no external tools.
test-short:
	$(GO) test -short -count=1 $(PKGS)

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

## bench: ztgate side by side with nginx, haproxy, caddy, CoreDNS, dnsmasq (under 20 min); writes bench/results/REPORT.md.
BENCH_TOOLS := hsload h3load idleconns dnsstub zbench
bench-tools:
	for t in $(BENCH_TOOLS); do $(GO) build -o bin/$$t ./bench/cmd/$$t || exit 1; done

bench: deps build bench-tools
	./bin/zbench -cmd "make bench" -rounds 3 -d 7s -warmup 1s

## bench-quick: a 2-minute subset (one round of 2 s runs; no memory or reload) into bench/results/quick.
bench-quick: deps build bench-tools
	./bin/zbench -cmd "make bench-quick" -rounds 1 -d 2s -warmup 0s -out bench/results/quick \
		-scenarios handshake-ecdsa,handshake-rsa,proxy-h1,proxy-h2,jwt-h1,h3,egress-conn,egress-bulk,dns,dns-miss

clean:
	rm -rf bin
