#!/usr/bin/env bash
# Runs ava under c8 and ends with the line "N passed, N failed", counted from
# ava's TAP output, whatever happened before it. Skipped tests (a tool this
# machine lacks, see test/helpers/tools.ts) are counted and named just above
# it, so that a run that skipped some does not read as complete.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .test-output
out=.test-output/ava.tap
node_modules/.bin/c8 --check-coverage --lines 90 --include 'src/**' \
  --reporter text --reporter text-summary \
  node_modules/.bin/ava --tap "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
passed=$(grep -Ec '^ok [0-9]+ ' "$out" || true)
skipped=$(grep -Ec '^ok [0-9]+ .*# (SKIP|TODO)' "$out" || true)
failed=$(grep -Ec '^not ok [0-9]+ ' "$out" || true)
passed=$((passed - skipped))
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "tests or coverage failed outside a test (exit $status): see above" >&2
fi
if [ "$skipped" -gt 0 ]; then
  echo "${skipped} skipped:"
  grep -E '^ok [0-9]+ .*# (SKIP|TODO)' "$out" | sed 's/^ok [0-9]* - /  /'
fi
echo "${passed} passed, ${failed} failed"
exit "$status"
