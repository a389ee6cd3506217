#!/usr/bin/env bash
# Agent benchmarks against local fake servers (benches/fake_openai_server.c) on 127.0.0.1
# (release build): per-turn
# overhead vs raw libcurl, where a turn's time goes (segments between its sends and receives),
# 10,000 agents each running a 3-step tool loop, and urgent-agent latency under a flood with
# preemption on and off; and (not run by default: it needs valgrind and takes a minute)
# instructions and atomic read-modify-writes per one-tool turn, counted by callgrind. Prints
# figures only. Arguments pick
# some: turn, segments, scale, priority, instructions.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="$PWD/target/bench-prefix"
cmake -S . -B target/cmake-build -DAGENTOS_CARGO_TARGET_DIR="$PWD/target" >/dev/null
cmake --build target/cmake-build >/dev/null
cmake --install target/cmake-build --prefix "$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
for b in agent_turn turn_segments turn_instructions agent_scale agent_priority; do
  # shellcheck disable=SC2046
  cc -std=c11 -O2 -Wall -Wextra -Ibenches "benches/$b.c" $(pkg-config --cflags --libs agentos libcurl) -ldl \
     -Wl,-rpath,"$prefix/lib" -o "target/bench_$b"
done
cc -std=c11 -O2 -Wall -Wextra -shared -fPIC benches/syscall_clock.c -ldl -o target/libsyscall_clock.so
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
serve() {
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
# Which benchmarks to run: the arguments (turn, segments, scale, priority), all by default.
selected="$*"
want() { [ -z "$selected" ] || [[ " ${selected} " == *" $1 "* ]]; }
# TURN_DELAY (seconds) makes the turn benches' server wait that long before each answer (a
# model takes milliseconds to seconds; the default, none, is the harshest case for a ratio).
turn_delay=()
if [ -n "${TURN_DELAY:-}" ]; then turn_delay=(--delay "$TURN_DELAY"); fi
if want turn; then
  p1=$(port); serve "$p1" --tool-steps 1 "${turn_delay[@]}"
  echo "== per-turn overhead (one tool call per turn)"
  target/bench_agent_turn "http://127.0.0.1:$p1/v1" "${TURNS:-1000}"
fi
if want segments; then
  p4=$(port); serve "$p4" --tool-steps 1 "${turn_delay[@]}"
  echo "== where a one-tool turn's time goes (between its sends and receives)"
  LD_PRELOAD="$PWD/target/libsyscall_clock.so" target/bench_turn_segments "http://127.0.0.1:$p4/v1" "${TURNS:-2000}"
fi
if [[ " ${selected} " == *" instructions "* ]]; then
  p5=$(port); serve "$p5" --tool-steps 1
  echo "== instructions per one-tool turn (callgrind; the difference between N and 2N turns, over N)"
  n=${TURNS_COUNTED:-100}
  count() { # way turns -> instructions in the way's function
    valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect="$1" \
      target/bench_turn_instructions "http://127.0.0.1:$p5/v1" "$2" 2>&1 |
      awk '/Collected/ {gsub(",", "", $NF); print $NF}'
  }
  for way in raw_turn agent_turn; do
    a=$(count "$way" "$n"); b=$(count "$way" $((2 * n)))
    echo "$way $(( (b - a) / n ))"
  done | awk '{v[$1]=$2} END {printf "raw libcurl tuned (poll)  %8d instructions\nagent_run, stateless      %8d instructions  (+%d, %.3fx)\n", v["raw_turn"], v["agent_turn"], v["agent_turn"]-v["raw_turn"], v["agent_turn"]/v["raw_turn"]}'
  # Simulated level-1 instruction-cache misses per turn (callgrind --cache-sim, the host's
  # cache geometry), each way's turns run alone: how much more code a turn runs through, which
  # the timed benches pay for beyond the instruction count.
  i1() { # way turns -> I1 misses in the way's function
    valgrind --tool=callgrind --cache-sim=yes --callgrind-out-file="target/cg-$1-$2.out" \
      --toggle-collect="$1_turn" target/bench_turn_instructions "http://127.0.0.1:$p5/v1" "$2" "$1" >/dev/null 2>&1
    awk '/^(summary|totals):/ {print $5; exit}' "target/cg-$1-$2.out"
    rm -f "target/cg-$1-$2.out"
  }
  for way in raw agent; do
    a=$(i1 "$way" "$n"); b=$(i1 "$way" $((2 * n)))
    echo "$way $(( (b - a) / n ))"
  done | awk '{v[$1]=$2} END {printf "L1i misses (simulated): raw %d, agent_run %d per turn (%.2fx)\n", v["raw"], v["agent"], v["agent"]/v["raw"]}'
  # Atomic read-modify-writes per turn (locked instructions run): each costs several
  # nanoseconds that the instruction count does not show (mutexes, reference counts; and
  # glibc's malloc, which takes its arena lock in a threaded process), in every object and in
  # AgentOS alone.
  locked() { # way turns -> locked instructions run in the way's function: all, libagentos
    valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file="target/cg-$1-$2.out" \
      --toggle-collect="$1_turn" target/bench_turn_instructions "http://127.0.0.1:$p5/v1" "$2" "$1" >/dev/null 2>&1
    echo "$(python3 benches/count_atomics.py "target/cg-$1-$2.out" /) $(python3 benches/count_atomics.py "target/cg-$1-$2.out" libagentos)"
    rm -f "target/cg-$1-$2.out"
  }
  for way in raw agent; do
    read -r a ao < <(locked "$way" "$n"); read -r b bo < <(locked "$way" $((2 * n)))
    echo "$way $(( (b - a) / n )) $(( (bo - ao) / n ))"
  done | awk '{v[$1]=$2; o[$1]=$3} END {printf "atomic read-modify-writes: raw %d, agent_run %d per turn (%d of them in libagentos)\n", v["raw"], v["agent"], o["agent"]}'
fi
if want scale; then
  p2=$(port); serve "$p2" --tool-steps 3 --delay 0.2
  echo "== scale: ${AGENTS:-10000} agents, 3-step tool loops, server waits 200 ms"
  target/bench_agent_scale "http://127.0.0.1:$p2/v1" "${AGENTS:-10000}"
fi
if want priority; then
  p3=$(port); serve "$p3" --stream-chunks 40 --chunk-interval 0.01
  echo "== priority: urgent agents under a streaming flood"
  target/bench_agent_priority "http://127.0.0.1:$p3/v1" "${FLOOD:-200}" "${URGENT:-20}" 8
  p6=$(port); serve "$p6" --tool-steps 3 --delay 0.2
  # Fewer urgent agents than slots: with more, their own calls fill the endpoint and nothing
  # else matters.
  echo "== priority: urgent agents' tool loops under a flood of tool loops"
  target/bench_agent_priority --tools "http://127.0.0.1:$p6/v1" "${FLOOD:-200}" "${URGENT_TOOLS:-4}" 8
fi
