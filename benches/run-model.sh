#!/usr/bin/env bash
# Model-layer benchmarks against local fake servers (benches/fake_openai_server.c) on 127.0.0.1
# (release build):
#   overhead per call vs a raw libcurl loop, 10,000 concurrent calls vs a 1 s server, and
#   streamed-chunk latency. Prints figures only. Arguments pick some: overhead, fanout, stream.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="$PWD/target/bench-prefix"
cmake -S . -B target/cmake-build -DAGENTOS_CARGO_TARGET_DIR="$PWD/target" >/dev/null
cmake --build target/cmake-build >/dev/null
cmake --install target/cmake-build --prefix "$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
for b in model_overhead model_fanout model_stream_latency; do
  # shellcheck disable=SC2046
  cc -std=c11 -O2 -Wall -Wextra "benches/$b.c" $(pkg-config --cflags --libs agentos libcurl) \
     -Wl,-rpath,"$prefix/lib" -o "target/bench_$b"
done
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
serve() { # port, args...
  local p=$1; shift
  if [ -z "${fake_built:-}" ]; then # compile the server once per run
    cc -std=c11 -O2 -Wall -Wextra -D_GNU_SOURCE benches/fake_openai_server.c \
       -o target/fake_openai_server
    fake_built=1
  fi
  target/fake_openai_server "$p" "$@" > "target/fake-$p.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q ready "target/fake-$p.log" 2>/dev/null && return; sleep 0.05; done
  echo "server on $p did not start" >&2; exit 1
}
# Which benchmarks to run: the arguments (overhead, fanout, stream), all by default.
selected="$*"
want() { [ -z "$selected" ] || [[ " ${selected} " == *" $1 "* ]]; }
if want overhead; then
  p1=$(port); serve "$p1"
  echo "== overhead per call (fast local server)"
  "target/bench_model_overhead" "http://127.0.0.1:$p1/v1" "${CALLS:-2000}"
fi
if want fanout; then
  p2=$(port); serve "$p2" --delay 1
  echo "== fan-out: ${FANOUT:-10000} concurrent calls, server waits 1 s"
  "target/bench_model_fanout" "http://127.0.0.1:$p2/v1" "${FANOUT:-10000}"
fi
if want stream; then
  p3=$(port); serve "$p3" --stream-chunks 100 --chunk-interval 0.005
  echo "== streaming: chunk sent -> C caller has it"
  "target/bench_model_stream_latency" "http://127.0.0.1:$p3/v1" 5
fi
