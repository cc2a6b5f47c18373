#!/usr/bin/env bash
# Fails when the generated code in src/gen is stale: regenerates it from proto/ into a temporary
# directory with the same buf.gen.yaml and compares. Then runs buf lint. (`npm run gen` refreshes.)
set -euo pipefail
cd "$(dirname "$0")/.."
# npm scripts already have node_modules/.bin on PATH; this also makes a direct run work.
export PATH="$PWD/node_modules/.bin:$PATH"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

buf generate --output "$tmp"
if ! diff -r "$tmp/src/gen" src/gen >"$tmp/gen.diff"; then
  echo "gen:check: src/gen is stale or hand-edited; run 'npm run gen' and commit the result:" >&2
  head -n 60 "$tmp/gen.diff" >&2
  exit 1
fi
echo "gen:check: src/gen matches proto/"

buf lint
echo "gen:check: buf lint clean"
