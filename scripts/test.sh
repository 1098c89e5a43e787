#!/usr/bin/env bash
# The whole test suite: builds the components and the gateway, then runs
# every unit test and the end-to-end tests against real components.
set -euo pipefail
cd "$(dirname "$0")/.."
# No host module imports one that imports it back (docs/architecture.md).
python3 scripts/check-module-cycles.py host/src crates/limits/src crates/runtime/src
# The components and the JavaScript adapter (node and npm) build while the
# gateway and the tests do: cargo keeps the `wasm` and `dev` build
# directories (and their locks) apart, and they take the core the long
# single-crate steps of the dev build leave idle.
scripts/build-components.sh &
components=$!
scripts/build-js-adapter.sh &
js_adapter=$!
trap 'kill "$components" "$js_adapter" 2>/dev/null || true' EXIT
# Everything `cargo test` builds, with its feature set (dev-dependencies
# included): the gateway binary the end-to-end tests start is then the one
# unit graph, not a second build of tokio and everything above it.
cargo build --workspace --bins --tests
wait "$components"
wait "$js_adapter"
trap - EXIT
cargo test --workspace --no-fail-fast
scripts/browser-tests.sh
