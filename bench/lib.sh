# Shared helpers of the benchmark scripts (sourced, not run):
#
#     source "$(dirname "$0")/lib.sh"
#
# Every process a script starts is handed to `track`; `bench_cleanup` (set
# as the EXIT trap by `bench_traps`) stops whatever is still running and
# removes $WORK, however the script ends, Ctrl-C included.

BENCH_PIDS=()
WORK=${WORK:-}

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Remembers a started process for the cleanup.
track() { BENCH_PIDS+=("$1"); }

# SIGTERM, then SIGKILL after ~2 s; reaps the child so no zombie is left,
# and forgets it (so a recycled pid is never signalled later).
stop_pid() {
    local pid=$1 kept=() p
    [[ -n $pid ]] || return 0
    for p in "${BENCH_PIDS[@]}"; do
        [[ $p == "$pid" ]] || kept+=("$p")
    done
    BENCH_PIDS=("${kept[@]}")
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 40); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${BENCH_PIDS[@]}"; do
        stop_pid "$pid"
    done
    if [[ -n $WORK && -d $WORK ]]; then
        rm -rf "$WORK"
    fi
    exit "$status"
}

bench_traps() {
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# First port at or above $1 with nothing listening on 127.0.0.1.
free_port() {
    local port=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((port + 1))
    done
    echo "$port"
}

# Polls a URL until it answers 200; gives up after $2 seconds (default 30),
# or as soon as process $3 (optional) has exited.
wait_http_200() {
    local url=$1 timeout_s=${2:-30} pid=${3:-}
    local deadline=$((SECONDS + timeout_s))
    until [[ $(curl -s -o /dev/null -w '%{http_code}' "$url" 2>/dev/null || true) == 200 ]]; do
        [[ -z $pid ]] || kill -0 "$pid" 2>/dev/null || return 1
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

# Starts a gateway with the groq component only ($GROQ_WASM; Groq's
# declared limits lifted: the mock is not Groq, and the cache off), pointed
# at the mock on port $1, listening on port $2, state and component cache in
# $WORK; `NAME=value` settings after them are added. Sets GATEWAY_PID; dies
# when it does not become healthy.
start_groq_gateway() {
    local mock_port=$1 port=$2
    shift 2
    mkdir -p "$WORK/data" "$WORK/cache"
    printf '[providers.groq]\ncomponent = "%s"\nlimits = { rpm = 0, rpd = 0, tpm = 0, tpd = 0 }\n' "$GROQ_WASM" >"$WORK/plugins.toml"
    env PORT="$port" HOST=127.0.0.1 FREELLM_DATA_DIR="$WORK/data" FREELLM_CACHE_DIR="$WORK/cache" \
        GROQ_API_KEY=bench GROQ_BASE_URL="http://127.0.0.1:$mock_port/v1" LOG_LEVEL=warn CACHE_ENABLED=false "$@" \
        "$GATEWAY_BIN" serve --config "$WORK/plugins.toml" </dev/null >>"$WORK/gateway.log" 2>&1 &
    GATEWAY_PID=$!
    track "$GATEWAY_PID"
    wait_http_200 "http://127.0.0.1:$port/healthz" 180 "$GATEWAY_PID" ||
        die "the gateway did not start: $(tail -n 20 "$WORK/gateway.log")"
}

# CPU time process $1 has used so far (user + system), in clock ticks
# (`getconf CLK_TCK` per second): fields 14 and 15 of /proc/PID/stat,
# counted after the command name, which may hold spaces.
cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# Proportional set size of process $1, in KiB: its resident pages, each
# page shared with other mappings or processes counted in proportion (the
# memory images of adapter instances map the same pages once per instance,
# and VmRSS counts them every time).
pss_kib() {
    awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"
}

# Waits for a server that prints `listening on ...` to its log $2 (pid $1).
wait_listening() {
    local pid=$1 logfile=$2
    for _ in $(seq 100); do
        grep -q '^listening on' "$logfile" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# The tools every benchmark uses: jq and curl (apt, root or sudo needed
# then) and the load generator oha (cargo install, pinned: 1.16.0 builds on
# rustc 1.95). A cargo-installed oha not yet on PATH is found too.
OHA_VERSION_PIN=1.16.0
ensure_tools() {
    local missing=()
    command -v jq >/dev/null || missing+=(jq)
    command -v curl >/dev/null || missing+=(curl)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} (apt)"
        local sudo=""
        [[ $(id -u) -eq 0 ]] || sudo=sudo
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq "${missing[@]}"
    fi
    command -v oha >/dev/null || export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    if ! command -v oha >/dev/null; then
        log "installing oha $OHA_VERSION_PIN (cargo install --locked)"
        cargo install oha --version "$OHA_VERSION_PIN" --locked
    fi
    command -v oha >/dev/null || die "oha is not on PATH after cargo install"
}

# Builds, unless BENCH_SKIP_BUILD=1, the gateway and the mock (the `dist`
# profile: fat LTO, one codegen unit, as distributed) and
# the component crates named (wasm profile, adding the wasm32-wasip2 target
# when missing).
build_dist() {
    if [[ ${BENCH_SKIP_BUILD:-0} == 1 ]]; then
        log "BENCH_SKIP_BUILD=1: reusing existing binaries"
        return 0
    fi
    log "building the gateway, the mock (dist profile)${*:+ and $*}"
    if (($#)); then
        if ! rustup target list --installed | grep -qx wasm32-wasip2; then
            log "adding the wasm32-wasip2 target"
            rustup target add wasm32-wasip2
        fi
        local crate packages=()
        for crate in "$@"; do
            packages+=(-p "$crate")
        done
        cargo build --profile wasm --target wasm32-wasip2 "${packages[@]}"
    fi
    cargo build --profile dist -p freellm --bin freellm
    cargo build --profile dist -p freellm-mock-upstream --bins
}

# Where `build_dist` puts what the scripts run: GATEWAY_BIN (or
# BENCH_GATEWAY_BIN, another build to measure), MOCK_BIN (or BENCH_MOCK_BIN),
# the mock crate's helpers BARE_BIN, LOAD_BIN and COLDSTART_BIN, and the
# groq component GROQ_WASM (or BENCH_GROQ_WASM, e.g. an older build's).
# Each script checks the ones it uses with `require_files`.
dist_outputs() {
    local dist=$ROOT/target/dist
    GATEWAY_BIN=${BENCH_GATEWAY_BIN:-$dist/freellm}
    MOCK_BIN=${BENCH_MOCK_BIN:-$dist/freellm-mock-upstream}
    BARE_BIN=$dist/freellm-bare-proxy
    LOAD_BIN=$dist/freellm-stream-load
    COLDSTART_BIN=$dist/freellm-coldstart
    SOAK_BIN=$dist/freellm-soak
    GROQ_WASM=${BENCH_GROQ_WASM:-$ROOT/target/wasm32-wasip2/wasm/freellm_provider_groq.wasm}
}

# Dies unless every file named exists.
require_files() {
    local f
    for f in "$@"; do
        [[ -f $f ]] || die "missing build output $f"
    done
}

# The small request every benchmark sends unless it measures prompt sizes.
SMALL_BODY='{"model":"groq/llama-3.3-70b-versatile","messages":[{"role":"user","content":"Say hello"}]}'

# A chat request body of about $1 KiB: a system message, then user and
# assistant turns of ~2 KiB each (bench/prompts.sh, bench/ab.sh).
conversation_body() {
    python3 - "$1" <<'EOF'
import json, sys
target = int(sys.argv[1]) * 1024
words = "the quick brown fox jumps over the lazy dog while the gateway routes every request to a free tier".split()
messages = [{"role": "system", "content": "You are a careful assistant. Answer briefly."}]
i = 0
def size():
    return len(json.dumps({"model": "groq/llama-3.3-70b-versatile", "messages": messages}, separators=(",", ":")))
while size() < target:
    text, n = [], 0
    while n < 2000:
        w = words[(i * 7 + n) % len(words)]
        text.append(w)
        n += len(w) + 1
    messages.append({"role": "user" if len(messages) % 2 else "assistant", "content": " ".join(text) + f" ({i})"})
    i += 1
messages[-1]["role"] = "user"
sys.stdout.write(json.dumps({"model": "groq/llama-3.3-70b-versatile", "messages": messages}, separators=(",", ":")))
EOF
}
