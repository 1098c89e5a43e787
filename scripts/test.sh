#!/usr/bin/env bash
# The whole test suite: builds the components and the gateway, then runs
# every unit test and the end-to-end tests against real components.
set -euo pipefail
cd "$(dirname "$0")/.."
# No host module imports one that imports it back (docs/architecture.md).
python3 scripts/check-module-cycles.py host/src crates/limits/src
scripts/build-components.sh
scripts/build-js-adapter.sh   # the JavaScript adapter (node and npm)
cargo build -p freellm --bin freellm
cargo test --workspace --no-fail-fast
scripts/browser-tests.sh
