#!/usr/bin/env bash
# FreeLLM soak: does the gateway keep serving its healthy clients while
# hostile and heavy ones hold connections? Run from the repository root:
#
#     bench/soak.sh
#
# One gateway (dist build) with two providers: groq against the fast
# dist-profile mock (the healthy clients' chat requests) and mistral against a
# slow SSE upstream (`freellm-soak upstream`, one chunk a second, never
# ending). In one
# run it measures the healthy clients' served requests per second (oha, a
# compiled client on one thread, as fast as the gateway answers)
#   1. unloaded, then
#   2. while 1000 streams stay open, 1000 connections sit idle, 200 clients
#      send their request head one byte every 5 s and 200 send their body one
#      byte every 5 s (each reconnects whenever the gateway cuts it),
# and samples the gateway's resident memory throughout. Targets: the loaded
# throughput is at least 90 % of the unloaded one, RSS stays under 256 MiB.
# The hostile clients and the slow upstream (`freellm-soak`, compiled, one
# thread each) share the gateway's cores, so each phase also records the CPU
# every party used (from
# /proc/<pid>/stat): the healthy requests served per CPU-second of the
# gateway, loaded vs unloaded, is the gateway's own cost of the hostile load
# with the machine's contention taken out.
# It is a report, not a test: it exits 0 whatever the figures.
#
# Tunables (environment): SOAK_SECONDS (60, the loaded phase),
# SOAK_BASELINE_SECONDS (20), SOAK_WARMUP_SECONDS (15, hostile clients
# ramping up before the loaded phase is measured), SOAK_STREAMS (1000),
# SOAK_IDLE (1000), SOAK_SLOW (200 of each kind), SOAK_HEALTHY_CONNECTIONS
# (8), BENCH_SKIP_BUILD=1 (reuse existing binaries), BENCH_GATEWAY_BIN and
# BENCH_MOCK_BIN (measure other builds, e.g. the release profile).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SECONDS_LOADED=${SOAK_SECONDS:-60}
SECONDS_BASELINE=${SOAK_BASELINE_SECONDS:-20}
SECONDS_WARMUP=${SOAK_WARMUP_SECONDS:-15}
STREAMS=${SOAK_STREAMS:-1000}
IDLE=${SOAK_IDLE:-1000}
SLOW=${SOAK_SLOW:-200}
HEALTHY_CONNECTIONS=${SOAK_HEALTHY_CONNECTIONS:-8}
TARGET_RATIO=0.90
TARGET_RSS_MIB=256

source "$ROOT/bench/lib.sh"
bench_traps
command -v python3 >/dev/null || die "python3 is needed for the report's arithmetic"
command -v curl >/dev/null || die "curl is needed"

# Thousands of sockets on each side: the gateway, the clients and the slow
# upstream inherit this.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= 8192)) || die "ulimit -n is $(ulimit -n); the soak needs at least 8192 descriptors"

ensure_tools
build_dist freellm-provider-groq freellm-provider-mistral
dist_outputs
MISTRAL_WASM=$ROOT/target/wasm32-wasip2/wasm/freellm_provider_mistral.wasm
require_files "$GATEWAY_BIN" "$MOCK_BIN" "$SOAK_BIN" "$GROQ_WASM" "$MISTRAL_WASM"

WORK=$(mktemp -d)
MOCK_PORT=$(free_port 18181)
SLOW_PORT=$(free_port $((MOCK_PORT + 1)))
GATEWAY_PORT=$(free_port $((SLOW_PORT + 1)))

"$MOCK_BIN" --port "$MOCK_PORT" --threads 1 >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!
track "$MOCK_PID"
wait_listening $! "$WORK/mock.log" || die "the mock did not start: $(cat "$WORK/mock.log")"
"$SOAK_BIN" upstream --port "$SLOW_PORT" --interval-ms 1000 >"$WORK/slow.log" 2>&1 &
SLOW_PID=$!
track "$SLOW_PID"
wait_listening $! "$WORK/slow.log" || die "the slow upstream did not start: $(cat "$WORK/slow.log")"

mkdir -p "$WORK/data" "$WORK/cache"
# Both mocks are not the real providers: lift their declared free-tier limits.
cat >"$WORK/plugins.toml" <<TOML
[providers.groq]
component = "$GROQ_WASM"
limits = { rpm = 0, rpd = 0, tpm = 0, tpd = 0 }

[providers.mistral]
component = "$MISTRAL_WASM"
limits = { rpm = 0, rpd = 0, tpm = 0, tpd = 0 }
TOML
env PORT="$GATEWAY_PORT" HOST=127.0.0.1 FREELLM_DATA_DIR="$WORK/data" FREELLM_CACHE_DIR="$WORK/cache" \
    GROQ_API_KEY=bench GROQ_BASE_URL="http://127.0.0.1:$MOCK_PORT/v1" \
    MISTRAL_API_KEY=bench MISTRAL_BASE_URL="http://127.0.0.1:$SLOW_PORT/v1" \
    CACHE_ENABLED=false LOG_LEVEL=error STREAM_STALL_TIMEOUT_MS=120000 \
    "$GATEWAY_BIN" serve --config "$WORK/plugins.toml" </dev/null >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
track "$GATEWAY_PID"
wait_http_200 "http://127.0.0.1:$GATEWAY_PORT/healthz" 180 "$GATEWAY_PID" ||
    die "the gateway did not become healthy: $(tail -n 20 "$WORK/gateway.log")"
log "gateway on 127.0.0.1:$GATEWAY_PORT (pid $GATEWAY_PID), fast mock :$MOCK_PORT, slow upstream :$SLOW_PORT"

rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$GATEWAY_PID/status"; }
sample_rss() {
    while kill -0 "$GATEWAY_PID" 2>/dev/null; do
        rss_mib >>"$WORK/rss.txt" && echo >>"$WORK/rss.txt"
        sleep 1
    done
}
# healthy SECONDS OUT: oha's healthy load, and the CPU ticks each party used
# meanwhile (gateway, mock, slow upstream, hostile clients, oha) -> OUT.cpu
healthy() {
    local before after
    before=$(cpu_ticks_of "$GATEWAY_PID" "$MOCK_PID" "$SLOW_PID" "${HOSTILE_PID:-}")
    oha --no-tui --output-format json --worker-threads 1 -z "$1s" -c "$HEALTHY_CONNECTIONS" \
        -m POST -T application/json -d '{"model":"groq/llama-3.3-70b-versatile","messages":[{"role":"user","content":"hi"}]}' \
        "http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions" >"$2"
    after=$(cpu_ticks_of "$GATEWAY_PID" "$MOCK_PID" "$SLOW_PID" "${HOSTILE_PID:-}")
    echo "$before $after" >"$2.cpu"
}
# CPU ticks of each pid given (0 for an empty or gone one), space-separated.
cpu_ticks_of() {
    local pid
    for pid in "$@"; do
        if [[ -n $pid && -r /proc/$pid/stat ]]; then cpu_ticks "$pid"; else echo 0; fi
    done | paste -sd' '
}

IDLE_RSS=$(rss_mib)
log "unloaded phase: ${SECONDS_BASELINE}s of healthy clients ($HEALTHY_CONNECTIONS connections)"
healthy "$SECONDS_BASELINE" "$WORK/unloaded.json"

sample_rss &
track $!
TOTAL_HOSTILE=$((SECONDS_WARMUP + SECONDS_LOADED + 5))
log "hostile clients: $STREAMS streams, $IDLE idle, $SLOW slow heads, $SLOW slow bodies (${SECONDS_WARMUP}s ramp-up)"
"$SOAK_BIN" hostile --port "$GATEWAY_PORT" --seconds "$TOTAL_HOSTILE" --streams "$STREAMS" \
    --idle "$IDLE" --slow-headers "$SLOW" --slow-bodies "$SLOW" >"$WORK/hostile.log" 2>&1 &
HOSTILE_PID=$!
track "$HOSTILE_PID"
sleep "$SECONDS_WARMUP"
log "loaded phase: ${SECONDS_LOADED}s; hostile: $(tail -n 1 "$WORK/hostile.log")"
healthy "$SECONDS_LOADED" "$WORK/loaded.json"
HOSTILE_STATS=$(tail -n 1 "$WORK/hostile.log")
OPEN_FDS=$(ls "/proc/$GATEWAY_PID/fd" | wc -l)
stop_pid "$HOSTILE_PID"

rate() { jq '(.statusCodeDistribution["200"] // 0) / .summary.total | . * 10 | round / 10' "$1"; }
errors() { jq '([.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0)
               + ([.errorDistribution | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0)' "$1"; }
# cpu OUT INDEX: cores party INDEX used during the phase (0 gateway, 1 mock,
# 2 slow upstream, 3 hostile clients).
cpu() {
    python3 - "$1" "$2" "$(getconf CLK_TCK)" <<'PY'
import json, sys
out, i, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t = [int(x) for x in open(out + ".cpu").read().split()]
n = len(t) // 2
seconds = json.load(open(out))["summary"]["total"]
print(round((t[n + i] - t[i]) / tck / seconds, 2))
PY
}
UNLOADED=$(rate "$WORK/unloaded.json")
LOADED=$(rate "$WORK/loaded.json")
RATIO=$(python3 -c "print(round($LOADED / $UNLOADED, 3) if $UNLOADED else 0)")
GW_CPU_UNLOADED=$(cpu "$WORK/unloaded.json" 0)
GW_CPU_LOADED=$(cpu "$WORK/loaded.json" 0)
LOAD_CPU_LOADED=$(python3 -c "print(round($(cpu "$WORK/loaded.json" 2) + $(cpu "$WORK/loaded.json" 3), 2))")
PER_CPU_UNLOADED=$(python3 -c "print(round($UNLOADED / $GW_CPU_UNLOADED) if $GW_CPU_UNLOADED else 0)")
PER_CPU_LOADED=$(python3 -c "print(round($LOADED / $GW_CPU_LOADED) if $GW_CPU_LOADED else 0)")
PER_CPU_RATIO=$(python3 -c "print(round($PER_CPU_LOADED / $PER_CPU_UNLOADED, 3) if $PER_CPU_UNLOADED else 0)")
MAX_RSS=$(sort -n "$WORK/rss.txt" | tail -n 1)
verdict() { if python3 -c "import sys; sys.exit(0 if $1 else 1)"; then echo PASS; else echo FAIL; fi; }

cat <<REPORT

| Figure | Value | Target | |
|---|---|---|---|
| healthy req/s, unloaded | $UNLOADED ($(errors "$WORK/unloaded.json") errors) | | |
| healthy req/s, loaded | $LOADED ($(errors "$WORK/loaded.json") errors) | | |
| loaded / unloaded | $RATIO | >= $TARGET_RATIO | $(verdict "$RATIO >= $TARGET_RATIO") |
| gateway CPU (cores), unloaded / loaded | $GW_CPU_UNLOADED / $GW_CPU_LOADED | | |
| hostile clients + slow upstream CPU (cores), loaded | $LOAD_CPU_LOADED | | |
| healthy req per gateway CPU-second, unloaded / loaded | $PER_CPU_UNLOADED / $PER_CPU_LOADED ($PER_CPU_RATIO) | report | |
| gateway RSS, idle / max under load | $IDLE_RSS / $MAX_RSS MiB | < $TARGET_RSS_MIB MiB | $(verdict "$MAX_RSS < $TARGET_RSS_MIB") |
| gateway descriptors at the end of the loaded phase | $OPEN_FDS | | |

hostile clients at the end: $HOSTILE_STATS
REPORT
