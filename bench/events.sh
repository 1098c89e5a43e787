#!/usr/bin/env bash
# Event-feed benchmark: does a connected dashboard slow the request path?
#
#     bench/events.sh
#
# One gateway (groq adapter, limits lifted, cache off) in front of the
# dist-profile mock upstream. The same load (oha, 16 connections, 10 s, POST chat
# completions) runs in alternating rounds without and with a `/v1/events`
# subscriber (curl -N, as a dashboard would be: it receives one `request`
# event per answered request). Reports req/s of each phase, the ratio
# (with / without) and PASS when throughput changes by at most 5 %. Writes
# bench/results/events.json and events.md.
#
# Tunables: BENCH_DURATION (10s per phase), BENCH_CONNECTIONS (16),
# BENCH_EVENTS_ROUNDS (2 rounds of without+with), BENCH_OHA_THREADS (1),
# BENCH_MOCK_THREADS (1), BENCH_SKIP_BUILD=1 (reuse existing binaries).
# Uses the tools bench/run.sh installs (oha, jq, curl).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
ROUNDS=${BENCH_EVENTS_ROUNDS:-2}
OHA_THREADS=${BENCH_OHA_THREADS:-1}
MOCK_THREADS=${BENCH_MOCK_THREADS:-1}
TARGET_MAX_CHANGE=0.05
RESULTS_DIR=$ROOT/bench/results

MOCK_PID=""
GATEWAY_PID=""
FEED_PID=""

source "$ROOT/bench/lib.sh"
bench_traps
BODY=$SMALL_BODY

build_all() {
    build_dist freellm-provider-groq
    dist_outputs
    require_files "$GATEWAY_BIN" "$MOCK_BIN" "$GROQ_WASM"
}

start_servers() {
    MOCK_PORT=$(free_port 18181)
    "$MOCK_BIN" --port "$MOCK_PORT" --threads "$MOCK_THREADS" >"$WORK/mock.log" 2>&1 &
    MOCK_PID=$!
    track "$MOCK_PID"
    wait_listening "$MOCK_PID" "$WORK/mock.log" || die "the mock did not start: $(cat "$WORK/mock.log")"

    GATEWAY_PORT=$(free_port $((MOCK_PORT + 1)))
    start_groq_gateway "$MOCK_PORT" "$GATEWAY_PORT"
    GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT"
    local code
    code=$(curl -s -o "$WORK/smoke.json" -w '%{http_code}' -H 'content-type: application/json' -d "$BODY" \
        "$GATEWAY_URL/v1/chat/completions")
    [[ $code == 200 ]] || die "smoke test: $code $(head -c 300 "$WORK/smoke.json")"
    log "gateway on :$GATEWAY_PORT, mock on :$MOCK_PORT"
}

run_oha() {
    local name=$1 duration=$2
    oha --no-tui --output-format json --worker-threads "$OHA_THREADS" -z "$duration" -c "$CONNECTIONS" \
        -m POST -T application/json -d "$BODY" "$GATEWAY_URL/v1/chat/completions" >"$WORK/$name.json"
}

subscribers() {
    curl -s "$GATEWAY_URL/metrics" | awk '/^freellm_event_subscribers / {print $2}'
}

start_feed() {
    curl -sN "$GATEWAY_URL/v1/events" >"$WORK/feed-$1.txt" 2>/dev/null &
    FEED_PID=$!
    track "$FEED_PID"
    for _ in $(seq 100); do
        [[ $(subscribers) == 1 ]] && return 0
        sleep 0.02
    done
    die "the event subscriber did not connect"
}

stop_feed() {
    stop_pid "$FEED_PID"
    FEED_PID=""
    for _ in $(seq 100); do
        [[ $(subscribers) == 0 ]] && return 0
        sleep 0.05
    done
    die "the event subscriber is still counted after it left"
}

main() {
    ensure_tools
    build_all
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/freellm-events-bench.XXXXXX")
    start_servers
    log "warm-up (2 s)"
    run_oha warmup 2s
    for round in $(seq "$ROUNDS"); do
        log "round $round/$ROUNDS: $CONNECTIONS connections, $DURATION, no subscriber"
        run_oha "without-$round" "$DURATION"
        log "round $round/$ROUNDS: $CONNECTIONS connections, $DURATION, one /v1/events subscriber"
        start_feed "$round"
        run_oha "with-$round" "$DURATION"
        sleep 0.5
        stop_feed
        grep -c '^event: request' "$WORK/feed-$round.txt" >"$WORK/events-$round.count" || true
        grep -c '^event: lagged' "$WORK/feed-$round.txt" >"$WORK/lagged-$round.count" || true
    done

    mkdir -p "$RESULTS_DIR"
    local cpu
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo unknown)
    jq -n \
        --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg cpu "$cpu" --argjson cores "$(nproc)" \
        --arg duration "$DURATION" --argjson conns "$CONNECTIONS" --argjson target "$TARGET_MAX_CHANGE" \
        --slurpfile without <(cat "$WORK"/without-*.json) --slurpfile with <(cat "$WORK"/with-*.json) \
        --argjson events "$(cat "$WORK"/events-*.count | jq -s 'add')" \
        --argjson lagged "$(cat "$WORK"/lagged-*.count | jq -s 'add')" '
        def rps(o): o.summary.requestsPerSec;
        def non200(o): [o.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0;
        def mean(a): (a | add) / (a | length);
        ([$without[] | rps(.)]) as $a | ([$with[] | rps(.)]) as $b |
        (mean($b) / mean($a)) as $ratio |
        {
            machine: {date: $date, cpu: $cpu, cores: $cores},
            settings: {duration: $duration, connections: $conns, rounds: ($a | length)},
            without_subscriber_rps: ($a | map(round)),
            with_subscriber_rps: ($b | map(round)),
            mean_without_rps: (mean($a) | round),
            mean_with_rps: (mean($b) | round),
            ratio: ($ratio * 1000 | round / 1000),
            request_events_received: $events,
            lagged_markers: $lagged,
            requests_answered_with_subscriber: ([$with[] | .statusCodeDistribution["200"] // 0] | add),
            non_200: ([$without[], $with[] | non200(.)] | add),
            target: ("|ratio - 1| <= " + ($target | tostring)),
            pass: ((($ratio - 1) | fabs) <= $target)
        }' >"$RESULTS_DIR/events.json"
    jq -r '
        "Event feed benchmark \(.machine.date), \(.machine.cores) cores (\(.machine.cpu)), \(.settings.connections) connections, \(.settings.duration) per phase, \(.settings.rounds) rounds",
        "",
        "| Phase | req/s per round | mean req/s |",
        "|---|---|---:|",
        "| no subscriber | \(.without_subscriber_rps | map(tostring) | join(", ")) | \(.mean_without_rps) |",
        "| one /v1/events subscriber | \(.with_subscriber_rps | map(tostring) | join(", ")) | \(.mean_with_rps) |",
        "",
        "Ratio with/without: \(.ratio) (target \(.target)): \(if .pass then "PASS" else "FAIL" end).",
        "The subscriber received \(.request_events_received) request events for \(.requests_answered_with_subscriber) answered requests (\(.lagged_markers) lagged markers); non-200 answers: \(.non_200)."
    ' "$RESULTS_DIR/events.json" | tee "$RESULTS_DIR/events.md"
}

main "$@"
