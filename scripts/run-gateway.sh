#!/usr/bin/env bash
# Builds the components and the gateway (release), then runs it with the
# default plugins.toml. Extra arguments go to `freellm serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
# The components build while the gateway does: cargo keeps each profile's
# build directory (and its lock) apart, and the components take the core
# that the gateway's long single-crate steps leave idle.
# Only the components plugins.toml loads (not the test adapters).
mapfile -t wanted < <(sed -n 's|^component *= *"target/wasm32-wasip2/wasm/\([a-z0-9_]*\)\.wasm".*|\1|p' plugins.toml | tr _ -)
scripts/build-components.sh "${wanted[@]}" &
components=$!
trap 'kill "$components" 2>/dev/null || true' EXIT
cargo build --release -p freellm --bin freellm
wait "$components"
trap - EXIT
exec target/release/freellm serve --config plugins.toml "$@"
