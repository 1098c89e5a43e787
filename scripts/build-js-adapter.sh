#!/usr/bin/env bash
# Builds the JavaScript adapter (adapters/js-openai) into a component with
# componentize-js from the npm registry:
# target/js-adapter/freellm_provider_js_openai.wasm. Skipped when the
# component is newer than its sources.
set -euo pipefail
cd "$(dirname "$0")/.."

src=adapters/js-openai
out=target/js-adapter/freellm_provider_js_openai.wasm

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "error: building the JavaScript adapter needs node and npm" >&2
    exit 1
fi
if [[ -f "$out" && -z "$(find wit "$src/adapter.js" "$src/build.mjs" "$src/package-lock.json" -newer "$out" -print -quit)" ]]; then
    exit 0
fi
if [[ ! -d "$src/node_modules/@bytecodealliance/componentize-js" ]]; then
    (cd "$src" && npm ci --no-audit --no-fund)
fi
node "$src/build.mjs" "$out"
