#!/usr/bin/env bash
# Regenerates the committed include/agentos.h from src/ffi/ with the cbindgen version pinned in
# Cargo.toml (build-dependency `cbindgen = "=X.Y.Z"`, locked in Cargo.lock).
#   scripts/gen-header.sh          rewrite include/agentos.h
#   scripts/gen-header.sh --check  exit 1 if include/agentos.h is stale
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir=$(cargo build --locked --quiet --message-format=json \
  | python3 -c '
import json, sys
dirs = [m["out_dir"] for m in map(json.loads, sys.stdin)
        if m.get("reason") == "build-script-executed" and "#agentos@" in m.get("package_id", "")]
print(dirs[-1] if dirs else "")')
generated="$out_dir/agentos.h"
[ -f "$generated" ] || { echo "gen-header: build script produced no header" >&2; exit 2; }
if [ "${1:-}" = "--check" ]; then
  if ! diff -u include/agentos.h "$generated"; then
    echo "include/agentos.h is stale: run scripts/gen-header.sh and commit it" >&2
    exit 1
  fi
  echo "include/agentos.h is fresh"
else
  cp "$generated" include/agentos.h
  echo "wrote include/agentos.h"
fi
