#!/usr/bin/env bash
# Builds the library in release mode, installs it into target/bench-prefix, prints the library's
# size, then builds and runs the named stand-alone C benchmarks from benches/ (runtime_lifecycle
# when none is named). Benchmarks that need a fake server or a second process have their own
# scripts: run-model.sh, run-agents.sh, run-msg.sh. Prints figures only.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="$PWD/target/bench-prefix"
cmake -S . -B target/cmake-build -DAGENTOS_CARGO_TARGET_DIR="$PWD/target" >/dev/null
cmake --build target/cmake-build | grep -v "^\[" || true
cmake --install target/cmake-build --prefix "$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
names=("$@"); [ ${#names[@]} -gt 0 ] || names=(runtime_lifecycle)
so=$(readlink -f "$prefix/lib/libagentos.so")
strip -o target/libagentos.stripped.so "$so"
echo "libagentos.so: $(stat -c %s "$so") bytes, stripped $(stat -c %s target/libagentos.stripped.so) bytes"
for name in "${names[@]}"; do
  # shellcheck disable=SC2046
  cc -std=c11 -O2 -Wall -Wextra -Ibenches "benches/$name.c" $(pkg-config --cflags --libs agentos) -lpthread \
     -Wl,-rpath,"$prefix/lib" -o "target/bench_$name"
  echo "== $name"
  "target/bench_$name"
done
