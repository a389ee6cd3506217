#!/usr/bin/env bash
# The whole test suite: formatting, lints, header freshness, Rust tests (fake servers on
# 127.0.0.1 and the real local model), and the C programs built against an installed tree
# under AddressSanitizer and valgrind.
#
# The local model server (scripts/local-model.sh) is started if it is not already running,
# and then stopped again when the run ends (it would otherwise compete with benchmarks for the
# CPU); set AGENTOS_MODEL_URL to use another OpenAI-compatible server instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
if [ -z "${AGENTOS_MODEL_URL:-}" ]; then
  echo "== local model server"
  # The 1.5B model: multi-step tool loops need it (the 0.5B model repeats tool calls).
  export AGENTOS_MODEL_SIZE=${AGENTOS_MODEL_SIZE:-1.5b} AGENTOS_MODEL_PORT=${AGENTOS_MODEL_PORT:-8092}
  model_state=0
  scripts/local-model.sh status >/dev/null 2>&1 || model_state=$?
  if [ "$model_state" = 3 ]; then # not running: this run starts it, and stops it at the end
    trap 'scripts/local-model.sh stop >/dev/null 2>&1 || true' EXIT
  fi
  scripts/local-model.sh start >/dev/null
  eval "$(scripts/local-model.sh env)"
fi
export AGENTOS_MODEL_URL AGENTOS_REQUIRE_MODEL=1
echo "== cargo fmt --check";            cargo fmt --check
echo "== cargo clippy -D warnings";     cargo clippy --locked --all-targets -- -D warnings
echo "== header freshness";             scripts/gen-header.sh --check
echo "== cargo test";                   cargo test --locked
echo "== exact token counts (feature)"; cargo test --locked --features exact-tokens --lib context::tokens
echo "== C programs (ASan, valgrind)";  scripts/test-c.sh
