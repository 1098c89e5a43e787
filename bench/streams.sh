#!/usr/bin/env bash
# Stream benchmark: streamed answers through the gateway, in one run.
#   1. 500-chunk streams (the mock sends them as fast as it can): time to
#      the first byte and to the end, direct to the mock, through the bare
#      proxy (the floor) and through the gateway, at 1 and 16 connections;
#      the gateway's CPU per relayed chunk is its CPU per 500-chunk stream
#      minus its CPU per 3-chunk stream (same run), over the 497 chunks, and
#      the bare proxy's (the floor's) is measured the same way.
#   2. Many slow streams held at once (60 chunks, one every 500 ms): the
#      gateway's RSS per held stream (and its PSS, which counts a page
#      shared between mappings once: the adapter instances' memory images
#      map the same pages again for each instance, which RSS counts each
#      time), and whether other clients stall
#      (one-connection small requests before and while the streams are held).
#      10,000 by default (the gateway's default `max_streams`; up to 64
#      streams share one adapter instance).
#
#     bench/streams.sh            (bench/run.sh calls it at the end)
#
# Tunables: BENCH_STREAM_DURATION (5 s per phase), BENCH_CONNECTIONS (16),
# BENCH_STREAM_CHUNKS (500), BENCH_HELD_STREAMS (10000), BENCH_SKIP_BUILD=1.
# Each held stream takes two descriptors in the gateway: the script raises
# its own limit as far as allowed and holds fewer streams when it cannot. Writes bench/results/streams.json and streams.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION_S=${BENCH_STREAM_DURATION:-5}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
CHUNKS=${BENCH_STREAM_CHUNKS:-500}
HELD=${BENCH_HELD_STREAMS:-10000}
RESULTS_DIR=$ROOT/bench/results
WORK=$(mktemp -d "${TMPDIR:-/tmp}/freellm-streams.XXXXXX")

source "$ROOT/bench/lib.sh"
bench_traps

ensure_tools
build_dist freellm-provider-groq
dist_outputs
require_files "$GATEWAY_BIN" "$MOCK_BIN" "$BARE_BIN" "$LOAD_BIN" "$GROQ_WASM"

# Descriptors: each held stream is one client and one upstream connection
# in the gateway. Raise the limit as far as allowed; hold fewer streams
# when it stays too low (said in the log and the report).
want_fds=$((2 * HELD + 2048))
if (($(ulimit -n) < want_fds)); then
    ulimit -Hn "$want_fds" 2>/dev/null || true
    ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
if (($(ulimit -n) < want_fds)); then
    HELD=$((($(ulimit -n) - 2048) / 2))
    log "descriptor limit $(ulimit -n) (hard limit $(ulimit -Hn)): holding $HELD streams instead"
fi
log "descriptor limit: $(ulimit -n); holding $HELD streams"

STREAM_BODY='{"model":"groq/llama-3.3-70b-versatile","stream":true,"messages":[{"role":"user","content":"Say hello"}]}'

# start_mock NAME ARGS...: a mock on a free port; sets MOCK_PORT_<NAME>.
start_mock() {
    local name=$1 port
    shift
    port=$(free_port 18381)
    "$MOCK_BIN" --port "$port" --threads 1 "$@" >"$WORK/mock-$name.log" 2>&1 &
    track $!
    wait_listening $! "$WORK/mock-$name.log" || die "mock $name did not start"
    printf -v "MOCK_PORT_$name" '%s' "$port"
}

# start_gateway MOCK_PORT: a fresh gateway on the groq component, pointed at it.
start_gateway() {
    GATEWAY_PORT=$(free_port 18390)
    rm -rf "$WORK/data"
    start_groq_gateway "$1" "$GATEWAY_PORT" \
        FREELLM_MAX_CONNECTIONS=$((HELD + 1024)) FREELLM_MAX_STREAMS="${BENCH_MAX_STREAMS:-$((HELD > 10000 ? HELD : 10000))}"
    GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions"
}

start_bare() {
    BARE_PORT=$(free_port 18395)
    "$BARE_BIN" --port "$BARE_PORT" --upstream "http://127.0.0.1:$1" >"$WORK/bare.log" 2>&1 &
    BARE_PID=$!
    track "$BARE_PID"
    wait_listening "$BARE_PID" "$WORK/bare.log" || die "the bare proxy did not start"
    BARE_URL="http://127.0.0.1:$BARE_PORT/v1/chat/completions"
}

# stream_load NAME URL CONNECTIONS: fast streams for DURATION_S -> $WORK/NAME.json
stream_load() {
    "$LOAD_BIN" --url "$2" --body "$STREAM_BODY" --connections "$3" --duration-s "$DURATION_S" >"$WORK/$1.json"
}

# ---------------------------------------------------------------- 1. fast streams

start_mock long --stream-chunks "$CHUNKS"
start_mock short --stream-chunks 3
DIRECT_URL="http://127.0.0.1:$MOCK_PORT_long/v1/chat/completions"

log "$CHUNKS-chunk streams: direct, bare proxy, gateway at 1 and $CONNECTIONS connections, ${DURATION_S} s each"
start_bare "$MOCK_PORT_long"
start_gateway "$MOCK_PORT_long"
"$LOAD_BIN" --url "$GATEWAY_URL" --body "$STREAM_BODY" --connections 4 --duration-s 1 >/dev/null # warm-up
for conns in 1 "$CONNECTIONS"; do
    stream_load "direct-c$conns" "$DIRECT_URL" "$conns"
    if [[ $conns == 1 ]]; then cpu_ticks "$BARE_PID" >"$WORK/bare-cpu-long-before"; fi
    stream_load "bare-c$conns" "$BARE_URL" "$conns"
    if [[ $conns == 1 ]]; then cpu_ticks "$BARE_PID" >"$WORK/bare-cpu-long-after"; fi
    if [[ $conns == 1 ]]; then cpu_ticks "$GATEWAY_PID" >"$WORK/cpu-long-before"; fi
    stream_load "gateway-c$conns" "$GATEWAY_URL" "$conns"
    if [[ $conns == 1 ]]; then cpu_ticks "$GATEWAY_PID" >"$WORK/cpu-long-after"; fi
done
stop_pid "$GATEWAY_PID"
stop_pid "$BARE_PID"

log "3-chunk streams through the gateway and the bare proxy, 1 connection, ${DURATION_S} s (the per-stream baseline)"
# short_baseline NAME URL PID CPU: a warm-up, then 3-chunk streams at one
# connection -> $WORK/NAME.json, the server's CPU ticks around them in
# $WORK/CPU-before and $WORK/CPU-after.
short_baseline() {
    "$LOAD_BIN" --url "$2" --body "$STREAM_BODY" --connections 4 --duration-s 1 >/dev/null
    cpu_ticks "$3" >"$WORK/$4-before"
    stream_load "$1" "$2" 1
    cpu_ticks "$3" >"$WORK/$4-after"
    stop_pid "$3"
}
# Direct, for the added time to first byte of short streams: between two
# 3-chunk answers the mock never sits idle, where between two 500-chunk
# ones relayed by the gateway it waits for milliseconds, and a mock woken
# from that wait answers its next request later (this VM: ~120 -> ~350
# µs with an 8 ms pause between direct requests).
"$LOAD_BIN" --url "http://127.0.0.1:$MOCK_PORT_short/v1/chat/completions" --body "$STREAM_BODY" --connections 4 --duration-s 1 >/dev/null
stream_load direct-short-c1 "http://127.0.0.1:$MOCK_PORT_short/v1/chat/completions" 1
start_gateway "$MOCK_PORT_short"
short_baseline gateway-short-c1 "$GATEWAY_URL" "$GATEWAY_PID" cpu-short
start_bare "$MOCK_PORT_short"
short_baseline bare-short-c1 "$BARE_URL" "$BARE_PID" bare-cpu-short

# ---------------------------------------------------------------- 2. held slow streams

start_mock slow --stream-chunks 60 --chunk-interval-ms 500
start_gateway "$MOCK_PORT_slow"
small() {
    oha --no-tui --output-format json --worker-threads 1 -z "${DURATION_S}s" -c 1 \
        -m POST -T application/json -d "$SMALL_BODY" "$GATEWAY_URL" >"$WORK/$1.json"
}
log "other clients before: 1 connection of small requests, ${DURATION_S} s"
small others-before
sleep 1
IDLE_KIB=$(awk '/^VmRSS:/ {print $2}' "/proc/$GATEWAY_PID/status")
IDLE_PSS=$(pss_kib "$GATEWAY_PID")
# hold_streams URL NAME: opens $HELD slow streams in the background
# ($HOLD_PID) and waits until all are open ($WORK/NAME exists) or the load
# gave up; its report goes to $WORK/NAME.json.
hold_streams() {
    "$LOAD_BIN" --url "$1" --body "$STREAM_BODY" --hold "$HELD" --ready-file "$WORK/$2" \
        >"$WORK/$2.json" 2>"$WORK/$2.log" &
    HOLD_PID=$!
    track "$HOLD_PID"
    for _ in $(seq 600); do
        [[ -f $WORK/$2 ]] && break
        kill -0 "$HOLD_PID" 2>/dev/null || break
        sleep 0.1
    done
}

log "holding $HELD slow streams (60 chunks, one every 500 ms) through the gateway"
hold_streams "$GATEWAY_URL" held
if [[ -f $WORK/held ]]; then
    HELD_KIB=$(awk '/^VmRSS:/ {print $2}' "/proc/$GATEWAY_PID/status")
    HELD_PSS=$(pss_kib "$GATEWAY_PID")
    log "all $HELD open after $(cat "$WORK/held") s; RSS $IDLE_KIB -> $HELD_KIB KiB; other clients while held, ${DURATION_S} s"
    small others-held
    HELD_KIB_AFTER=$(awk '/^VmRSS:/ {print $2}' "/proc/$GATEWAY_PID/status")
else
    log "the $HELD streams did not all open (see held.json)"
    HELD_KIB=0 HELD_KIB_AFTER=0 HELD_PSS=0
    echo '{"statusCodeDistribution":{},"errorDistribution":{},"latencyPercentiles":{"p50":0,"p99":0},"summary":{"requestsPerSec":0}}' >"$WORK/others-held.json"
fi
wait "$HOLD_PID" || true
PEAK_KIB=$(awk '/^VmHWM:/ {print $2}' "/proc/$GATEWAY_PID/status")
stop_pid "$GATEWAY_PID"

# The floor: the bare proxy holding the same streams (its hyper server and
# client connections are the gateway's too).
start_bare "$MOCK_PORT_slow"
sleep 1
BARE_IDLE_KIB=$(awk '/^VmRSS:/ {print $2}' "/proc/$BARE_PID/status")
BARE_IDLE_PSS=$(pss_kib "$BARE_PID")
log "holding $HELD slow streams through the bare proxy"
hold_streams "$BARE_URL" held-bare
BARE_HELD_KIB=0 BARE_HELD_PSS=0
if [[ -f $WORK/held-bare ]]; then
    BARE_HELD_KIB=$(awk '/^VmRSS:/ {print $2}' "/proc/$BARE_PID/status")
    BARE_HELD_PSS=$(pss_kib "$BARE_PID")
fi
wait "$HOLD_PID" || true
stop_pid "$BARE_PID"

# ---------------------------------------------------------------- report

mkdir -p "$RESULTS_DIR"
jq -n --argjson chunks "$CHUNKS" --argjson conns "$CONNECTIONS" --argjson held "$HELD" --argjson tck "$(getconf CLK_TCK)" \
    --argjson cl0 "$(cat "$WORK/cpu-long-before")" --argjson cl1 "$(cat "$WORK/cpu-long-after")" \
    --argjson cs0 "$(cat "$WORK/cpu-short-before")" --argjson cs1 "$(cat "$WORK/cpu-short-after")" \
    --argjson bl0 "$(cat "$WORK/bare-cpu-long-before")" --argjson bl1 "$(cat "$WORK/bare-cpu-long-after")" \
    --argjson bs0 "$(cat "$WORK/bare-cpu-short-before")" --argjson bs1 "$(cat "$WORK/bare-cpu-short-after")" \
    --slurpfile bs "$WORK/bare-short-c1.json" --slurpfile ds "$WORK/direct-short-c1.json" \
    --slurpfile d1 "$WORK/direct-c1.json" --slurpfile b1 "$WORK/bare-c1.json" --slurpfile g1 "$WORK/gateway-c1.json" \
    --slurpfile d16 "$WORK/direct-c$CONNECTIONS.json" --slurpfile b16 "$WORK/bare-c$CONNECTIONS.json" \
    --slurpfile g16 "$WORK/gateway-c$CONNECTIONS.json" --slurpfile gs "$WORK/gateway-short-c1.json" \
    --slurpfile hold "$WORK/held.json" --slurpfile ob "$WORK/others-before.json" --slurpfile oh "$WORK/others-held.json" \
    --argjson idle "$IDLE_KIB" --argjson heldkib "$HELD_KIB" --argjson heldafter "$HELD_KIB_AFTER" --argjson peak "$PEAK_KIB" \
    --slurpfile holdbare "$WORK/held-bare.json" --argjson bareidle "$BARE_IDLE_KIB" --argjson bareheld "$BARE_HELD_KIB" \
    --argjson idlepss "$IDLE_PSS" --argjson heldpss "$HELD_PSS" --argjson bareidlepss "$BARE_IDLE_PSS" --argjson bareheldpss "$BARE_HELD_PSS" '
    def r(n): (. * pow(10; n) | round) / pow(10; n);
    def cpu_per(a; b; o): ((b - a) / $tck) / o.answers * 1e6;
    def us(o; p): o.latencyPercentiles[p] * 1e6 | r(1);
    def bad(o): ([o.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0)
                + ([o.errorDistribution | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0);
    (cpu_per($cl0; $cl1; $g1[0])) as $cpu_long | (cpu_per($cs0; $cs1; $gs[0])) as $cpu_short |
    (($cpu_long - $cpu_short) / ($chunks - 3)) as $per_chunk |
    (((cpu_per($bl0; $bl1; $b1[0])) - (cpu_per($bs0; $bs1; $bs[0]))) / ($chunks - 3)) as $floor_per_chunk |
    ($g1[0].ttfb_p50_us - $d1[0].ttfb_p50_us) as $added_ttfb |
    (if $hold[0].opened == $held then (($heldkib - $idle) / $held) else null end) as $per_stream |
    (if $holdbare[0].opened == $held and $bareheld > 0 then (($bareheld - $bareidle) / $held) else null end) as $bare_per_stream |
    (if $hold[0].opened == $held then (($heldpss - $idlepss) / $held | r(1)) else null end) as $pss_per_stream |
    (if $holdbare[0].opened == $held and $bareheldpss > 0 then (($bareheldpss - $bareidlepss) / $held | r(1)) else null end) as $bare_pss_per_stream |
    {
        settings: {chunks: $chunks, connections: $conns, held_streams: $held},
        fast: {
            c1: {direct: $d1[0], bare: $b1[0], gateway: $g1[0]},
            "c\($conns)": {direct: $d16[0], bare: $b16[0], gateway: $g16[0]},
            gateway_short_c1: $gs[0],
            short_c1: {direct: $ds[0], bare: $bs[0], gateway: $gs[0]},
            added_ttfb_p50_us_short_c1: ($gs[0].ttfb_p50_us - $ds[0].ttfb_p50_us | r(1)),
            floor_added_ttfb_p50_us_short_c1: ($bs[0].ttfb_p50_us - $ds[0].ttfb_p50_us | r(1)),
            added_ttfb_p50_us_c1: ($added_ttfb | r(1)),
            floor_added_ttfb_p50_us_c1: ($b1[0].ttfb_p50_us - $d1[0].ttfb_p50_us | r(1)),
            gateway_vs_floor_rps: {c1: ($g1[0].rps / $b1[0].rps | r(3)), "c\($conns)": ($g16[0].rps / $b16[0].rps | r(3))},
            gateway_cpu_us_per_stream: {long: ($cpu_long | r(1)), short: ($cpu_short | r(1))},
            gateway_cpu_us_per_chunk: ($per_chunk | r(2)),
            floor_cpu_us_per_chunk: ($floor_per_chunk | r(2)),
            incomplete_or_errors: ([$d1[0], $b1[0], $g1[0], $d16[0], $b16[0], $g16[0], $gs[0], $bs[0], $ds[0]] | map(.incomplete + .errors) | add)
        },
        held: {
            load: $hold[0],
            rss_kib: {idle: $idle, held: $heldkib, after_others: $heldafter, peak: $peak},
            rss_kib_per_stream: (if $per_stream == null then null else ($per_stream | r(1)) end),
            pss_kib: {idle: $idlepss, held: $heldpss},
            pss_kib_per_stream: $pss_per_stream,
            floor: {load: $holdbare[0], rss_kib: {idle: $bareidle, held: $bareheld},
                rss_kib_per_stream: (if $bare_per_stream == null then null else ($bare_per_stream | r(1)) end),
                pss_kib_per_stream: $bare_pss_per_stream},
            others_before: {p50_us: us($ob[0]; "p50"), p99_us: us($ob[0]; "p99"), rps: ($ob[0].summary.requestsPerSec | round), not_ok: bad($ob[0])},
            others_held: {p50_us: us($oh[0]; "p50"), p99_us: us($oh[0]; "p99"), rps: ($oh[0].summary.requestsPerSec | round), not_ok: bad($oh[0])}
        },
        targets: {
            added_ttfb_p50_us_c1: {target: "<= 100", value: ($added_ttfb | r(1)), pass: ($added_ttfb <= 100)},
            gateway_cpu_us_per_chunk: {target: "<= 2", value: ($per_chunk | r(2)), pass: ($per_chunk <= 2)},
            rss_kib_per_held_stream: {target: "<= 40", value: (if $per_stream == null then null else ($per_stream | r(1)) end),
                                      pass: ($per_stream != null and $per_stream <= 40)},
            held_streams_completed: {target: "all", value: $hold[0].completed, pass: ($hold[0].completed == $held)}
        }
    }' >"$RESULTS_DIR/streams.json"

jq -r '
    def pf(b): if b then "PASS" else "FAIL" end;
    .fast as $f | .held as $h | .targets as $t | .settings.connections as $c |
    "Streams: \(.settings.chunks)-chunk answers as fast as the mock sends them; \(.settings.held_streams) slow streams held at once",
    "",
    "| \(.settings.chunks)-chunk streams | Direct | Floor (bare proxy) | Gateway |",
    "|---|---:|---:|---:|",
    "| TTFB p50, 1 conn (µs) | \($f.c1.direct.ttfb_p50_us) | \($f.c1.bare.ttfb_p50_us) | \($f.c1.gateway.ttfb_p50_us) |",
    "| TTFB p99, 1 conn (µs) | \($f.c1.direct.ttfb_p99_us) | \($f.c1.bare.ttfb_p99_us) | \($f.c1.gateway.ttfb_p99_us) |",
    "| Whole stream p50, 1 conn (µs) | \($f.c1.direct.total_p50_us) | \($f.c1.bare.total_p50_us) | \($f.c1.gateway.total_p50_us) |",
    "| Streams/s, 1 conn | \($f.c1.direct.rps) | \($f.c1.bare.rps) | \($f.c1.gateway.rps) |",
    "| Streams/s, \($c) conns | \($f["c\($c)"].direct.rps) | \($f["c\($c)"].bare.rps) | \($f["c\($c)"].gateway.rps) |",
    "",
    "Added TTFB at 1 conn: gateway +\($f.added_ttfb_p50_us_c1) µs (floor +\($f.floor_added_ttfb_p50_us_c1) µs), target ≤ 100 µs: \(pf($t.added_ttfb_p50_us_c1.pass)).",
    "With 3-chunk streams (no idle wait of the mock between answers): TTFB p50 direct \($f.short_c1.direct.ttfb_p50_us) µs, floor \($f.short_c1.bare.ttfb_p50_us) µs, gateway \($f.short_c1.gateway.ttfb_p50_us) µs: added +\($f.added_ttfb_p50_us_short_c1) µs (floor +\($f.floor_added_ttfb_p50_us_short_c1) µs).",
    "Gateway CPU per stream: \($f.gateway_cpu_us_per_stream.long) µs (\(.settings.chunks) chunks) vs \($f.gateway_cpu_us_per_stream.short) µs (3 chunks): \($f.gateway_cpu_us_per_chunk) µs per relayed chunk, target ≤ 2 µs: \(pf($t.gateway_cpu_us_per_chunk.pass)). The bare proxy, measured the same way: \($f.floor_cpu_us_per_chunk) µs per relayed chunk.",
    "Incomplete answers or errors in the fast phases: \($f.incomplete_or_errors).",
    "",
    "Held: \($h.load.opened) of \(.settings.held_streams) opened in \($h.load.open_all_s // "–") s, \($h.load.completed) completed, \($h.load.errors) errors; longest pause inside one stream \($h.load.max_frame_gap_ms) ms (p99 \($h.load.p99_frame_gap_ms) ms; chunks every 500 ms).",
    "Gateway RSS \($h.rss_kib.idle) KiB idle -> \($h.rss_kib.held) KiB with the streams held: \($h.rss_kib_per_stream // "–") KiB per stream, target ≤ 40 KiB: \(pf($t.rss_kib_per_held_stream.pass)). Peak \($h.rss_kib.peak) KiB. The bare proxy holding the same streams: \($h.floor.rss_kib_per_stream // "–") KiB per stream.",
    "Proportional set size (a page shared between mappings counted once): the gateway \($h.pss_kib_per_stream // "–") KiB per held stream, the bare proxy \($h.floor.pss_kib_per_stream // "–") KiB.",
    "Other clients (1 conn, small requests): p50 \($h.others_before.p50_us) µs / p99 \($h.others_before.p99_us) µs before, p50 \($h.others_held.p50_us) µs / p99 \($h.others_held.p99_us) µs while held; non-200 or errors while held: \($h.others_held.not_ok)."
' "$RESULTS_DIR/streams.json" | tee "$RESULTS_DIR/streams.md"
