#!/usr/bin/env bash
# Rebuilds dashboard/assets/plotly-gradwatch.min.js: plotly.js with only the trace types the dashboard's
# figures draw (scatter, bar, heatmap), and dashboard/assets/regenerator-runtime.min.js (the one part of
# Dash's 97 KiB browser polyfill its lazy loader needs; dashboard/page_scripts.py drops the polyfill).
# Builds in a temporary folder from pinned npm packages; needs node and npm. Not run by CI: the
# results are committed. Usage: bash scripts/build_plotly_bundle.sh
set -euo pipefail

PLOTLY_VERSION=4.1.1
ESBUILD_VERSION=0.24.2
TERSER_VERSION=5.36.0
REGENERATOR_VERSION=0.14.1

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ASSETS="$REPO/dashboard/assets"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cp "$REPO"/scripts/plotly_bundle/*.js "$WORK/"
cd "$WORK"
npm init -y >/dev/null
npm install --no-audit --no-fund --loglevel=error "plotly.js@$PLOTLY_VERSION" "esbuild@$ESBUILD_VERSION" \
    "terser@$TERSER_VERSION" "regenerator-runtime@$REGENERATOR_VERSION"

node build.js bundle.js
# terser after esbuild: a second, slower minifier takes ~3% more off.
npx terser bundle.js --compress passes=2 --mangle --ecma 2018 --output bundle.min.js
{
    printf '/*! plotly.js v%s (gradwatch partial bundle: scatter, bar, heatmap) | Copyright Plotly, Inc. | MIT License */\n' \
        "$PLOTLY_VERSION"
    cat bundle.min.js
} > "$ASSETS/plotly-gradwatch.min.js"
cp node_modules/plotly.js/LICENSE "$ASSETS/plotly-gradwatch.LICENSE.txt"

npx terser node_modules/regenerator-runtime/runtime.js --compress --mangle --output regenerator.min.js
{
    printf '/*! regenerator-runtime v%s | Copyright Meta Platforms, Inc. and affiliates | MIT License */\n' \
        "$REGENERATOR_VERSION"
    cat regenerator.min.js
} > "$ASSETS/regenerator-runtime.min.js"
cp node_modules/regenerator-runtime/LICENSE "$ASSETS/regenerator-runtime.LICENSE.txt"

ls -l "$ASSETS/plotly-gradwatch.min.js" "$ASSETS/regenerator-runtime.min.js"
