#!/bin/sh
# Rebuilds dist/goop2-peer.mjs, the self-contained bundle the interop test runs, from the
# exact versions in package-lock.json. Needs Node.js and npm (and the npm registry, once).
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npx --no-install esbuild goop2-peer.mjs \
  --bundle --platform=node --format=esm --target=node18 --minify \
  --outfile=dist/goop2-peer.mjs
