#!/usr/bin/env bash
# A/B of two gateway builds on one machine: the same mock, the same load,
# the two builds run one after the other in alternating rounds (A, B, A, B,
# ...), so a slower or busier machine shows in both. For each run: req/s at
# 16 connections, p50 at 1 connection (and the mock's own p50 measured just
# before, direct), and the gateway's CPU per request read from /proc over
# each phase, the figure least moved by scheduling.
#
#     BENCH_A_BIN=old/target/dist/freellm BENCH_A_WASM=old/.../freellm_provider_groq.wasm \
#     BENCH_B_BIN=target/dist/freellm     BENCH_B_WASM=target/.../freellm_provider_groq.wasm \
#     bench/ab.sh
#
# B defaults to this tree's dist build and groq component, A has no default.
# Each side runs with its own component (an older tree's host may not load
# a newer contract); give B the A component too to tell the host's share
# from the component's. Nothing is built: build both trees first
# (`cargo build --profile dist -p freellm -p freellm-mock-upstream --bins`,
# `cargo build --profile wasm --target wasm32-wasip2 -p freellm-provider-groq`).
#
# Tunables: BENCH_AB_ROUNDS (3), BENCH_AB_DURATION (8s per phase),
# BENCH_CONNECTIONS (16), BENCH_AB_PROMPT_KIB (unset: the small request of
# bench/run.sh; a size: a conversation of that many KiB, as
# bench/prompts.sh sends). Prints a markdown table; writes
# bench/results/ab.json.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

ROUNDS=${BENCH_AB_ROUNDS:-3}
DURATION=${BENCH_AB_DURATION:-8s}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
RESULTS_DIR=$ROOT/bench/results
TOP=$(mktemp -d "${TMPDIR:-/tmp}/freellm-ab.XXXXXX")
WORK=$TOP

source "$ROOT/bench/lib.sh"
bench_traps
ensure_tools

A_BIN=${BENCH_A_BIN:?BENCH_A_BIN: the first freellm binary}
A_WASM=${BENCH_A_WASM:?BENCH_A_WASM: the groq component for the first binary}
dist_outputs
B_BIN=${BENCH_B_BIN:-$GATEWAY_BIN}
B_WASM=${BENCH_B_WASM:-$GROQ_WASM}
require_files "$A_BIN" "$A_WASM" "$B_BIN" "$B_WASM" "$MOCK_BIN"
# The gateway reads its component path relative to its temporary config.
A_BIN=$(realpath "$A_BIN") A_WASM=$(realpath "$A_WASM") B_BIN=$(realpath "$B_BIN") B_WASM=$(realpath "$B_WASM")

BODY_FILE=$TOP/body.json
if [[ -n ${BENCH_AB_PROMPT_KIB:-} ]]; then
    conversation_body "$BENCH_AB_PROMPT_KIB" >"$BODY_FILE"
else
    printf '%s' "$SMALL_BODY" >"$BODY_FILE"
fi
MOCK_PORT=$(free_port 18381)
"$MOCK_BIN" --port "$MOCK_PORT" --threads 1 >"$TOP/mock.log" 2>&1 &
track $!
wait_listening $! "$TOP/mock.log" || die "the mock did not start"
GATEWAY_PORT=$(free_port $((MOCK_PORT + 1)))
TCK=$(getconf CLK_TCK)

# oha against $1 with $2 connections for $3; the JSON report on stdout.
load() {
    oha --no-tui --output-format json --worker-threads 1 -z "$3" -c "$2" \
        -m POST -T application/json -D "$BODY_FILE" "$1"
}

# One run of side $1 (A or B) in round $2: one JSON line on stdout.
measure() {
    local side=$1 round=$2 bin wasm
    if [[ $side == A ]]; then bin=$A_BIN wasm=$A_WASM; else bin=$B_BIN wasm=$B_WASM; fi
    # Each side keeps its own data directory: two builds may not share a store.
    WORK=$TOP/$side
    GATEWAY_BIN=$bin GROQ_WASM=$wasm start_groq_gateway "$MOCK_PORT" "$GATEWAY_PORT"
    WORK=$TOP
    local url="http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions" code
    code=$(curl -s -o "$TOP/smoke.json" -w '%{http_code}' -H 'content-type: application/json' --data-binary @"$BODY_FILE" "$url")
    [[ $code == 200 ]] || die "$side ($bin) answered $code: $(head -c 300 "$TOP/smoke.json")"
    load "$url" "$CONNECTIONS" 1s >/dev/null
    local c0 c1 c2 c3
    c0=$(cpu_ticks "$GATEWAY_PID")
    load "$url" "$CONNECTIONS" "$DURATION" >"$TOP/g16.json"
    c1=$(cpu_ticks "$GATEWAY_PID")
    load "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" 1 "$DURATION" >"$TOP/d1.json"
    c2=$(cpu_ticks "$GATEWAY_PID")
    load "$url" 1 "$DURATION" >"$TOP/g1.json"
    c3=$(cpu_ticks "$GATEWAY_PID")
    stop_pid "$GATEWAY_PID"
    jq -nc --arg side "$side" --argjson round "$round" --argjson tck "$TCK" \
        --argjson c0 "$c0" --argjson c1 "$c1" --argjson c2 "$c2" --argjson c3 "$c3" \
        --slurpfile g16 "$TOP/g16.json" --slurpfile d1 "$TOP/d1.json" --slurpfile g1 "$TOP/g1.json" '
        def n(o): [o.statusCodeDistribution[]] | add // 0;
        def ok(o): o.statusCodeDistribution["200"] // 0;
        {
            side: $side, round: $round,
            rps_c16: $g16[0].summary.requestsPerSec,
            cpu_us_per_request_c16: ((($c1 - $c0) / $tck) / n($g16[0]) * 1e6),
            direct_p50_us_c1: ($d1[0].latencyPercentiles.p50 * 1e6),
            p50_us_c1: ($g1[0].latencyPercentiles.p50 * 1e6),
            added_p50_us_c1: (($g1[0].latencyPercentiles.p50 - $d1[0].latencyPercentiles.p50) * 1e6),
            cpu_us_per_request_c1: ((($c3 - $c2) / $tck) / n($g1[0]) * 1e6),
            not_ok: ((n($g16[0]) - ok($g16[0])) + (n($g1[0]) - ok($g1[0])))
        }'
}

: >"$TOP/rows.jsonl"
for round in $(seq "$ROUNDS"); do
    for side in A B; do
        log "round $round/$ROUNDS: $side"
        measure "$side" "$round" >>"$TOP/rows.jsonl"
    done
done

mkdir -p "$RESULTS_DIR"
jq -s --argjson conns "$CONNECTIONS" --arg prompt_kib "${BENCH_AB_PROMPT_KIB:-small}" --arg a "$A_BIN" --arg aw "$A_WASM" --arg b "$B_BIN" --arg bw "$B_WASM" --arg duration "$DURATION" '
    def r(n): (. * pow(10; n) | round) / pow(10; n);
    def mean(f): (map(f) | add / length);
    {
        a: {bin: $a, component: $aw}, b: {bin: $b, component: $bw}, duration: $duration, connections: $conns, prompt_kib: $prompt_kib,
        runs: .,
        means: (group_by(.side) | map({key: .[0].side, value: {
            rps_c16: (mean(.rps_c16) | round),
            cpu_us_per_request_c16: (mean(.cpu_us_per_request_c16) | r(1)),
            added_p50_us_c1: (mean(.added_p50_us_c1) | r(1)),
            cpu_us_per_request_c1: (mean(.cpu_us_per_request_c1) | r(1)),
            not_ok: (map(.not_ok) | add)
        }}) | from_entries)
    }' "$TOP/rows.jsonl" >"$RESULTS_DIR/ab.json"

jq -r '
    def r(n): (. * pow(10; n) | round) / pow(10; n);
    "| run | req/s, \(.connections) conns | CPU per request, \(.connections) conns | added p50, 1 conn (mock p50) | CPU per request, 1 conn |",
    "|---|---:|---:|---:|---:|",
    (.runs[] | "| \(.side)\(.round) | \(.rps_c16 | round) | \(.cpu_us_per_request_c16 | r(1)) µs | +\(.added_p50_us_c1 | r(0)) µs (\(.direct_p50_us_c1 | r(0)) µs) | \(.cpu_us_per_request_c1 | r(1)) µs |"),
    (.means | to_entries[] | "| mean \(.key) | \(.value.rps_c16) | \(.value.cpu_us_per_request_c16) µs | +\(.value.added_p50_us_c1) µs | \(.value.cpu_us_per_request_c1) µs |"),
    "",
    "failed requests: A \(.means.A.not_ok), B \(.means.B.not_ok)"
' "$RESULTS_DIR/ab.json"
