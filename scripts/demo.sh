#!/usr/bin/env bash
# The main job: build and install the library, then build and run the C example against it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
prefix=${AGENTOS_PREFIX:-$PWD/target/prefix}
cmake -S . -B target/cmake-build -DAGENTOS_CARGO_TARGET_DIR="$PWD/target" >/dev/null
cmake --build target/cmake-build
cmake --install target/cmake-build --prefix "$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror examples/c/hello.c $(pkg-config --cflags --libs agentos) \
  -Wl,-rpath,"$prefix/lib" -o target/hello
./target/hello
