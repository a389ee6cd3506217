#!/usr/bin/env bash
# Message-passing benchmarks (release build): in-process mailboxes through the C API, and (when
# built) the cross-process shared-memory ring against JSON over a Unix socket. Prints figures.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="$PWD/target/bench-prefix"
cmake -S . -B target/cmake-build -DAGENTOS_CARGO_TARGET_DIR="$PWD/target" >/dev/null
cmake --build target/cmake-build >/dev/null
cmake --install target/cmake-build --prefix "$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
for b in msg_inprocess msg_shm; do
  # shellcheck disable=SC2046
  cc -std=c11 -O2 -Wall -Wextra -Ibenches "benches/$b.c" $(pkg-config --cflags --libs agentos) -lpthread \
     -Wl,-rpath,"$prefix/lib" -o "target/bench_$b"
done
echo "== in process (C API)"
target/bench_msg_inprocess "${MESSAGES:-2000000}"
echo "== across processes: shared-memory channel vs JSON over a Unix socket"
target/bench_msg_shm "${SHM_MESSAGES:-200000}"
