#!/usr/bin/env bash
# The whole test suite: formatting, lints, header freshness, Rust tests, and the C programs
# built against an installed tree under AddressSanitizer and valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
echo "== cargo fmt --check";            cargo fmt --check
echo "== cargo clippy -D warnings";     cargo clippy --locked --all-targets -- -D warnings
echo "== header freshness";             scripts/gen-header.sh --check
echo "== cargo test";                   cargo test --locked
echo "== C programs (ASan, valgrind)";  scripts/test-c.sh
