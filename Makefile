# sessiond. `make run` and `make test` work on a fresh clone: both install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# buf caches downloads under ~/.cache/buf unless told otherwise; keep it in the tree.
export BUF_CACHE_DIR := $(CURDIR)/.cache/buf
BIN := node_modules/.bin
DEPS := node_modules/.installed
ARGS ?=

.PHONY: deps generate check-generated docs lint build test run clean bench bench-smoke clients clients-go breaking soak

$(DEPS): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: $(DEPS)

## generate: regenerate generated/ (ts-proto, exactly what `buf generate` writes) and
## descriptors/sessiond.binpb (`buf build`: the descriptor set for reflection and --json) from proto/
generate: $(DEPS)
	rm -rf generated descriptors
	$(BIN)/buf generate
	mkdir -p descriptors
	$(BIN)/buf build -o descriptors/sessiond.binpb

## check-generated: fail when generated/ or descriptors/ is not what proto/ generates
check-generated: $(DEPS)
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(BIN)/buf generate -o "$$tmp"; \
	mkdir -p "$$tmp/descriptors"; \
	$(BIN)/buf build -o "$$tmp/descriptors/sessiond.binpb"; \
	for d in generated descriptors; do \
	  if ! diff -r "$$tmp/$$d" "$$d" >/dev/null; then \
	    diff -r "$$tmp/$$d" "$$d" | head -20; \
	    echo "$$d/ differs from what proto/ generates: run 'make generate' and commit" >&2; exit 1; \
	  fi; \
	done; echo "generated/ and descriptors/ match proto/"

## docs: write docs/configuration.md from the settings table (test 92 fails while it differs)
docs: $(DEPS)
	node --import tsx scripts/configuration-doc.ts

## lint: buf lint on proto/, tsc type-check on everything, and src/'s import rules (.dependency-cruiser.cjs)
lint: $(DEPS)
	$(BIN)/buf lint
	$(BIN)/tsc --noEmit -p tsconfig.json
	$(BIN)/depcruise --config .dependency-cruiser.cjs --output-type err src

## build: compile to dist/
build: $(DEPS)
	$(BIN)/tsc -p tsconfig.build.json

## breaking: buf breaking on proto/ against the previous commit on main (scripts/buf-breaking.sh says which, or why it skips)
breaking: $(DEPS)
	bash scripts/buf-breaking.sh

## clients: generate the Python client into $(PY_GEN) with Debian's protoc and grpc_python_plugin
## (apt-get install protobuf-compiler protobuf-compiler-grpc python3-grpcio python3-protobuf)
PY_GEN ?= clients/python/gen
clients:
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
	@command -v grpc_python_plugin >/dev/null || { echo "grpc_python_plugin not found: apt-get install protobuf-compiler-grpc" >&2; exit 1; }
	rm -rf $(PY_GEN) && mkdir -p $(PY_GEN)
	protoc -I proto --plugin=protoc-gen-grpc_python=$$(command -v grpc_python_plugin) \
	  --python_out=$(PY_GEN) --grpc_python_out=$(PY_GEN) proto/sessions/v1/*.proto
	@# grpc.health.v1 is generated flat (health_pb2): as grpc/health/v1/ it would be hidden by grpcio's own "grpc" package.
	protoc -I proto/grpc/health/v1 --plugin=protoc-gen-grpc_python=$$(command -v grpc_python_plugin) \
	  --python_out=$(PY_GEN) --grpc_python_out=$(PY_GEN) proto/grpc/health/v1/health.proto

## clients-go: generate the Go client into $(GO_GEN) (a GOPATH root) with Debian's protoc, protoc-gen-go and
## protoc-gen-go-grpc, and build clients/go/example into $(GO_GEN)/bin, offline, in GOPATH mode against the
## Debian Go packages (apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev
## protoc-gen-go protoc-gen-go-grpc protobuf-compiler libprotobuf-dev)
GO_GEN ?= clients/go/gen
GO_BIN := $(GO_GEN)/bin/sessiond-go-example
# proto/ has no go_package options (adding them would change generated/ and what buf breaking compares):
# M mappings place the three files in one Go package instead.
GO_PKG := sessiond/gen/sessions/v1
GO_MAP := Msessions/v1/session.proto=$(GO_PKG);sessionsv1,Msessions/v1/session_service.proto=$(GO_PKG);sessionsv1,Msessions/v1/admin_service.proto=$(GO_PKG);sessionsv1
clients-go: $(GO_BIN)
$(GO_BIN): $(wildcard proto/sessions/v1/*.proto) clients/go/example/main.go
	@for t in go protoc protoc-gen-go protoc-gen-go-grpc; do \
	  command -v $$t >/dev/null || { echo "$$t not found: apt-get install golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc" >&2; exit 1; }; \
	done
	@[ -d /usr/share/gocode/src/google.golang.org/grpc ] || { echo "grpc-go not found in /usr/share/gocode: apt-get install golang-google-grpc-dev golang-google-protobuf-dev" >&2; exit 1; }
	rm -rf $(GO_GEN)/src/$(GO_PKG) && mkdir -p $(GO_GEN)/src
	protoc -I proto --go_out=$(GO_GEN)/src --go_opt='$(GO_MAP)' --go-grpc_out=$(GO_GEN)/src --go-grpc_opt='$(GO_MAP)' \
	  proto/sessions/v1/*.proto
	@# The build cache goes in the tree, as buf's does; GOFLAGS is cleared since module flags fail in GOPATH mode.
	GO111MODULE=off GOFLAGS= GOPATH='$(abspath $(GO_GEN)):/usr/share/gocode' GOCACHE="$${GOCACHE:-$(CURDIR)/.cache/go-build}" \
	  go build -o $@ ./clients/go/example

## test: generated-code check, lint, buf breaking, then every test under coverage (fails under 90% of lines)
test: $(DEPS) check-generated lint breaking
	bash scripts/test.sh

## soak: the crash test for longer (not part of make test): SOAK_KILLS SIGKILLs (default 200), at least
## SOAK_SECONDS (default 0), SOAK_SEED to replay, SOAK_SYNCHRONOUS=normal|full|both (default both)
soak: $(DEPS)
	node --import tsx test/soak/crash-soak.ts

## run: start the server on ./data/sessions.db (pass flags with ARGS="--listen 0.0.0.0:50051")
run: $(DEPS)
	node --import tsx src/main.ts $(ARGS)

## bench: load benchmark against a bare grpc-js server's empty RPC (docs/performance.md); tune with BENCH_* (make bench BENCH_SESSIONS=20000)
bench: $(DEPS)
	node --import tsx bench/main.ts $(ARGS)

## bench-smoke: the same bench with tiny fills and windows: proves the harness works, figures mean nothing
bench-smoke: $(DEPS)
	BENCH_SMOKE=1 BENCH_OUT=bench/results/smoke.json node --import tsx bench/main.ts $(ARGS)

clean:
	rm -rf dist coverage .test-output .cache $(PY_GEN) $(GO_GEN)
