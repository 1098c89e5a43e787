#!/usr/bin/env bash
# The floor's budget: how much per-request work a proxy can add on this
# machine and keep a given share of the floor. The bare proxy (the floor)
# is run again with a known amount of busy work per request
# (`--work-us W`: W µs spent spinning before it forwards), next to the
# gateway, all with the small prompt against the same mock: throughput at
# 16 connections and p50 at 1 connection for each W, each as a share of the
# plain floor's, and each one's CPU per request (utime + stime from /proc
# over the 16-connection phase). Where the shares cross 0.85 is the most
# work any proxy may do per request for the small-request target.
#
# Then the same for streams: the bare proxy with F µs of busy work on every
# data frame it relays (`--frame-work-us F`, F = 0, 1, 2), next to the
# gateway, on 500-chunk streams at one connection: the added time to the
# first byte (over direct, same run) and the CPU per relayed chunk (CPU
# per stream over 500).
#
#     bench/budget.sh
#
# Tunables: BENCH_BUDGET_WORK_US ("0 2 4 8 16"), BENCH_BUDGET_FRAME_WORK_US
# ("0 1 2"), BENCH_BUDGET_DURATION (5s per phase), BENCH_CONNECTIONS (16),
# BENCH_SKIP_BUILD=1. Writes bench/results/budget.json and budget.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${BENCH_BUDGET_DURATION:-5s}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
WORK_US=${BENCH_BUDGET_WORK_US:-0 2 4 8 16}
FRAME_WORK_US=${BENCH_BUDGET_FRAME_WORK_US:-0 1 2}
STREAM_BODY='{"model":"groq/llama-3.3-70b-versatile","stream":true,"messages":[{"role":"user","content":"Say hello"}]}'
RESULTS_DIR=$ROOT/bench/results
WORK=$(mktemp -d "${TMPDIR:-/tmp}/freellm-budget.XXXXXX")

source "$ROOT/bench/lib.sh"
bench_traps

ensure_tools
build_dist freellm-provider-groq
dist_outputs
require_files "$GATEWAY_BIN" "$MOCK_BIN" "$BARE_BIN" "$LOAD_BIN" "$GROQ_WASM"

printf '%s' "$SMALL_BODY" >"$WORK/body.json"
MOCK_PORT=$(free_port 18381)
# Streamed answers have 500 chunks; plain ones are unchanged.
"$MOCK_BIN" --port "$MOCK_PORT" --threads 1 --stream-chunks 500 >"$WORK/mock.log" 2>&1 &
track $!
wait_listening $! "$WORK/mock.log" || die "the mock did not start"
GATEWAY_PORT=$(free_port $((MOCK_PORT + 1)))
start_groq_gateway "$MOCK_PORT" "$GATEWAY_PORT"

run() {
    local name=$1 url=$2 conns=$3
    oha --no-tui --output-format json --worker-threads 1 -z "$DURATION" -c "$conns" \
        -m POST -T application/json -D "$WORK/body.json" "$url" >"$WORK/$name.json"
}

# One row: warm-up, 16 connections with the CPU counted, then 1 connection.
measure() {
    local name=$1 pid=$2 url=$3
    oha --no-tui --worker-threads 1 -z 1s -c "$CONNECTIONS" -m POST -T application/json -D "$WORK/body.json" "$url" >/dev/null
    local before after
    before=$(cpu_ticks "$pid")
    run "$name-c$CONNECTIONS" "$url" "$CONNECTIONS"
    after=$(cpu_ticks "$pid")
    run "$name-c1" "$url" 1
    jq -n --arg name "$name" --argjson tck "$(getconf CLK_TCK)" --argjson cpu $((after - before)) \
        --slurpfile m "$WORK/$name-c$CONNECTIONS.json" --slurpfile one "$WORK/$name-c1.json" '
        def r(n): (. * pow(10; n) | round) / pow(10; n);
        def n(o): [o.statusCodeDistribution[]] | add // 0;
        {name: $name, rps: ($m[0].summary.requestsPerSec | round),
         p50_us_c1: ($one[0].latencyPercentiles.p50 * 1e6 | r(1)),
         cpu_us_per_request: (($cpu / $tck) / n($m[0]) * 1e6 | r(1)),
         not_ok: (n($m[0]) + n($one[0]) - ([$m[0], $one[0]] | map(.statusCodeDistribution["200"] // 0) | add))}' \
        >"$WORK/row-$name.json"
}

port=$((GATEWAY_PORT + 1))
rows=()
for w in $WORK_US; do
    port=$(free_port $((port + 1)))
    "$BARE_BIN" --port "$port" --upstream "http://127.0.0.1:$MOCK_PORT" --work-us "$w" >"$WORK/bare-$w.log" 2>&1 &
    pid=$!
    track "$pid"
    wait_listening "$pid" "$WORK/bare-$w.log" || die "the bare proxy did not start"
    log "floor + $w µs of work per request: $CONNECTIONS and 1 connection(s), $DURATION each"
    measure "floor+$w" "$pid" "http://127.0.0.1:$port/v1/chat/completions"
    stop_pid "$pid"
    rows+=("$WORK/row-floor+$w.json")
done
log "the gateway: $CONNECTIONS and 1 connection(s), $DURATION each"
measure gateway "$GATEWAY_PID" "http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions"
rows+=("$WORK/row-gateway.json")

# One stream row: warm-up, then 500-chunk streams at 1 connection with the
# CPU counted ($2 = 0: direct, no process of ours to count).
stream_seconds=${DURATION%s}
measure_stream() {
    local name=$1 pid=$2 url=$3 before=0 after=0
    "$LOAD_BIN" --url "$url" --body "$STREAM_BODY" --connections 1 --duration-s 1 >/dev/null
    [[ $pid == 0 ]] || before=$(cpu_ticks "$pid")
    "$LOAD_BIN" --url "$url" --body "$STREAM_BODY" --connections 1 --duration-s "$stream_seconds" >"$WORK/stream-$name.json"
    [[ $pid == 0 ]] || after=$(cpu_ticks "$pid")
    jq --arg name "$name" --argjson tck "$(getconf CLK_TCK)" --argjson cpu $((after - before)) '
        def r(n): (. * pow(10; n) | round) / pow(10; n);
        {name: $name, ttfb_p50_us: .ttfb_p50_us, streams: .answers,
         cpu_us_per_chunk: (if .answers > 0 then (($cpu / $tck) / .answers / 500 * 1e6 | r(2)) else null end),
         not_ok: (.incomplete + .errors)}' "$WORK/stream-$name.json" >"$WORK/srow-$name.json"
}

log "500-chunk streams at 1 connection: direct, the floor + F µs per relayed frame, the gateway; $DURATION each"
measure_stream direct 0 "http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
srows=("$WORK/srow-direct.json")
for f in $FRAME_WORK_US; do
    port=$(free_port $((port + 1)))
    "$BARE_BIN" --port "$port" --upstream "http://127.0.0.1:$MOCK_PORT" --frame-work-us "$f" >"$WORK/bare-frame-$f.log" 2>&1 &
    pid=$!
    track "$pid"
    wait_listening "$pid" "$WORK/bare-frame-$f.log" || die "the bare proxy did not start"
    measure_stream "floor+${f}us-per-frame" "$pid" "http://127.0.0.1:$port/v1/chat/completions"
    stop_pid "$pid"
    srows+=("$WORK/srow-floor+${f}us-per-frame.json")
done
measure_stream gateway "$GATEWAY_PID" "http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions"
srows+=("$WORK/srow-gateway.json")
jq -s 'def r(n): (. * pow(10; n) | round) / pow(10; n);
    .[0].ttfb_p50_us as $direct | .[1:] | map(. + {added_ttfb_us: (.ttfb_p50_us - $direct | r(1))})' \
    "${srows[@]}" >"$WORK/streams.json"

mkdir -p "$RESULTS_DIR"
jq -s --arg duration "$DURATION" --argjson conns "$CONNECTIONS" '
    def r(n): (. * pow(10; n) | round) / pow(10; n);
    .[0] as $floor |
    {settings: {duration: $duration, connections: $conns},
     rows: map(. + {share_of_floor: (.rps / $floor.rps | r(3)),
                    added_p50_over_floor_us: (.p50_us_c1 - $floor.p50_us_c1 | r(1)),
                    cpu_over_floor_us: (.cpu_us_per_request - $floor.cpu_us_per_request | r(1))})}' \
    "${rows[@]}" | jq --slurpfile streams "$WORK/streams.json" --slurpfile direct "$WORK/srow-direct.json" \
    '. + {streams: {direct_ttfb_p50_us: $direct[0].ttfb_p50_us, rows: $streams[0]}}' >"$RESULTS_DIR/budget.json"

jq -r '
    "The floor'"'"'s budget: the bare proxy with W µs of busy work per request, and the gateway (small prompt; \(.settings.connections) conns and 1 conn, \(.settings.duration) per phase)",
    "",
    "| Proxy | Req/s (\(.settings.connections) conns) | Share of the floor | CPU / request | CPU over the floor | p50, 1 conn | Added over the floor |",
    "|---|---:|---:|---:|---:|---:|---:|",
    (.rows[] | "| \(.name) | \(.rps) | \(.share_of_floor) | \(.cpu_us_per_request) µs | +\(.cpu_over_floor_us) µs | \(.p50_us_c1) µs | +\(.added_p50_over_floor_us) µs |"),
    "",
    "500-chunk streams at 1 conn, the floor with F µs of busy work per relayed frame (direct TTFB p50 \(.streams.direct_ttfb_p50_us) µs):",
    "",
    "| Proxy | TTFB p50 | Added over direct | CPU / relayed chunk |",
    "|---|---:|---:|---:|",
    (.streams.rows[] | "| \(.name) | \(.ttfb_p50_us) µs | +\(.added_ttfb_us) µs | \(.cpu_us_per_chunk) µs |"),
    "",
    (if ([.rows[].not_ok, .streams.rows[].not_ok] | add) == 0 then "Every timed request answered 200, every stream completed." else "Requests not answered 200 or streams not completed: \([.rows[].not_ok, .streams.rows[].not_ok] | add)." end)
' "$RESULTS_DIR/budget.json" | tee "$RESULTS_DIR/budget.md"
