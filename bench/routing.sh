#!/usr/bin/env bash
# Routing benchmark: three providers on mock upstreams, the second of which
# answers 429 (retry-after: 1) to every other request. The same load runs
# twice through one gateway, first with the quota_aware strategy, then with
# round_robin (switched live with PATCH /v1/status/routing), and the script
# reports what the client saw (must be 0 errors) and how many requests each
# upstream received. It also measures throughput direct to one mock vs
# through the gateway on the route, the routing overhead check.
#
#     bench/routing.sh            (bench/run.sh calls it at the end)
#
# Tunables: BENCH_ROUTING_DURATION (5s), BENCH_CONNECTIONS (16),
# BENCH_SKIP_BUILD=1 (reuse binaries). Writes bench/results/routing.json and
# routing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${BENCH_ROUTING_DURATION:-5s}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
RESULTS_DIR=$ROOT/bench/results
WORK=$(mktemp -d "${TMPDIR:-/tmp}/freellm-routing.XXXXXX")

source "$ROOT/bench/lib.sh"
bench_traps

ensure_tools
build_dist freellm-provider-openai-compatible
dist_outputs
COMPONENT=$ROOT/target/wasm32-wasip2/wasm/freellm_provider_openai_compatible.wasm
require_files "$GATEWAY_BIN" "$MOCK_BIN" "$COMPONENT"



# Mocks: first (healthy), limited (429 every other request), third (healthy).
declare -A MOCK_PORT
port=18181
for name in first limited third; do
    port=$(free_port "$port")
    MOCK_PORT[$name]=$port
    extra=()
    [[ $name == limited ]] && extra=(--rate-limit-every 2)
    "$MOCK_BIN" --port "$port" --threads 1 "${extra[@]}" >"$WORK/mock-$name.log" 2>&1 &
    track $!
    port=$((port + 1))
done
for name in first limited third; do
    wait_http_200 "http://127.0.0.1:${MOCK_PORT[$name]}/stats" || die "mock $name did not start"
done

GATEWAY_PORT=$(free_port 18190)
{
    for name in first limited third; do
        printf '[providers.%s]\ncomponent = "%s"\n[providers.%s.settings]\n' "$name" "$COMPONENT" "$name"
        printf 'base_url = "http://127.0.0.1:%s/v1"\nauth = "none"\nmodels = ["m"]\nprivacy = "local"\n\n' "${MOCK_PORT[$name]}"
    done
    printf '[routes.bench]\ntargets = ["first", "limited", "third"]\n'
} >"$WORK/plugins.toml"
mkdir -p "$WORK/data"
env PORT="$GATEWAY_PORT" FREELLM_DATA_DIR="$WORK/data" LOG_LEVEL=error CACHE_ENABLED=false \
    "$GATEWAY_BIN" serve --config "$WORK/plugins.toml" >"$WORK/gateway.log" 2>&1 &
track $!
wait_http_200 "http://127.0.0.1:$GATEWAY_PORT/healthz" || die "gateway did not start: $(tail -5 "$WORK/gateway.log")"

GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions"
DIRECT_URL="http://127.0.0.1:${MOCK_PORT[first]}/v1/chat/completions"
BODY='{"model":"bench","messages":[{"role":"user","content":"Say hello"}]}'

counts() {
    for name in first limited third; do
        curl -s "http://127.0.0.1:${MOCK_PORT[$name]}/stats"
    done | jq -s '{first: .[0].chat_requests, limited: .[1].chat_requests, limited_429: .[1].rate_limited, third: .[2].chat_requests}'
}

run() {
    local name=$1 url=$2
    oha --no-tui --output-format json --worker-threads 1 -z "$DURATION" -c "$CONNECTIONS" \
        -m POST -T application/json -d "$BODY" "$url" >"$WORK/$name.json"
}

set_strategy() {
    curl -s -X PATCH -H 'content-type: application/json' -d "{\"strategy\":\"$1\"}" \
        "http://127.0.0.1:$GATEWAY_PORT/v1/status/routing" >/dev/null
}

log "direct to one mock, $DURATION, $CONNECTIONS connections"
run direct "$DIRECT_URL"
before=$(counts)

log "quota_aware, $DURATION"
set_strategy quota_aware
run quota "$GATEWAY_URL"
after_quota=$(counts)
sleep 1.2 # let the limited key's 1 s cooldown pass so both runs start equal

log "round_robin, $DURATION"
set_strategy round_robin
run rr "$GATEWAY_URL"
after_rr=$(counts)

mkdir -p "$RESULTS_DIR"
jq -n \
    --slurpfile direct "$WORK/direct.json" --slurpfile quota "$WORK/quota.json" --slurpfile rr "$WORK/rr.json" \
    --argjson before "$before" --argjson after_quota "$after_quota" --argjson after_rr "$after_rr" \
    --arg duration "$DURATION" --argjson conns "$CONNECTIONS" '
    def phase(o): {
        requests: ([o.statusCodeDistribution[]] | add // 0),
        non_200: ([o.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0),
        errors: ([o.errorDistribution | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0),
        rps: (o.summary.requestsPerSec | round)
    };
    def delta(a; b): {first: (b.first - a.first), limited: (b.limited - a.limited),
                      limited_429: (b.limited_429 - a.limited_429), third: (b.third - a.third)};
    (phase($direct[0])) as $d | (phase($quota[0])) as $q | (phase($rr[0])) as $r |
    (delta($before; $after_quota)) as $uq | (delta($after_quota; $after_rr)) as $ur |
    {
        settings: {duration: $duration, connections: $conns, route: ["first", "limited (429 every 2nd)", "third"]},
        direct: $d,
        quota_aware: ($q + {upstream: $uq, limited_share: (if $q.requests > 0 then ($uq.limited / $q.requests) else 0 end)}),
        round_robin: ($r + {upstream: $ur, limited_share: (if $r.requests > 0 then ($ur.limited / $r.requests) else 0 end)}),
        throughput_ratio_quota_aware: (if $d.rps > 0 then ($q.rps / $d.rps) else 0 end),
        client_errors: ($q.non_200 + $q.errors + $r.non_200 + $r.errors)
    }' >"$RESULTS_DIR/routing.json"

jq -r '
    def pct: . * 1000 | round / 10;
    "Routing: route [first, limited (429 to every 2nd request), third], \(.settings.connections) connections, \(.settings.duration) per phase",
    "",
    "| Strategy | Client req/s | Client non-200 / errors | Upstream first | Upstream limited (429s) | Upstream third | Share sent to limited |",
    "|---|---:|---:|---:|---:|---:|---:|",
    "| quota_aware | \(.quota_aware.rps) | \(.quota_aware.non_200) / \(.quota_aware.errors) | \(.quota_aware.upstream.first) | \(.quota_aware.upstream.limited) (\(.quota_aware.upstream.limited_429)) | \(.quota_aware.upstream.third) | \(.quota_aware.limited_share | pct)% |",
    "| round_robin | \(.round_robin.rps) | \(.round_robin.non_200) / \(.round_robin.errors) | \(.round_robin.upstream.first) | \(.round_robin.upstream.limited) (\(.round_robin.upstream.limited_429)) | \(.round_robin.upstream.third) | \(.round_robin.limited_share | pct)% |",
    "",
    "Direct to one mock: \(.direct.rps) req/s; through the gateway (quota_aware route): \(.throughput_ratio_quota_aware | pct)% of direct (target ≥ 50%).",
    "Client errors across both runs: \(.client_errors) (target 0)."
' "$RESULTS_DIR/routing.json" | tee "$RESULTS_DIR/routing.md"
