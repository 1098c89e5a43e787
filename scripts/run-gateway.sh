#!/usr/bin/env bash
# Builds the components and the gateway (release), then runs it with the
# default plugins.toml. Extra arguments go to `freellm serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-components.sh
cargo build --release -p freellm --bin freellm
exec target/release/freellm serve --config plugins.toml "$@"
