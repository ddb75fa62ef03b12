#!/usr/bin/env bash
# Packs crossdev by napi-rs's conventions into two tarballs (default folder: target/pack/):
#   crossdev-<version>.tgz                 the main package: dist/ (ESM, CJS, .d.ts, the CLI) and
#                                          wasm/ (the WebAssembly core); package.json's `files`.
#                                          Its manifest names the platform package in
#                                          `optionalDependencies` at the exact version.
#   crossdev-linux-x64-gnu-<version>.tgz   the platform package: the native addon only
#                                          (npm/linux-x64-gnu/package.json: os, cpu, libc).
# Builds nothing: run `npm run setup` first. Usage: bash scripts/pack.sh [output-dir]
#
# The `optionalDependencies` entry exists only in the packed manifest (written by
# `napi pre-publish` in a staging copy), never in the repository's package.json: the platform
# package is not on the npm registry, and an optional dependency that the lockfile cannot
# resolve makes `npm ci` refuse to run ("Missing: crossdev-linux-x64-gnu@ from lock file").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$(mkdir -p "${1:-target/pack}" && cd "${1:-target/pack}" && pwd)
PLATFORM=linux-x64-gnu                       # napi's name for the one target in package.json's napi.targets
ADDON=native/crossdev.$PLATFORM.node
NAPI=$ROOT/node_modules/.bin/napi
log() { printf 'pack: %s\n' "$*" >&2; }

missing=0
for f in dist/index.js dist/index.cjs dist/index.d.ts dist/index.d.cts dist/cli/main.js \
         wasm/crossdev_wasm.js wasm/crossdev_wasm_bg.wasm wasm/package.json "$ADDON" \
         "npm/$PLATFORM/package.json" "$NAPI"; do
  [ -e "$f" ] || { log "missing $f"; missing=1; }
done
[ "$missing" = 0 ] || { log "run 'npm run setup' first (it builds dist/, wasm/ and native/)"; exit 1; }
if [ -n "$(find ts -newer dist/index.js -type f -print -quit)" ]; then
  log "warning: ts/ has changes newer than dist/; run 'npx tsup' to pack them"
fi

version=$(node -p 'require("./package.json").version')
platform_version=$(node -p "require('./npm/$PLATFORM/package.json').version")
if [ "$version" != "$platform_version" ]; then
  log "npm/$PLATFORM/package.json is at $platform_version, package.json at $version: run 'npx napi version'"
  exit 1
fi

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

# The main package: exactly the files `npm pack` takes from this tree.
npm pack --dry-run --json --ignore-scripts 2>/dev/null | STAGE=$STAGE node -e '
  const fs = require("fs"), path = require("path");
  for (const { path: f } of JSON.parse(fs.readFileSync(0, "utf8"))[0].files) {
    fs.mkdirSync(path.dirname(path.join(process.env.STAGE, f)), { recursive: true });
    fs.copyFileSync(f, path.join(process.env.STAGE, f));
  }'
# The platform package, as `napi artifacts` lays it out: npm/<platform>/ plus the addon.
mkdir -p "$STAGE/npm"
cp -r "npm/$PLATFORM" "$STAGE/npm/"
cp "$ADDON" "$STAGE/npm/$PLATFORM/"

# napi pre-publish checks the platform package and writes optionalDependencies into the staged
# package.json; publishing and GitHub releases are switched off (offline, nothing leaves here).
(cd "$STAGE" && "$NAPI" pre-publish --npm-dir npm --tag-style npm --skip-optional-publish --no-gh-release) >&2
got=$(node -p "(require('$STAGE/package.json').optionalDependencies || {})['crossdev-$PLATFORM']")
[ "$got" = "$version" ] || { log "napi pre-publish wrote crossdev-$PLATFORM@$got, expected $version"; exit 1; }

rm -f "$OUT/crossdev-$version.tgz" "$OUT/crossdev-$PLATFORM-$version.tgz"
npm pack "$STAGE" "$STAGE/npm/$PLATFORM" --pack-destination "$OUT" --json --ignore-scripts 2>/dev/null \
  | OUT=$OUT node -e '
    const fs = require("fs"), path = require("path");
    for (const p of JSON.parse(fs.readFileSync(0, "utf8"))) {
      const file = path.join(process.env.OUT, p.filename);
      if (!fs.existsSync(file)) { console.error(`pack: npm pack did not write ${file}`); process.exit(1); }
      const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
      console.log(`${file}  ${kb(fs.statSync(file).size)} (${p.entryCount} files, ${kb(p.unpackedSize)} unpacked)`);
    }'
