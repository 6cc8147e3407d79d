#!/usr/bin/env bash
# Builds web/dist from web/src: installs the pinned npm packages
# (package-lock.json) and bundles with esbuild. Run it after changing
# anything under web/src, then commit web/dist: `go build` embeds web/dist
# and never runs npm.
set -euo pipefail
cd "$(dirname "$0")"

npm ci --no-audit --no-fund --loglevel=error

out=dist.tmp
rm -rf "$out"
mkdir "$out"
./node_modules/.bin/esbuild \
  player=src/player/main.js \
  dashboard=src/dashboard/main.js \
  --bundle --minify --format=iife --platform=browser \
  --target=es2020,chrome91,firefox90,safari15 \
  --legal-comments=none --charset=utf8 \
  --metafile="$out/meta.json" --outdir="$out" --log-level=warning
cp src/static/favicon.svg "$out/"
node licenses.mjs "$out/meta.json" "$out/THIRD_PARTY_LICENSES.txt"
rm "$out/meta.json"

rm -rf dist
mv "$out" dist
echo "web/dist:"
ls -l dist | awk 'NR > 1 { printf "  %-28s %8d bytes\n", $9, $5 }'
