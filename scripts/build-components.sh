#!/usr/bin/env bash
# Builds every provider component under providers/ and the test adapters
# under tests/adapter-* (0.1- and 0.2-contract adapters, a non-OpenAI adapter) for
# wasm32-wasip2, installing the target first if this machine lacks it.
# With package names as arguments, builds only those.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "error: the wasm32-wasip2 target is not installed and could not be added" >&2
    exit 1
fi

packages=()
for name in "$@"; do
    packages+=(-p "$name")
done
if ((${#packages[@]} == 0)); then
    for manifest in providers/*/Cargo.toml tests/adapter-*/Cargo.toml; do
        name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n1)
        packages+=(-p "$name")
    done
fi
cargo build --profile wasm --target wasm32-wasip2 "${packages[@]}"
echo "components built: $(printf '%s\n' "${packages[@]}" | grep -vx -- -p | tr '\n' ' ')"
