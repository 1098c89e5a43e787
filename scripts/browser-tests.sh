#!/usr/bin/env bash
# Browser tests of the dashboard: Debian's Chromium, driven by
# playwright-core (npm), against a real gateway (target/debug/freellm) with
# the real groq and ollama components and small mock upstreams. Installs
# what a fresh machine lacks (chromium and Node.js from apt, the npm
# packages from package-lock.json), builds what is missing, then runs
# tests/browser. Screenshots: tests/browser/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

apt_install() {
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "$@"
}

if [[ ! -x $CHROMIUM ]]; then
    echo "installing chromium (apt)" >&2
    apt_install chromium
    CHROMIUM=/usr/bin/chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "installing Node.js and npm (apt)" >&2
    apt_install nodejs npm
fi

# The gateway (a no-op when up to date) and the two components the test loads.
cargo build --workspace --bins --tests   # as scripts/test.sh builds it
for component in groq ollama; do
    if [[ ! -f target/wasm32-wasip2/wasm/freellm_provider_$component.wasm ]]; then
        scripts/build-components.sh
        break
    fi
done

cd tests/browser
npm ci --no-audit --no-fund
npm test
