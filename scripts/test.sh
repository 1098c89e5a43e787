#!/usr/bin/env bash
# The whole test suite: builds the components and the gateway, then runs
# every unit test and the end-to-end tests against real components.
set -euo pipefail
cd "$(dirname "$0")/.."
# No host module imports one that imports it back (docs/architecture.md).
python3 scripts/check-module-cycles.py host/src crates/limits/src crates/runtime/src
scripts/build-components.sh
scripts/build-js-adapter.sh   # the JavaScript adapter (node and npm)
# Everything `cargo test` builds, with its feature set (dev-dependencies
# included): the gateway binary the end-to-end tests start is then the one
# unit graph, not a second build of tokio and everything above it.
cargo build --workspace --bins --tests
cargo test --workspace --no-fail-fast
scripts/browser-tests.sh
