#!/usr/bin/env bash
# buf breaking: proto/ as it is now (working tree) against proto/ at a base
# commit, so that a wire-incompatible change fails `make test` and CI. Rules:
# buf.yaml's `breaking` section (FILE). Run from the repository (make breaking).
#
# The base commit:
#   - $BREAKING_AGAINST (any git revision) when set;
#   - on a branch other than main: where it forked from main (or origin/main),
#     so that every commit of the branch is checked;
#   - otherwise (on main, or a detached CI checkout): HEAD~1, the previous
#     commit (for a merge commit, its first parent: main before the merge).
#
# It exits 0 with a "SKIPPED: <why>" line, and checks nothing, when there is
# nothing to compare with: not a git checkout, the first commit, or no proto/
# at the base. A shallow clone (CI's usual `--depth 1`) is deepened with
# `git fetch` first; when that is impossible (no remote, no network) it skips
# the same way. It fails when git itself is missing from a git checkout.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
BUF="${BUF:-$here/../node_modules/.bin/buf}"

skip() {
  echo "buf breaking: SKIPPED: $*"
  exit 0
}

if ! command -v git >/dev/null; then
  if [ -e .git ]; then
    echo "buf breaking: git is not installed, and buf needs it to read the base commit from .git (apt-get install git)" >&2
    exit 1
  fi
  skip "not a git checkout (no git, no .git)"
fi
git rev-parse --git-dir >/dev/null 2>&1 || skip "not a git checkout"
cd "$(git rev-parse --show-toplevel)"
git rev-parse -q --verify 'HEAD^{commit}' >/dev/null || skip "no commit yet"

# The revision to compare with, and what to say about it.
explicit="${BREAKING_AGAINST:-}"
main_ref=""
for candidate in main origin/main; do
  if git rev-parse -q --verify "$candidate^{commit}" >/dev/null; then main_ref="$candidate"; break; fi
done
branch="$(git symbolic-ref -q --short HEAD || true)"

resolve() {
  if [ -n "$explicit" ]; then
    base="$(git rev-parse -q --verify "$explicit^{commit}" || true)"
    what="$explicit"
    return
  fi
  if [ -n "$branch" ] && [ "$branch" != main ] && [ -n "$main_ref" ]; then
    base="$(git merge-base HEAD "$main_ref" 2>/dev/null || true)"
    what="the fork point of $branch from $main_ref"
    # A branch still at main's tip has nothing of its own: fall through to HEAD~1.
    if [ -n "$base" ] && [ "$base" != "$(git rev-parse HEAD)" ]; then return; fi
  fi
  base="$(git rev-parse -q --verify 'HEAD~1^{commit}' || true)"
  what="the previous commit (HEAD~1)"
}

base=""
what=""
resolve
if [ -z "$base" ] && [ "$(git rev-parse --is-shallow-repository)" = true ]; then
  # A shallow clone ends at HEAD: fetch the history the base needs.
  echo "buf breaking: shallow clone; fetching history to find $what"
  if [ -n "$explicit" ] || { [ -n "$branch" ] && [ "$branch" != main ]; }; then
    git fetch --quiet --unshallow 2>/dev/null || true
  else
    git fetch --quiet --deepen=1 2>/dev/null || true
  fi
  resolve
  # Still nothing, and no longer shallow: HEAD really is the first commit (below).
  [ -n "$base" ] || [ "$(git rev-parse --is-shallow-repository)" = false ] ||
    skip "shallow clone, and git fetch could not get $what (no remote or no network); clone with --depth 2 or more, or set BREAKING_AGAINST"
fi
if [ -z "$base" ]; then
  [ -z "$explicit" ] || { echo "buf breaking: BREAKING_AGAINST=$explicit is not a commit here" >&2; exit 1; }
  skip "HEAD is the first commit: no previous proto/ to compare with"
fi
git cat-file -e "$base:proto" 2>/dev/null || skip "proto/ does not exist at $what ($(git rev-parse --short "$base"))"

echo "buf breaking: proto/ against $what, $(git rev-parse --short "$base")"
# buf clones the base out of .git itself (it runs git), so a ref that needs
# more history than the clone has fails here, not silently.
"$BUF" breaking --against ".git#ref=$base"
echo "buf breaking: no breaking change"
