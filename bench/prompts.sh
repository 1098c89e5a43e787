#!/usr/bin/env bash
# Prompt-size benchmark: the gateway against the mock at real prompt sizes.
# For a small prompt (~90 bytes) and prompts of 16, 64 and 256 KiB (a
# conversation of ~2 KiB messages), in one run: direct to the mock, through
# the bare proxy (the floor) and through the gateway, at 16 connections and
# at 1 connection; and the gateway's own CPU per request (its utime + stime
# from /proc over the one-connection phase), so its growth per KiB of prompt
# can be read off.
#
#     bench/prompts.sh            (bench/run.sh calls it at the end)
#
# Tunables: BENCH_PROMPT_DURATION (5s per phase), BENCH_CONNECTIONS (16),
# BENCH_PROMPT_SIZES_KIB ("16 64 256"), BENCH_SKIP_BUILD=1. Writes
# bench/results/prompts.json and prompts.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${BENCH_PROMPT_DURATION:-5s}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
SIZES_KIB=${BENCH_PROMPT_SIZES_KIB:-16 64 256}
RESULTS_DIR=$ROOT/bench/results
WORK=$(mktemp -d "${TMPDIR:-/tmp}/freellm-prompts.XXXXXX")

source "$ROOT/bench/lib.sh"
bench_traps

ensure_tools
build_dist freellm-provider-groq
dist_outputs
require_files "$GATEWAY_BIN" "$MOCK_BIN" "$BARE_BIN" "$GROQ_WASM"

# The bodies: the small one of bench/run.sh, then conversations of the asked
# sizes (a system message, then user and assistant turns of ~2 KiB each).
printf '%s' "$SMALL_BODY" >"$WORK/body-0.json"
for kib in $SIZES_KIB; do
    conversation_body "$kib" >"$WORK/body-$kib.json"
done

MOCK_PORT=$(free_port 18281)
"$MOCK_BIN" --port "$MOCK_PORT" --threads 1 >"$WORK/mock.log" 2>&1 &
track $!
wait_listening $! "$WORK/mock.log" || die "the mock did not start"
BARE_PORT=$(free_port $((MOCK_PORT + 1)))
"$BARE_BIN" --port "$BARE_PORT" --upstream "http://127.0.0.1:$MOCK_PORT" >"$WORK/bare.log" 2>&1 &
track $!
wait_listening $! "$WORK/bare.log" || die "the bare proxy did not start"

GATEWAY_PORT=$(free_port $((BARE_PORT + 1)))
start_groq_gateway "$MOCK_PORT" "$GATEWAY_PORT"

DIRECT_URL="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
BARE_URL="http://127.0.0.1:$BARE_PORT/v1/chat/completions"
GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions"

run() {
    local name=$1 url=$2 conns=$3 duration=$4 body=$5
    oha --no-tui --output-format json --worker-threads 1 -z "$duration" -c "$conns" \
        -m POST -T application/json -D "$body" "$url" >"$WORK/$name.json"
}

for kib in 0 $SIZES_KIB; do
    body=$WORK/body-$kib.json
    code=$(curl -s -o "$WORK/smoke.json" -w '%{http_code}' -H 'content-type: application/json' \
        --data-binary "@$body" "$GATEWAY_URL")
    [[ $code == 200 ]] || die "a $kib KiB prompt through the gateway answered $code: $(head -c 300 "$WORK/smoke.json")"
    log "prompt $kib KiB ($(stat -c %s "$body") bytes): warm-up, then direct, bare proxy, gateway at $CONNECTIONS and 1 connection(s), $DURATION each"
    run "warm-$kib" "$GATEWAY_URL" "$CONNECTIONS" 1s "$body"
    for conns in "$CONNECTIONS" 1; do
        run "direct-$kib-c$conns" "$DIRECT_URL" "$conns" "$DURATION" "$body"
        run "bare-$kib-c$conns" "$BARE_URL" "$conns" "$DURATION" "$body"
        if [[ $conns == 1 ]]; then cpu_ticks "$GATEWAY_PID" >"$WORK/cpu-$kib-before"; fi
        run "gateway-$kib-c$conns" "$GATEWAY_URL" "$conns" "$DURATION" "$body"
        if [[ $conns == 1 ]]; then cpu_ticks "$GATEWAY_PID" >"$WORK/cpu-$kib-after"; fi
    done
    jq -n --arg kib "$kib" --argjson bytes "$(stat -c %s "$body")" --argjson tck "$(getconf CLK_TCK)" \
        --argjson cpu0 "$(cat "$WORK/cpu-$kib-before")" --argjson cpu1 "$(cat "$WORK/cpu-$kib-after")" \
        --slurpfile d16 "$WORK/direct-$kib-c$CONNECTIONS.json" --slurpfile b16 "$WORK/bare-$kib-c$CONNECTIONS.json" \
        --slurpfile g16 "$WORK/gateway-$kib-c$CONNECTIONS.json" --slurpfile d1 "$WORK/direct-$kib-c1.json" \
        --slurpfile b1 "$WORK/bare-$kib-c1.json" --slurpfile g1 "$WORK/gateway-$kib-c1.json" '
        def r(n): (. * pow(10; n) | round) / pow(10; n);
        def n(o): [o.statusCodeDistribution[]] | add // 0;
        def bad(o): ([o.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0)
                    + ([o.errorDistribution | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0);
        def us(o; p): o.latencyPercentiles[p] * 1e6;
        {
            prompt_kib: ($kib | tonumber), bytes: $bytes,
            rps_c16: {direct: ($d16[0].summary.requestsPerSec | round), bare: ($b16[0].summary.requestsPerSec | round),
                      gateway: ($g16[0].summary.requestsPerSec | round)},
            gateway_vs_floor_c16: ($g16[0].summary.requestsPerSec / $b16[0].summary.requestsPerSec | r(3)),
            gateway_vs_direct_c16: ($g16[0].summary.requestsPerSec / $d16[0].summary.requestsPerSec | r(3)),
            p50_us_c1: {direct: (us($d1[0]; "p50") | r(1)), bare: (us($b1[0]; "p50") | r(1)), gateway: (us($g1[0]; "p50") | r(1))},
            added_p50_us_c1: (us($g1[0]; "p50") - us($d1[0]; "p50") | r(1)),
            floor_added_p50_us_c1: (us($b1[0]; "p50") - us($d1[0]; "p50") | r(1)),
            gateway_cpu_us_per_request: ((($cpu1 - $cpu0) / $tck) / n($g1[0]) * 1e6 | r(1)),
            not_ok: (bad($d16[0]) + bad($b16[0]) + bad($g16[0]) + bad($d1[0]) + bad($b1[0]) + bad($g1[0]))
        }' >"$WORK/row-$kib.json"
done

mkdir -p "$RESULTS_DIR"
jq -s --arg duration "$DURATION" --argjson conns "$CONNECTIONS" '
    def r(n): (. * pow(10; n) | round) / pow(10; n);
    (.[0].gateway_cpu_us_per_request) as $cpu0 |
    {
        settings: {duration: $duration, connections: $conns},
        rows: map(. + {cpu_growth_us_per_kib: (if .prompt_kib > 0 then ((.gateway_cpu_us_per_request - $cpu0) / .prompt_kib | r(2)) else null end)}),
        targets_64kib: (map(select(.prompt_kib == 64))[0] // null | if . == null then null else {
            gateway_vs_floor_c16: {target: ">= 0.7", value: .gateway_vs_floor_c16, pass: (.gateway_vs_floor_c16 >= 0.7)},
            added_p50_us_c1: {target: "<= 100", value: .added_p50_us_c1, pass: (.added_p50_us_c1 <= 100)},
            cpu_growth_us_per_kib: {target: "<= ~1", value: ((.gateway_cpu_us_per_request - $cpu0) / 64 | r(2)),
                                    pass: (((.gateway_cpu_us_per_request - $cpu0) / 64) <= 1.0)}
        } end)
    }' "$WORK"/row-0.json $(for kib in $SIZES_KIB; do echo "$WORK/row-$kib.json"; done) >"$RESULTS_DIR/prompts.json"

jq -r '
    def pf(b): if b then "PASS" else "FAIL" end;
    "Prompt sizes: direct, bare proxy (floor) and gateway, \(.settings.connections) conns and 1 conn, \(.settings.duration) per phase",
    "",
    "| Prompt | Req/s direct / floor / gateway (\(.settings.connections) conns) | Gateway vs floor | p50 1 conn direct / floor / gateway (µs) | Added p50 gateway (floor) | Gateway CPU / request | CPU growth / KiB |",
    "|---|---:|---:|---:|---:|---:|---:|",
    (.rows[] | "| \(if .prompt_kib == 0 then "small (\(.bytes) B)" else "\(.prompt_kib) KiB" end) | \(.rps_c16.direct) / \(.rps_c16.bare) / \(.rps_c16.gateway) | \(.gateway_vs_floor_c16) | \(.p50_us_c1.direct) / \(.p50_us_c1.bare) / \(.p50_us_c1.gateway) | +\(.added_p50_us_c1) µs (+\(.floor_added_p50_us_c1)) | \(.gateway_cpu_us_per_request) µs | \(.cpu_growth_us_per_kib // "–") µs |"),
    "",
    (.targets_64kib | if . == null then "No 64 KiB row." else
     "Targets at 64 KiB: gateway ≥ 0.7 of the floor at 16 conns: \(.gateway_vs_floor_c16.value) \(pf(.gateway_vs_floor_c16.pass)); added p50 ≤ 100 µs at 1 conn: \(.added_p50_us_c1.value) µs \(pf(.added_p50_us_c1.pass)); own CPU growth ≤ ~1 µs per KiB: \(.cpu_growth_us_per_kib.value) µs \(pf(.cpu_growth_us_per_kib.pass))." end),
    (if ([.rows[].not_ok] | add) > 0 then "WARNING: non-200 answers or errors: \([.rows[] | "\(.prompt_kib) KiB: \(.not_ok)"] | join(", "))" else "Every timed request answered 200." end)
' "$RESULTS_DIR/prompts.json" | tee "$RESULTS_DIR/prompts.md"
