#!/usr/bin/env bash
# Hot-swap benchmark: how long from writing an adapter file to the new
# version serving (with a cached compile, and with a never-seen component
# that must be compiled), and throughput while the adapter is swapped
# continuously vs not at all — one gateway, one mock, one run.
#
#     bench/swap.sh            (bench/run.sh calls it at the end)
#
# Tunables: BENCH_SWAP_ROUNDS (10), BENCH_DURATION (10s), BENCH_CONNECTIONS
# (16), BENCH_SKIP_BUILD=1. Writes bench/results/swap.json and swap.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

ROUNDS=${BENCH_SWAP_ROUNDS:-10}
DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
RESULTS_DIR=$ROOT/bench/results
WORK=$(mktemp -d "${TMPDIR:-/tmp}/freellm-swap.XXXXXX")

source "$ROOT/bench/lib.sh"
bench_traps

ensure_tools
command -v python3 >/dev/null || die "python3 is missing (it times the swaps)"

VARIANTS=$WORK/variants
mkdir -p "$VARIANTS"
build_dist
log "building the two swap-test adapter versions"
cargo build --profile wasm --target wasm32-wasip2 -p freellm-provider-swaptest --features v2
cp target/wasm32-wasip2/wasm/freellm_provider_swaptest.wasm "$VARIANTS/v2.wasm"
cargo build --profile wasm --target wasm32-wasip2 -p freellm-provider-swaptest
cp target/wasm32-wasip2/wasm/freellm_provider_swaptest.wasm "$VARIANTS/v1.wasm"
dist_outputs


MOCK_PORT=$(free_port 18281)
"$MOCK_BIN" --port "$MOCK_PORT" --threads 1 >"$WORK/mock.log" 2>&1 &
track $!
wait_http_200 "http://127.0.0.1:$MOCK_PORT/stats" || die "mock did not start"

COMPONENT=$WORK/live/swap.wasm
mkdir -p "$WORK/live" "$WORK/data" "$WORK/cache"
cp "$VARIANTS/v1.wasm" "$COMPONENT"
printf '[providers.swap]\ncomponent = "%s"\nbase_url = "http://127.0.0.1:%s/v1"\n' "$COMPONENT" "$MOCK_PORT" >"$WORK/plugins.toml"
GATEWAY_PORT=$(free_port 18290)
env PORT="$GATEWAY_PORT" FREELLM_DATA_DIR="$WORK/data" FREELLM_CACHE_DIR="$WORK/cache" CACHE_ENABLED=false LOG_LEVEL=warn \
    "$GATEWAY_BIN" serve --config "$WORK/plugins.toml" >"$WORK/gateway.log" 2>&1 &
track $!
wait_http_200 "http://127.0.0.1:$GATEWAY_PORT/healthz" || die "gateway did not start: $(tail -5 "$WORK/gateway.log")"
GATEWAY="http://127.0.0.1:$GATEWAY_PORT"

# Swap latency, measured by a small Python client: write (atomic rename),
# then poll GET /v1/plugins until the new hash is live.
log "swap latency: $ROUNDS rounds cached, $ROUNDS rounds uncached"
python3 - "$GATEWAY" "$COMPONENT" "$VARIANTS" "$ROUNDS" >"$WORK/latency.json" <<'PY'
import hashlib, json, os, shutil, statistics, sys, time, urllib.request
gateway, component, variants, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def live_hash():
    with urllib.request.urlopen(gateway + "/v1/plugins", timeout=5) as r:
        plugins = json.load(r)["plugins"]
    return next(p.get("hash") for p in plugins if p["id"] == "swap")

def install(data):
    tmp = component + ".incoming"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, component)
    return hashlib.sha256(data).hexdigest()

def timed(data):
    start = time.perf_counter()
    want = install(data)
    while live_hash() != want:
        if time.perf_counter() - start > 60:
            raise SystemExit("the new version never went live")
        time.sleep(0.001)
    return (time.perf_counter() - start) * 1000

v1 = open(os.path.join(variants, "v1.wasm"), "rb").read()
v2 = open(os.path.join(variants, "v2.wasm"), "rb").read()
timed(v2); timed(v1)  # both compiled once: the cache is warm
cached = [timed(v2 if i % 2 == 0 else v1) for i in range(rounds)]

def custom_section(name, payload):
    def leb(n):
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)
    body = leb(len(name)) + name + payload
    return b"\x00" + leb(len(body)) + body

# A component never seen before: v1 plus a unique custom section, so its
# hash (and cache key) is new and it must be compiled.
uncached = [timed(v1 + custom_section(b"bench-nonce", os.urandom(16) + str(i).encode())) for i in range(rounds)]
print(json.dumps({
    "cached_ms": {"median": round(statistics.median(cached), 1), "max": round(max(cached), 1), "runs": [round(x, 1) for x in cached]},
    "uncached_ms": {"median": round(statistics.median(uncached), 1), "max": round(max(uncached), 1), "runs": [round(x, 1) for x in uncached]},
}))
PY

BODY='{"model":"swap/m","messages":[{"role":"user","content":"Say hello"}]}'
run() {
    oha --no-tui --output-format json --worker-threads 1 -z "$DURATION" -c "$CONNECTIONS" \
        -m POST -T application/json -d "$BODY" "$GATEWAY/v1/chat/completions" >"$WORK/$1.json"
}
log "throughput without swaps, $DURATION"
cp "$VARIANTS/v1.wasm" "$COMPONENT.incoming" && mv "$COMPONENT.incoming" "$COMPONENT"
sleep 1
run steady
log "throughput while swapping every 200 ms, $DURATION"
(
    i=0
    while true; do
        if ((i % 2 == 0)); then src=$VARIANTS/v2.wasm; else src=$VARIANTS/v1.wasm; fi
        cp "$src" "$COMPONENT.incoming" && mv "$COMPONENT.incoming" "$COMPONENT"
        i=$((i + 1))
        sleep 0.2
    done
) &
SWAPPER=$!
track "$SWAPPER"
run swapping
stop_pid "$SWAPPER"
SWAPS=$(curl -s "$GATEWAY/v1/plugins" | jq '[.events[] | select(test("swapped"))] | length')

mkdir -p "$RESULTS_DIR"
jq -n --slurpfile lat "$WORK/latency.json" --slurpfile steady "$WORK/steady.json" --slurpfile swapping "$WORK/swapping.json" \
    --argjson swaps "$SWAPS" --arg duration "$DURATION" '
    def phase(o): {rps: (o.summary.requestsPerSec | round),
                   non_200: ([o.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0)};
    (phase($steady[0])) as $s | (phase($swapping[0])) as $w |
    {latency: $lat[0], steady: $s, swapping: ($w + {swaps_seen: $swaps}),
     throughput_ratio: (if $s.rps > 0 then (($w.rps / $s.rps) * 1000 | round) / 1000 else 0 end), duration: $duration}
' >"$RESULTS_DIR/swap.json"
jq -r '
    "Hot swap: file write -> new version serving (median / max of \(.latency.cached_ms.runs | length)):",
    "  cached compile:   \(.latency.cached_ms.median) ms / \(.latency.cached_ms.max) ms (target <= 200 ms)",
    "  uncached compile: \(.latency.uncached_ms.median) ms / \(.latency.uncached_ms.max) ms",
    "Throughput, \(.duration): \(.steady.rps) req/s steady, \(.swapping.rps) req/s while swapping every 200 ms (\(.throughput_ratio * 100 | round)%, target >= 90%); non-200: \(.steady.non_200) steady, \(.swapping.non_200) swapping."
' "$RESULTS_DIR/swap.json" | tee "$RESULTS_DIR/swap.md"
