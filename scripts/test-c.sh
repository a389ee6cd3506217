#!/usr/bin/env bash
# Installs AgentOS into a temporary prefix, then builds every C example and C test against the
# installed tree three ways (pkg-config, CMake find_package, static link) and runs each build
# under AddressSanitizer+UBSan and under valgrind. Any compiler warning, sanitizer report, valgrind
# error or leak fails the run. Prints "c-tests: N passed, M failed".
#
# Examples that talk to a model server are marked with the line `// agentos-test: needs-model`;
# they run only when AGENTOS_MODEL_URL is set (scripts/local-model.sh start sets one up).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work=$(mktemp -d /tmp/agentos-c-tests.XXXXXX)
prefix="$work/prefix"
trap 'rm -rf "$work"' EXIT
CC=${CC:-cc}
CFLAGS_STRICT=(-std=c11 -Wall -Wextra -Werror -g)
ASAN=(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=98}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
VALGRIND=(valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect,possible
          --errors-for-leak-kinds=definite,indirect,possible --track-fds=no)

passed=0; failed=0; failures=()
ok()   { passed=$((passed + 1)); echo "PASS $1"; }
fail() { failed=$((failed + 1)); failures+=("$1"); echo "FAIL $1"; }

echo "== install into $prefix"
cmake -S . -B target/cmake-build -DAGENTOS_CARGO_TARGET_DIR="$root/target" >/dev/null
cmake --build target/cmake-build
cmake --install target/cmake-build --prefix "$prefix" >/dev/null

echo "== installed tree"
lib="$prefix/lib"
for f in "$lib/libagentos.a" "$prefix/include/agentos.h" "$lib/pkgconfig/agentos.pc" \
         "$lib/cmake/AgentOS/AgentOSConfig.cmake" "$lib/cmake/AgentOS/AgentOSConfigVersion.cmake"; do
  if [ -f "$f" ]; then ok "installed ${f#"$prefix"/}"; else fail "installed ${f#"$prefix"/}"; fi
done
real=$(readlink -f "$lib/libagentos.so")
soname=$(readelf -d "$real" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
if [ -n "$soname" ] && [ -L "$lib/$soname" ] && [ "$(readlink -f "$lib/$soname")" = "$real" ]; then
  ok "SONAME $soname with symlinks"
else
  fail "SONAME/symlinks (soname='$soname')"
fi
foreign=$(nm -D --defined-only "$real" | awk '{print $3}' | grep -v '^agentos_' || true)
if [ -z "$foreign" ]; then ok "only agentos_* symbols exported"; else fail "foreign exports: $foreign"; fi
if cmp -s "$prefix/include/agentos.h" include/agentos.h; then ok "installed header is the committed one"; else fail "installed header differs"; fi

export PKG_CONFIG_PATH="$lib/pkgconfig"
read -r -a PC_SHARED <<<"$(pkg-config --cflags --libs agentos)"
read -r -a PC_CFLAGS <<<"$(pkg-config --cflags agentos)"
# Static libagentos.a with the system's shared libcurl: our Libs.private plus libcurl's Libs.
# (`pkg-config --static` would also ask for libcurl's own static dependencies.)
read -r -a PC_STATIC <<<"$(sed -n 's/^Libs.private: //p' "$lib/pkgconfig/agentos.pc") $(pkg-config --libs libcurl)"

sources=()
for src in examples/c/*.c tests/c/*.c; do
  if grep -q 'agentos-test: needs-model' "$src" && [ -z "${AGENTOS_MODEL_URL:-}" ]; then
    echo "SKIP $src (needs a model server: set AGENTOS_MODEL_URL)"
    continue
  fi
  sources+=("$root/$src")
done

bin="$work/bin"; mkdir -p "$bin"
echo "== build with pkg-config"
for src in "${sources[@]}"; do
  name=$(basename "$src" .c)
  if $CC "${CFLAGS_STRICT[@]}" "$src" "${PC_SHARED[@]}" -Wl,-rpath,"$lib" -o "$bin/pc_$name" \
     && $CC "${CFLAGS_STRICT[@]}" "${ASAN[@]}" "$src" "${PC_SHARED[@]}" -Wl,-rpath,"$lib" -o "$bin/pc_${name}_asan" \
     && $CC "${CFLAGS_STRICT[@]}" "$src" "${PC_CFLAGS[@]}" "$lib/libagentos.a" -Wl,--as-needed "${PC_STATIC[@]}" -o "$bin/pcstatic_$name"; then
    ok "build $name (pkg-config: shared, asan, static)"
  else
    fail "build $name (pkg-config)"
  fi
done

echo "== build with CMake find_package(AgentOS)"
src_list=$(IFS=';'; echo "${sources[*]}")
for variant in plain asan; do
  sanitize=OFF; [ $variant = asan ] && sanitize=ON
  if cmake -S tests/c/consumer -B "$work/consumer-$variant" -DCMAKE_PREFIX_PATH="$prefix" \
       -DCMAKE_C_COMPILER="$CC" -DSOURCES="$src_list" -DSANITIZE=$sanitize \
       -DCMAKE_BUILD_RPATH="$lib" >/dev/null \
     && cmake --build "$work/consumer-$variant" >/dev/null; then
    ok "build find_package ($variant)"
  else
    fail "build find_package ($variant)"
  fi
done

run() { # label, command...
  local label=$1; shift
  local log="$work/run.log"
  if "$@" >"$log" 2>&1; then ok "$label"; else echo "--- output of $label:"; tail -40 "$log"; fail "$label"; fi
}

# A program talking to the small local model can fail because the model misbehaves (a malformed
# tool call, a wrong answer): exit status 1. Those get up to three tries, and run in two builds
# only. A sanitizer or valgrind report (exit 98/99) or a crash is never retried.
run_model() { # label, command...
  local label=$1; shift
  local log="$work/run.log" rc
  for try in 1 2 3; do
    rc=0; "$@" >"$log" 2>&1 || rc=$?
    if [ $rc -eq 0 ]; then ok "$label"; return; fi
    if [ $rc -ne 1 ]; then break; fi
    echo "  ($label: the model misbehaved on try $try; retrying)"
  done
  echo "--- output of $label:"; tail -40 "$log"; fail "$label (exit $rc)"
}

echo "== run"
for src in "${sources[@]}"; do
  name=$(basename "$src" .c)
  if grep -q 'agentos-test: needs-model' "$src"; then
    run_model "$name pkg-config valgrind" "${VALGRIND[@]}" "$bin/pc_$name"
    run_model "$name cmake-static asan"   "$work/consumer-asan/${name}_static"
    continue
  fi
  run "$name pkg-config valgrind"   "${VALGRIND[@]}" "$bin/pc_$name"
  run "$name pkg-config asan"       "$bin/pc_${name}_asan"
  run "$name static valgrind"       "${VALGRIND[@]}" "$bin/pcstatic_$name"
  run "$name cmake-shared valgrind" "${VALGRIND[@]}" "$work/consumer-plain/${name}_shared"
  run "$name cmake-static valgrind" "${VALGRIND[@]}" "$work/consumer-plain/${name}_static"
  run "$name cmake-shared asan"     "$work/consumer-asan/${name}_shared"
  run "$name cmake-static asan"     "$work/consumer-asan/${name}_static"
done

for f in "${failures[@]+"${failures[@]}"}"; do echo "failed: $f"; done
echo "c-tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
