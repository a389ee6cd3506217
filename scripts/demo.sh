#!/usr/bin/env bash
# The main job: build and install the library, start the local model server (unless
# AGENTOS_MODEL_URL points at another OpenAI-compatible server), then build and run the C
# example against the installed tree.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
if [ -z "${AGENTOS_MODEL_URL:-}" ]; then
  # The 1.5B model: multi-step tool loops need it (the 0.5B model repeats tool calls).
  export AGENTOS_MODEL_SIZE=${AGENTOS_MODEL_SIZE:-1.5b} AGENTOS_MODEL_PORT=${AGENTOS_MODEL_PORT:-8092}
  scripts/local-model.sh start >/dev/null
  eval "$(scripts/local-model.sh env)"
fi
export AGENTOS_MODEL_URL
prefix=${AGENTOS_PREFIX:-$PWD/target/prefix}
cmake -S . -B target/cmake-build -DAGENTOS_CARGO_TARGET_DIR="$PWD/target" >/dev/null
cmake --build target/cmake-build
cmake --install target/cmake-build --prefix "$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
example=${1:-team}
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror "examples/c/$example.c" $(pkg-config --cflags --libs agentos) \
  -Wl,-rpath,"$prefix/lib" -o "target/$example"
"./target/$example"
