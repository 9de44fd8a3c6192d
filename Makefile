# sessiond. `make run` and `make test` work on a fresh clone: both install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# buf caches downloads under ~/.cache/buf unless told otherwise; keep it in the tree.
export BUF_CACHE_DIR := $(CURDIR)/.cache/buf
BIN := node_modules/.bin
DEPS := node_modules/.installed
ARGS ?=

.PHONY: deps generate check-generated lint build test run clean

$(DEPS): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: $(DEPS)

## generate: regenerate generated/ (TypeScript and the descriptor set for reflection) from proto/
generate: $(DEPS)
	rm -rf generated
	$(BIN)/buf generate
	$(BIN)/buf build -o generated/descriptors.binpb

## check-generated: fail when generated/ is not what proto/ generates
check-generated: $(DEPS)
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(BIN)/buf generate -o "$$tmp"; \
	$(BIN)/buf build -o "$$tmp/generated/descriptors.binpb"; \
	if ! diff -r "$$tmp/generated" generated >/dev/null; then \
	  diff -r "$$tmp/generated" generated | head -20; \
	  echo "generated/ differs from what proto/ generates: run 'make generate' and commit" >&2; exit 1; \
	fi; echo "generated/ matches proto/"

## lint: buf lint on proto/, tsc type-check on everything
lint: $(DEPS)
	$(BIN)/buf lint
	$(BIN)/tsc --noEmit -p tsconfig.json

## build: compile to dist/
build: $(DEPS)
	$(BIN)/tsc -p tsconfig.build.json

## test: generated-code check, lint, then every test under coverage (fails under 90% of lines)
test: $(DEPS) check-generated lint
	bash scripts/test.sh

## run: start the server on ./data/sessions.db (pass flags with ARGS="--listen 0.0.0.0:50051")
run: $(DEPS)
	node --import tsx src/main.ts $(ARGS)

clean:
	rm -rf dist coverage .test-output .cache
