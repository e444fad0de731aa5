#!/usr/bin/env bash
# Builds and runs the browser chat: the TypeScript client's packages, the page (stubs generated
# with buf, bundled with esbuild), then the server on http://127.0.0.1:8080/ (or --port N).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --quiet -p protoc-gen-goomerang
(cd clients/ts && npm ci --no-audit --no-fund --loglevel=error)
node examples/browser-chat/web/build.mjs
exec cargo run --quiet -p browser-chat -- "$@"
