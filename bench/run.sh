#!/usr/bin/env bash
# FreeLLM benchmark: one command, run from the repository root.
#
#     bench/run.sh
#
# Measures the gateway against a mock upstream on this machine, in one run:
#   - cold start: spawn -> first 200 on /healthz, warm compiled-component cache
#   - idle RSS after start-up and a few requests
#   - load, 16 connections and 1 connection, both direct to the mock and
#     through the gateway, so every figure has a same-run baseline, and
#     through a bare proxy (the floor any proxy pays here)
# then prints a markdown table with PASS/FAIL per target and writes
# bench/results/latest.json (and latest.md); then runs bench/routing.sh,
# bench/swap.sh, bench/prompts.sh (prompt sizes), bench/streams.sh
# (500-chunk streams, 1,700 held slow streams) and bench/budget.sh (the
# floor with known work per request). It is a report, not a
# test: it exits 0 whatever the figures, and non-zero only when it cannot
# measure.
#
# Tunables (environment): BENCH_DURATION (10s per load phase),
# BENCH_CONNECTIONS (16), BENCH_COLD_RUNS (5), BENCH_OHA_THREADS (1),
# BENCH_MOCK_THREADS (1), BENCH_MOCK_PORT (18081), BENCH_GATEWAY_PORT (18080),
# BENCH_SKIP_BUILD=1 (reuse existing binaries), BENCH_GATEWAY_BIN (another
# freellm binary to measure, e.g. an older build for comparison),
# BENCH_GROQ_WASM (another groq component, e.g. the one built with that
# older tree, which targets an older contract),
# BENCH_ONLY=main (the baseline table only: for A/B runs of two binaries;
# BENCH_ONLY=state: the baseline and the shared-state backend),
# BENCH_STATE=redis (also measure the shared-state backend: a redis-server
# on loopback, the embedded backend as its same-run baseline, and two
# instances against one Redis; see measure_state).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
COLD_RUNS=${BENCH_COLD_RUNS:-5}
# The load generator and the mock each get one worker thread by default: on a
# small machine every thread they do not use is left to the gateway.
OHA_THREADS=${BENCH_OHA_THREADS:-1}
MOCK_THREADS=${BENCH_MOCK_THREADS:-1}

# Targets (see docs/benchmarks.md).
TARGET_THROUGHPUT_RATIO=0.50 # gateway req/s >= 50% of direct, 16 connections
TARGET_ADDED_P50_US=60       # added latency, 1 connection
TARGET_ADDED_P99_US=250
TARGET_COLD_START_MS=150
TARGET_IDLE_RSS_MIB=32

RESULTS_DIR=$ROOT/bench/results
MOCK_PID=""
GATEWAY_PID=""
BARE_PID=""

source "$ROOT/bench/lib.sh"
bench_traps
BODY=$SMALL_BODY

# ---------------------------------------------------------------- tools

build_all() {
    build_dist freellm-provider-groq freellm-provider-ollama freellm-provider-openai-compatible
    dist_outputs
    require_files "$GATEWAY_BIN" "$MOCK_BIN" "$COLDSTART_BIN" "$BARE_BIN" "$GROQ_WASM"
}

# ---------------------------------------------------------------- servers

start_mock() {
    MOCK_PORT=$(free_port "${BENCH_MOCK_PORT:-18081}")
    "$MOCK_BIN" --port "$MOCK_PORT" --threads "$MOCK_THREADS" >"$WORK/mock.log" 2>&1 &
    MOCK_PID=$!
    track "$MOCK_PID"
    wait_listening "$MOCK_PID" "$WORK/mock.log" || die "the mock did not start: $(cat "$WORK/mock.log")"
    log "mock upstream on 127.0.0.1:$MOCK_PORT ($MOCK_THREADS worker thread(s))"
}

# The gateway's whole configuration: a plugins.toml with the groq adapter
# only, pointed at the mock, state and compiled-component cache in $WORK.
write_gateway_config() {
    GATEWAY_PORT=$(free_port "${BENCH_GATEWAY_PORT:-18080}")
    [[ $GATEWAY_PORT != "$MOCK_PORT" ]] || GATEWAY_PORT=$(free_port $((MOCK_PORT + 1)))
    mkdir -p "$WORK/data" "$WORK/cache"
    # The mock is not Groq: lift Groq's declared free-tier limits (30 rpm)
    # so the gateway's own quota windows do not refuse the load.
    printf '[providers.groq]\ncomponent = "%s"\nlimits = { rpm = 0, rpd = 0, tpm = 0, tpd = 0 }\n' "$GROQ_WASM" >"$WORK/plugins.toml"
    GATEWAY_ENV=(
        PORT="$GATEWAY_PORT"
        HOST=127.0.0.1
        FREELLM_DATA_DIR="$WORK/data"
        FREELLM_CACHE_DIR="$WORK/cache"
        GROQ_API_KEY=bench
        GROQ_BASE_URL="http://127.0.0.1:$MOCK_PORT/v1"
        LOG_LEVEL=warn
        # Every load request is identical: without this the cache would
        # answer them all and the routing path would not be measured.
        CACHE_ENABLED=false
    )
    GATEWAY_CMD=("$GATEWAY_BIN" serve --config "$WORK/plugins.toml")
}

start_gateway() {
    env "${GATEWAY_ENV[@]}" "${GATEWAY_CMD[@]}" </dev/null >>"$WORK/gateway.log" 2>&1 &
    GATEWAY_PID=$!
    track "$GATEWAY_PID"
    # Generous: the first start compiles the component (seconds, not ms).
    if ! wait_http_200 "http://127.0.0.1:$GATEWAY_PORT/healthz" 180 "$GATEWAY_PID"; then
        tail -n 30 "$WORK/gateway.log" >&2 || true
        die "the gateway did not become healthy"
    fi
}

stop_gateway() {
    stop_pid "$GATEWAY_PID"
    GATEWAY_PID=""
}

# ---------------------------------------------------------------- measurements

# One start with an empty cache compiles the component and stores it; the
# timed starts after it then measure what a restart costs in production.
warm_component_cache() {
    log "warming the compiled-component cache"
    start_gateway
    stop_gateway
    [[ -n $(ls -A "$WORK/cache") ]] || log "warning: the cache directory is still empty after a start"
}

measure_cold_start() {
    log "cold start: $COLD_RUNS runs, spawn -> first 200 on /healthz (warm cache)"
    # The helper polls with a raw connect() every 5 ms: forking curl per poll
    # would cost as much as the interval being measured.
    env "${GATEWAY_ENV[@]}" "$COLDSTART_BIN" --port "$GATEWAY_PORT" --path /healthz \
        --runs "$COLD_RUNS" --poll-ms 5 --timeout-ms 30000 -- "${GATEWAY_CMD[@]}" \
        2>>"$WORK/gateway.log" >"$WORK/coldstart.json" ||
        {
            tail -n 30 "$WORK/gateway.log" >&2
            die "cold-start measurement failed"
        }
    log "cold start: $(jq -c .runs_ms "$WORK/coldstart.json") ms"
}

# A chat request through the gateway must succeed before anything is timed:
# a fast stream of 4xx/5xx would make meaningless figures.
smoke_test() {
    local url=$1 out=$WORK/smoke.json code
    code=$(curl -s -o "$out" -w '%{http_code}' -H 'content-type: application/json' -d "$BODY" "$url")
    if [[ $code != 200 ]] || ! grep -q 'chat.completion' "$out"; then
        echo "POST $url -> $code: $(head -c 500 "$out")" >&2
        tail -n 30 "$WORK/gateway.log" >&2 || true
        die "smoke test failed"
    fi
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# Idle RSS: after start-up and a few requests (pools, lazy statics and the
# adapter instance are then in place), then a pause for things to settle.
measure_idle_rss() {
    for _ in $(seq 20); do
        curl -s -o /dev/null -H 'content-type: application/json' -d "$BODY" "$GATEWAY_URL"
    done
    sleep 1
    IDLE_RSS_KIB=$(rss_kib "$GATEWAY_PID")
    log "idle RSS: $IDLE_RSS_KIB KiB"
}

# The gateway's own split of its time, from /metrics (sums since start):
# its own time per request (`gateway_overhead`: the request's time minus the
# upstream waits), the upstream waits, and the adapter calls inside the own
# time. The difference of two snapshots covers one load phase.
metrics_snapshot() {
    curl -s "http://127.0.0.1:$GATEWAY_PORT/metrics" | awk '
        /^freellm_gateway_overhead_seconds_sum / { own = $2 }
        /^freellm_gateway_overhead_seconds_count / { requests = $2 }
        /^freellm_upstream_latency_seconds_sum\{/ { upstream += $2 }
        /^freellm_adapter_busy_seconds_total\{/ { adapter += $2 }
        /^freellm_adapter_calls_total\{/ { calls += $2 }
        END { printf "{\"own_s\":%.9f,\"requests\":%d,\"upstream_s\":%.9f,\"adapter_s\":%.9f,\"adapter_calls\":%d}\n",
                     own, requests, upstream, adapter, calls }'
}

# oha run -> $WORK/<name>.json. Keep-alive connections, POST with the body.
run_oha() {
    local name=$1 url=$2 conns=$3 duration=$4
    shift 4
    oha --no-tui --output-format json --worker-threads "$OHA_THREADS" \
        -z "$duration" -c "$conns" -m POST -T application/json -d "$BODY" "$@" \
        "$url" >"$WORK/$name.json"
}

# Two more gateways, one connection each, against the open, cache-less
# gateway's 1-connection figures from the same run:
#   - cache on: every request after the first is a hit;
#   - credentials on (master key + identifier limit): auth + limits cost.
measure_extras() {
    local base_env=("${GATEWAY_ENV[@]}")
    log "cache hits: 1 connection, $DURATION"
    GATEWAY_ENV=("${base_env[@]}" CACHE_ENABLED=true)
    start_gateway
    smoke_test "$GATEWAY_URL"
    run_oha cache-c1 "$GATEWAY_URL" 1 "$DURATION"
    stop_gateway
    log "auth + identifier limits: 1 connection, $DURATION"
    GATEWAY_ENV=("${base_env[@]}" FREELLM_API_KEY=bench-master-key FREELLM_IDENTIFIER_LIMIT=1000000/60000)
    start_gateway
    run_oha auth-c1 "$GATEWAY_URL" 1 "$DURATION" -H "Authorization: Bearer bench-master-key"
    stop_gateway
    GATEWAY_ENV=("${base_env[@]}")
    jq -n --slurpfile d "$WORK/direct-c1.json" --slurpfile g "$WORK/gateway-c1.json" \
        --slurpfile c "$WORK/cache-c1.json" --slurpfile a "$WORK/auth-c1.json" '
        def us(o; p): (o.latencyPercentiles[p] * 1e6 * 10 | round) / 10;
        def ok(o): ([o.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0) == 0;
        {
            cache_hit_p50_us: us($c[0]; "p50"), cache_hit_p99_us: us($c[0]; "p99"),
            direct_p50_us: us($d[0]; "p50"),
            cache_hit_added_p50_us: ((us($c[0]; "p50") - us($d[0]; "p50")) * 10 | round / 10),
            open_gateway_p50_us: us($g[0]; "p50"), auth_gateway_p50_us: us($a[0]; "p50"),
            auth_added_p50_us: ((us($a[0]; "p50") - us($g[0]; "p50")) * 10 | round / 10),
            all_200: (ok($c[0]) and ok($a[0]))
        }' >"$RESULTS_DIR/extras.json"
    jq -r '
        "Cache hit, 1 conn: p50 \(.cache_hit_p50_us) µs (direct to the mock \(.direct_p50_us) µs: +\(.cache_hit_added_p50_us) µs; target ≤ 50 µs of server time).",
        "Auth + identifier limits, 1 conn: p50 \(.auth_gateway_p50_us) µs vs \(.open_gateway_p50_us) µs open: +\(.auth_added_p50_us) µs (target ≤ 10 µs). All 200: \(.all_200)."
    ' "$RESULTS_DIR/extras.json" | tee "$RESULTS_DIR/extras.md"
}

measure_load() {
    # Short untimed runs first: connection pools, allocator and caches warm up
    # before anything counts.
    log "warm-up (1 s each)"
    run_oha warmup-direct "$DIRECT_URL" "$CONNECTIONS" 1s
    run_oha warmup-gateway "$GATEWAY_URL" "$CONNECTIONS" 1s

    log "load: $CONNECTIONS connections, $DURATION, direct to the mock"
    run_oha direct-c16 "$DIRECT_URL" "$CONNECTIONS" "$DURATION"
    log "load: $CONNECTIONS connections, $DURATION, through the gateway"
    run_oha gateway-c16 "$GATEWAY_URL" "$CONNECTIONS" "$DURATION"
    log "load: 1 connection, $DURATION, direct to the mock"
    run_oha direct-c1 "$DIRECT_URL" 1 "$DURATION"
    log "load: 1 connection, $DURATION, through the gateway"
    metrics_snapshot >"$WORK/metrics-before-c1.json"
    run_oha gateway-c1 "$GATEWAY_URL" 1 "$DURATION"
    metrics_snapshot >"$WORK/metrics-after-c1.json"

    AFTER_LOAD_RSS_KIB=$(rss_kib "$GATEWAY_PID")
    PEAK_RSS_KIB=$(hwm_kib "$GATEWAY_PID")
}

# The floor: freellm-bare-proxy makes the same two HTTP exchanges as the
# gateway (client -> proxy -> mock) on the same hyper stack and nothing else.
# Measured in the same run, it says how much of the gap to the direct
# figures any proxy pays on this machine, and how much is the gateway's own.
measure_floor() {
    local port
    port=$(free_port $((GATEWAY_PORT + 1)))
    [[ $port != "$MOCK_PORT" ]] || port=$(free_port $((MOCK_PORT + 1)))
    "$BARE_BIN" --port "$port" --upstream "http://127.0.0.1:$MOCK_PORT" >"$WORK/bare.log" 2>&1 &
    BARE_PID=$!
    track "$BARE_PID"
    wait_listening "$BARE_PID" "$WORK/bare.log" || die "the bare proxy did not start: $(cat "$WORK/bare.log")"
    local url="http://127.0.0.1:$port/v1/chat/completions"
    smoke_test "$url"
    log "floor: bare proxy, $CONNECTIONS connections and 1 connection, $DURATION each"
    run_oha warmup-bare "$url" "$CONNECTIONS" 1s
    run_oha bare-c16 "$url" "$CONNECTIONS" "$DURATION"
    run_oha bare-c1 "$url" 1 "$DURATION"
    stop_pid "$BARE_PID"
    BARE_PID=""
}

# ---------------------------------------------------------------- report

machine_json() {
    local cpu
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
    jq -n \
        --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        --arg cpu "${cpu:-unknown}" \
        --argjson cores "$(nproc)" \
        --arg kernel "$(uname -r)" \
        --arg rustc "$(rustc --version)" \
        --arg oha "$(oha --version 2>/dev/null | head -n1)" \
        --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo none)" \
        '{date: $date, cpu: $cpu, cores: $cores, kernel: $kernel, rustc: $rustc, load_generator: $oha, commit: $commit}'
}

# All arithmetic happens here, in one jq program, from the raw oha outputs.
write_results() {
    mkdir -p "$RESULTS_DIR"
    jq -n \
        --argjson machine "$(machine_json)" \
        --slurpfile dc16 "$WORK/direct-c16.json" \
        --slurpfile gc16 "$WORK/gateway-c16.json" \
        --slurpfile dc1 "$WORK/direct-c1.json" \
        --slurpfile gc1 "$WORK/gateway-c1.json" \
        --slurpfile bc16 "$WORK/bare-c16.json" \
        --slurpfile bc1 "$WORK/bare-c1.json" \
        --slurpfile cold "$WORK/coldstart.json" \
        --slurpfile m0 "$WORK/metrics-before-c1.json" \
        --slurpfile m1 "$WORK/metrics-after-c1.json" \
        --argjson idle_kib "$IDLE_RSS_KIB" \
        --argjson after_kib "$AFTER_LOAD_RSS_KIB" \
        --argjson peak_kib "$PEAK_RSS_KIB" \
        --arg duration "$DURATION" \
        --argjson conns "$CONNECTIONS" \
        --argjson oha_threads "$OHA_THREADS" \
        --argjson mock_threads "$MOCK_THREADS" \
        --argjson t_ratio "$TARGET_THROUGHPUT_RATIO" \
        --argjson t_p50 "$TARGET_ADDED_P50_US" \
        --argjson t_p99 "$TARGET_ADDED_P99_US" \
        --argjson t_cold "$TARGET_COLD_START_MS" \
        --argjson t_rss "$TARGET_IDLE_RSS_MIB" \
        '
        def r(n): (. * pow(10; n) | round) / pow(10; n);
        def phase(o): {
            requests: ([o.statusCodeDistribution[]] | add // 0),
            non_200: ([o.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0),
            errors: ([o.errorDistribution | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0),
            rps: (o.summary.requestsPerSec | r(0)),
            p50_us: (o.latencyPercentiles.p50 * 1e6 | r(1)),
            p99_us: (o.latencyPercentiles.p99 * 1e6 | r(1)),
            p999_us: (o.latencyPercentiles["p99.9"] * 1e6 | r(1))
        };
        (phase($dc16[0])) as $d16 | (phase($gc16[0])) as $g16 |
        (phase($dc1[0])) as $d1 | (phase($gc1[0])) as $g1 |
        (phase($bc16[0])) as $b16 | (phase($bc1[0])) as $b1 |
        ($g16.rps / $d16.rps) as $ratio |
        ($g1.p50_us - $d1.p50_us) as $add50 |
        ($g1.p99_us - $d1.p99_us) as $add99 |
        ($idle_kib / 1024) as $idle_mib |
        ($m1[0].requests - $m0[0].requests) as $split_n |
        def per_request(key): if $split_n > 0 then (($m1[0][key] - $m0[0][key]) / $split_n * 1e6 | r(1)) else null end;
        {
            machine: $machine,
            settings: {duration: $duration, connections: $conns, oha_worker_threads: $oha_threads,
                       mock_worker_threads: $mock_threads, cold_start_runs: ($cold[0].runs_ms | length),
                       cold_start_poll_ms: $cold[0].poll_ms},
            load: {
                direct_c16: $d16, gateway_c16: $g16,
                direct_c1: $d1, gateway_c1: $g1,
                bare_proxy_c16: $b16, bare_proxy_c1: $b1
            },
            derived: {
                throughput_ratio_c16: ($ratio | r(3)),
                added_p50_us_c16: ($g16.p50_us - $d16.p50_us | r(1)),
                added_p99_us_c16: ($g16.p99_us - $d16.p99_us | r(1)),
                added_p50_us_c1: ($add50 | r(1)),
                added_p99_us_c1: ($add99 | r(1)),
                floor_ratio_c16: ($b16.rps / $d16.rps | r(3)),
                floor_added_p50_us_c1: ($b1.p50_us - $d1.p50_us | r(1)),
                floor_added_p99_us_c1: ($b1.p99_us - $d1.p99_us | r(1)),
                gateway_vs_floor_c16: ($g16.rps / $b16.rps | r(3))
            },
            split_c1: {
                requests: $split_n,
                gateway_own_us: per_request("own_s"),
                adapter_calls_us: per_request("adapter_s"),
                upstream_wait_us: per_request("upstream_s")
            },
            cold_start_ms: $cold[0],
            rss_mib: {
                idle: ($idle_mib | r(1)),
                after_load: ($after_kib / 1024 | r(1)),
                peak: ($peak_kib / 1024 | r(1))
            },
            targets: {
                throughput_ratio_c16: {target: (">= " + ($t_ratio | tostring)), value: ($ratio | r(3)), pass: ($ratio >= $t_ratio)},
                added_p50_us_c1: {target: ("<= " + ($t_p50 | tostring)), value: ($add50 | r(1)), pass: ($add50 <= $t_p50)},
                added_p99_us_c1: {target: ("<= " + ($t_p99 | tostring)), value: ($add99 | r(1)), pass: ($add99 <= $t_p99)},
                cold_start_median_ms: {target: ("<= " + ($t_cold | tostring)), value: $cold[0].median_ms, pass: ($cold[0].median_ms <= $t_cold)},
                idle_rss_mib: {target: ("<= " + ($t_rss | tostring)), value: ($idle_mib | r(1)), pass: ($idle_mib <= $t_rss)}
            }
        }' >"$RESULTS_DIR/latest.json"
}

print_table() {
    jq -r '
        def pf(b): if b then "PASS" else "FAIL" end;
        def n: tostring;
        .load as $l | .derived as $d | .targets as $t |
        "Benchmark \(.machine.date), \(.machine.cores) cores (\(.machine.cpu)), \(.settings.duration) per load phase",
        "",
        "| Measure | Direct (mock) | Through gateway | Gateway vs direct | Target | Result |",
        "|---|---:|---:|---:|---|---|",
        "| Throughput, \(.settings.connections) conns (req/s) | \($l.direct_c16.rps|n) | \($l.gateway_c16.rps|n) | \($d.throughput_ratio_c16 * 100 | round)% | ≥ 50% | \(pf($t.throughput_ratio_c16.pass)) |",
        "| p50, \(.settings.connections) conns (µs) | \($l.direct_c16.p50_us|n) | \($l.gateway_c16.p50_us|n) | +\($d.added_p50_us_c16|n) µs | – | |",
        "| p99, \(.settings.connections) conns (µs) | \($l.direct_c16.p99_us|n) | \($l.gateway_c16.p99_us|n) | +\($d.added_p99_us_c16|n) µs | – | |",
        "| p50, 1 conn (µs) | \($l.direct_c1.p50_us|n) | \($l.gateway_c1.p50_us|n) | +\($d.added_p50_us_c1|n) µs | ≤ +60 µs | \(pf($t.added_p50_us_c1.pass)) |",
        "| p99, 1 conn (µs) | \($l.direct_c1.p99_us|n) | \($l.gateway_c1.p99_us|n) | +\($d.added_p99_us_c1|n) µs | ≤ +250 µs | \(pf($t.added_p99_us_c1.pass)) |",
        "| Req/s, 1 conn | \($l.direct_c1.rps|n) | \($l.gateway_c1.rps|n) | \($l.gateway_c1.rps / $l.direct_c1.rps * 100 | round)% | – | |",
        "| Cold start, median of \(.settings.cold_start_runs) (ms) | – | \(.cold_start_ms.median_ms|n) | – | ≤ 150 ms | \(pf($t.cold_start_median_ms.pass)) |",
        "| Idle RSS (MiB) | – | \(.rss_mib.idle|n) | – | ≤ 32 MiB | \(pf($t.idle_rss_mib.pass)) |",
        "",
        "Floor, same run: a bare hyper proxy (the same two HTTP exchanges, nothing else) reaches \($l.bare_proxy_c16.rps) req/s = \($d.floor_ratio_c16 * 100 | round)% of direct at \(.settings.connections) connections and adds +\($d.floor_added_p50_us_c1) µs p50 / +\($d.floor_added_p99_us_c1) µs p99 at 1 connection; the gateway reaches \($d.gateway_vs_floor_c16 * 100 | round)% of the bare proxy.",
        "",
        (.split_c1 as $s | if $s.requests > 0
         then "Inside the gateway at 1 connection (its /metrics, per request): \($s.gateway_own_us) µs of its own work, of which \($s.adapter_calls_us) µs in the two adapter calls, and \($s.upstream_wait_us) µs waiting on the mock; the rest of the +\($d.added_p50_us_c1) µs is receiving, answering and the hand-offs between processes.\n"
         else empty end),
        "Cold-start runs (ms): \(.cold_start_ms.runs_ms | map(tostring) | join(", ")). RSS after load: \(.rss_mib.after_load) MiB, peak: \(.rss_mib.peak) MiB.",
        (if ([$l[] | .non_200 + .errors] | add) > 0
         then "WARNING: non-200 answers or errors during load: " + ([$l | to_entries[] | "\(.key): \(.value.non_200) non-200, \(.value.errors) errors"] | join("; "))
         else "Every timed request answered 200." end)
    ' "$RESULTS_DIR/latest.json" | tee "$RESULTS_DIR/latest.md"
    echo
    echo "Results: bench/results/latest.json, bench/results/latest.md"
}

# ---------------------------------------------------------------- main

# The shared-state backend (BENCH_STATE=redis): one connection each, the
# same configuration on the embedded store and on a redis-server on
# loopback. Every request runs the shared parts: the master key with an
# identifier limit (one script) and a provider key with declared limits
# (one script to reserve; the token settlements, estimate against usage,
# are summed and written together, off the request's path).
# Then two instances on the one Redis, loaded at the same time.
measure_state() {
    command -v redis-server >/dev/null || die "BENCH_STATE=redis needs redis-server (apt-get install redis-server)"
    local base_env=("${GATEWAY_ENV[@]}") redis_port redis_pid second_pid second_port
    mkdir -p "$WORK/data2"
    redis_port=$(free_port $((GATEWAY_PORT + 20)))
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
    redis_pid=$!
    track "$redis_pid"
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break
        sleep 0.05
    done
    printf '[providers.groq]\ncomponent = "%s"\nlimits = { rpm = 4000000000, rpd = 0, tpm = 0, tpd = 0 }\n' \
        "$GROQ_WASM" >"$WORK/plugins-state.toml"
    local shared=(FREELLM_API_KEY=bench-master-key FREELLM_IDENTIFIER_LIMIT=1000000/60000)
    local cmd=("$GATEWAY_BIN" serve --config "$WORK/plugins-state.toml")
    GATEWAY_CMD=("${cmd[@]}")
    log "state: embedded store, 1 connection, $DURATION"
    GATEWAY_ENV=("${base_env[@]}" "${shared[@]}")
    start_gateway
    run_oha state-local-c1 "$GATEWAY_URL" 1 "$DURATION" -H "Authorization: Bearer bench-master-key"
    stop_gateway
    log "state: Redis on loopback, 1 connection, $DURATION"
    GATEWAY_ENV=("${base_env[@]}" "${shared[@]}" FREELLM_REDIS_URL="redis://127.0.0.1:$redis_port" FREELLM_INSTANCE_ID=bench-1)
    start_gateway
    run_oha state-redis-c1 "$GATEWAY_URL" 1 "$DURATION" -H "Authorization: Bearer bench-master-key"
    # The floor of one Redis round trip on this machine, and how many
    # Redis calls a request made (both from redis itself).
    redis-benchmark -h 127.0.0.1 -p "$redis_port" -c 1 -n 20000 -t ping --csv >"$WORK/redis-ping.csv" 2>/dev/null || true
    redis-cli -p "$redis_port" info commandstats >"$WORK/redis-commands.txt" 2>/dev/null || true
    # The floor of one exact reservation on this machine: the gateway's own
    # reservation script, caught on the wire (MONITOR) and replayed by
    # redis-benchmark at one connection (a C client, no gateway around it).
    timeout 2 redis-cli -p "$redis_port" monitor >"$WORK/redis-monitor.txt" 2>/dev/null &
    local monitor=$! reserve=()
    sleep 0.5
    curl -s -o /dev/null -X POST -H "Authorization: Bearer bench-master-key" -H 'Content-Type: application/json' \
        -d "$BODY" "$GATEWAY_URL" || true
    wait "$monitor" || true
    mapfile -t reserve < <(grep -m1 '"EVALSHA".*:pk:m:' "$WORK/redis-monitor.txt" | grep -o '"[^"]*"' | tr -d '"')
    if ((${#reserve[@]} > 0)); then
        redis-benchmark -h 127.0.0.1 -p "$redis_port" -c 1 -n 20000 --csv "${reserve[@]}" \
            >"$WORK/redis-reserve.csv" 2>/dev/null || true
    fi
    log "state: two instances on one Redis, 1 connection each, $DURATION"
    second_port=$(free_port $((GATEWAY_PORT + 21)))
    env "${GATEWAY_ENV[@]}" PORT="$second_port" FREELLM_INSTANCE_ID=bench-2 FREELLM_DATA_DIR="$WORK/data2" \
        "${cmd[@]}" </dev/null >>"$WORK/gateway2.log" 2>&1 &
    second_pid=$!
    track "$second_pid"
    wait_http_200 "http://127.0.0.1:$second_port/healthz" 180 "$second_pid" || die "the second instance did not start"
    local first_load
    run_oha state-two-a "$GATEWAY_URL" 1 "$DURATION" -H "Authorization: Bearer bench-master-key" &
    first_load=$!
    run_oha state-two-b "http://127.0.0.1:$second_port/v1/chat/completions" 1 "$DURATION" \
        -H "Authorization: Bearer bench-master-key"
    wait "$first_load"
    stop_pid "$second_pid"
    stop_gateway
    stop_pid "$redis_pid"
    GATEWAY_ENV=("${base_env[@]}")
    GATEWAY_CMD=("$GATEWAY_BIN" serve --config "$WORK/plugins.toml")
    # redis-benchmark --csv: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
    local ping_p50_us reserve_p50_us calls
    ping_p50_us=$(awk -F'","' '/PING_INLINE|PING_MBULK/ {gsub(/"/, "", $5); printf "%.1f", $5 * 1000; exit}' "$WORK/redis-ping.csv" 2>/dev/null)
    reserve_p50_us=$(awk -F'","' 'NR == 2 {gsub(/"/, "", $5); printf "%.1f", $5 * 1000; exit}' "$WORK/redis-reserve.csv" 2>/dev/null)
    calls=$(awk -F'[=,:]' '/^cmdstat_(evalsha|eval):/ {n += $3} END {print n + 0}' "$WORK/redis-commands.txt" 2>/dev/null)
    jq -n --slurpfile l "$WORK/state-local-c1.json" --slurpfile r "$WORK/state-redis-c1.json" \
        --slurpfile a "$WORK/state-two-a.json" --slurpfile b "$WORK/state-two-b.json" \
        --argjson ping "${ping_p50_us:-null}" --argjson reserve "${reserve_p50_us:-null}" --argjson calls "${calls:-0}" '
        def us(o; p): (o.latencyPercentiles[p] * 1e6 * 10 | round) / 10;
        def ok(o): ([o.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0) == 0;
        {
            local_p50_us: us($l[0]; "p50"), redis_p50_us: us($r[0]; "p50"),
            redis_added_p50_us: ((us($r[0]; "p50") - us($l[0]; "p50")) * 10 | round / 10),
            local_p99_us: us($l[0]; "p99"), redis_p99_us: us($r[0]; "p99"),
            two_instances_p50_us: [us($a[0]; "p50"), us($b[0]; "p50")],
            two_instances_rps: [$a[0].summary.requestsPerSec, $b[0].summary.requestsPerSec] | map(round),
            redis_ping_p50_us: $ping,
            redis_reservation_p50_us: $reserve,
            redis_scripts_per_request: (if ([$r[0].statusCodeDistribution[]] | add // 0) > 0
                then ($calls / ([$r[0].statusCodeDistribution[]] | add) * 100 | round / 100) else null end),
            all_200: (ok($l[0]) and ok($r[0]) and ok($a[0]) and ok($b[0]))
        }' >"$RESULTS_DIR/state.json"
    jq -r '
        "Shared state, 1 conn: p50 \(.redis_p50_us) µs on Redis vs \(.local_p50_us) µs on the embedded store: +\(.redis_added_p50_us) µs (target ≤ 100 µs); p99 \(.redis_p99_us) vs \(.local_p99_us) µs.",
        "Redis on this machine (redis-benchmark, 1 connection): one PING round trip p50 \(.redis_ping_p50_us // "–") µs; one provider key reservation (the gateway'"'"'s script, replayed) p50 \(.redis_reservation_p50_us // "–") µs; scripts run per request: \(.redis_scripts_per_request // "–").",
        "Two instances on one Redis, 1 conn each: p50 \(.two_instances_p50_us | map(tostring) | join(" / ")) µs, \(.two_instances_rps | map(tostring) | join(" + ")) req/s. All 200: \(.all_200)."
    ' "$RESULTS_DIR/state.json" | tee "$RESULTS_DIR/state.md"
}

main() {
    ensure_tools
    build_all

    WORK=$(mktemp -d "${TMPDIR:-/tmp}/freellm-bench.XXXXXX")
    local started=$SECONDS
    start_mock
    write_gateway_config
    DIRECT_URL="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
    GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions"

    warm_component_cache
    measure_cold_start

    start_gateway
    smoke_test "$DIRECT_URL"
    smoke_test "$GATEWAY_URL"
    measure_idle_rss
    measure_load
    measure_floor
    stop_gateway

    write_results
    if [[ ${BENCH_ONLY:-} == main ]]; then
        echo
        print_table
        return
    fi
    if [[ ${BENCH_ONLY:-} == state ]]; then
        measure_state
        echo
        print_table
        return
    fi
    measure_extras
    [[ ${BENCH_STATE:-} != redis ]] || measure_state
    log "measured in $((SECONDS - started)) s"
    echo
    print_table
    echo
    cat "$RESULTS_DIR/extras.md"
    echo
    log "routing benchmark"
    BENCH_SKIP_BUILD=1 bench/routing.sh
    echo
    log "hot-swap benchmark"
    BENCH_SKIP_BUILD=1 bench/swap.sh
    echo
    log "prompt-size benchmark"
    BENCH_SKIP_BUILD=1 bench/prompts.sh
    echo
    log "stream benchmark"
    BENCH_SKIP_BUILD=1 bench/streams.sh
    echo
    log "the floor's budget"
    BENCH_SKIP_BUILD=1 bench/budget.sh
}

main "$@"
