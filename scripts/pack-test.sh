#!/usr/bin/env bash
# Tests crossdev as a user installs it: packs both tarballs (scripts/pack.sh), installs them into
# an empty temporary project offline, with a private npm cache and a PATH that holds no Rust, then
# reduces from ESM (import) and from CJS (require) on the native addon of the platform package,
# type-checks a user's file against the shipped .d.ts, runs the `crossdev` bin, and reduces again
# with the platform package absent (WebAssembly fallback): the result bytes must be the same.
# Needs what `npm run setup` builds; builds nothing itself. Ends with "pack-test: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
passed=0
failed=0
ok() { echo "PASS $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; sed 's/^/    /' "$W/out" | tail -30; failed=$((failed + 1)); }
# check NAME CMD...: PASS when CMD exits 0 (its output is shown on failure).
check() { local name=$1; shift; if "$@" >"$W/out" 2>&1; then ok "$name"; else bad "$name"; fi; }
finish() { echo "pack-test: ${passed} passed, ${failed} failed"; [ "$failed" = 0 ]; exit $?; }

echo "== pack-test (npm pack, offline install into an empty project, no Rust on PATH)"

# 1. The tarballs.
if bash scripts/pack.sh "$W/pack" >"$W/out" 2>&1; then
  ok "scripts/pack.sh: $(sed -n 's#^.*/\(crossdev[^ ]*\.tgz\) *\(.*\)$#\1 \2#p' "$W/out" | paste -sd ';' | sed 's/;/; /g')"
else
  bad "scripts/pack.sh"; finish
fi
version=$(node -p 'require("./package.json").version')
MAIN=$W/pack/crossdev-$version.tgz
PLAT=$W/pack/crossdev-linux-x64-gnu-$version.tgz

# tgz_check TGZ JS: runs JS with `files` (the tarball's paths) and `pkg` (its package.json).
tgz_check() {
  tar tzf "$1" >"$W/list" && tar xzOf "$1" package/package.json >"$W/manifest.json" &&
    LIST=$W/list MANIFEST=$W/manifest.json node -e '
      const fs = require("fs");
      const files = fs.readFileSync(process.env.LIST, "utf8").split("\n").filter(Boolean).map((f) => f.replace(/^package\//, ""));
      const pkg = JSON.parse(fs.readFileSync(process.env.MANIFEST, "utf8"));
      const problems = [];
      const need = (f) => files.includes(f) || problems.push(`missing ${f}`);
      '"$2"'
      if (problems.length) { console.log(problems.join("\n")); console.log("files:", files.join(" ")); process.exit(1); }'
}
check "main tarball: dist (ESM, CJS, .d.ts, CLI) and wasm, no .node" tgz_check "$MAIN" '
  ["dist/index.js", "dist/index.cjs", "dist/index.d.ts", "dist/index.d.cts", "dist/cli/main.js",
   "wasm/crossdev_wasm.js", "wasm/crossdev_wasm_bg.wasm", "wasm/package.json", "README.md"].forEach(need);
  files.filter((f) => f.endsWith(".node")).forEach((f) => problems.push(`carries ${f}`));'
check "main manifest: optionalDependencies crossdev-linux-x64-gnu@$version exactly, no runtime dependencies" tgz_check "$MAIN" '
  const opt = JSON.stringify(pkg.optionalDependencies);
  if (opt !== JSON.stringify({ "crossdev-linux-x64-gnu": pkg.version })) problems.push(`optionalDependencies ${opt}`);
  for (const k of ["dependencies", "peerDependencies", "bundleDependencies"]) if (pkg[k]) problems.push(`has ${k}`);
  for (const k of ["preinstall", "install", "postinstall"]) if (pkg.scripts?.[k]) problems.push(`has an ${k} script`);'
check "platform tarball: crossdev-linux-x64-gnu@$version, linux/x64/glibc, the addon as main" tgz_check "$PLAT" '
  need("crossdev.linux-x64-gnu.node");
  const want = { name: "crossdev-linux-x64-gnu", version: '"'$version'"', os: ["linux"], cpu: ["x64"], libc: ["glibc"],
    main: "crossdev.linux-x64-gnu.node" };
  for (const [k, v] of Object.entries(want)) if (JSON.stringify(pkg[k]) !== JSON.stringify(v)) problems.push(`${k}: ${JSON.stringify(pkg[k])}`);
  if (files.some((f) => f !== "package.json" && f !== "README.md" && f !== "crossdev.linux-x64-gnu.node")) problems.push("extra files");'

# 2. A user's machine: a PATH of node, npm, npx and sh only (no cargo, rustc, rustup), an empty
#    environment otherwise, a private npm cache and no npmrc; installs run --offline.
mkdir -p "$W/bin" "$W/p1" "$W/p2"
ln -s "$(node -p process.execPath)" "$W/bin/node"
ln -s "$(readlink -f "$(command -v npm)")" "$W/bin/npm"
ln -s "$(readlink -f "$(command -v npx)")" "$W/bin/npx"
ln -s "$(command -v sh)" "$W/bin/sh"
: >"$W/npmrc"
# user DIR [VAR=value...] CMD...: runs CMD in DIR as that user.
user() { local dir=$1; shift; (cd "$dir" && env -i HOME="$HOME" PATH="$W/bin" npm_config_cache="$W/npm-cache" npm_config_userconfig="$W/npmrc" "$@"); }
no_rust() { user "$W" sh -c 'for t in cargo rustc rustup; do if command -v $t; then echo "$t is on PATH"; exit 1; fi; done'; }
check "no cargo, rustc or rustup on the user's PATH" no_rust
for p in p1 p2; do echo '{ "name": "crossdev-user", "version": "1.0.0", "private": true }' >"$W/$p/package.json"; done
check "npm install --offline both tarballs into an empty project" \
  user "$W/p1" npm install --offline --no-audit --no-fund "$MAIN" "$PLAT"

# 3. The client: reduces 3 devices (SUM, MEAN async; MAX sync), checks every value, the backend
#    and which build of crossdev it loaded, and prints a digest of all result bytes.
cat >"$W/body.js" <<'EOF'
async function run({ tensor, PerDevice, ReductionToOneDevice, ReduceOp, backend }, { entry, want, wantEntry }) {
  const problems = [];
  if (process.env.PATH.split(':').some((d) => ['cargo', 'rustc'].some((t) => fs.existsSync(path.join(d, t))))) problems.push(`Rust on PATH ${process.env.PATH}`);
  if (!entry.endsWith(wantEntry)) problems.push(`loaded ${entry}, expected …${wantEntry}`);
  const devices = ['/cpu:0', '/cpu:1', '/cpu:2'];
  const n = 1024;
  const inputs = devices.map((_, d) => Float32Array.from({ length: n }, (_, i) => ((i * 7 + d * 13) % 101) * 0.25 - 12));
  const grads = new PerDevice(Object.fromEntries(devices.map((dev, d) => [dev, tensor(inputs[d], [32, 32])])));
  const ops = new ReductionToOneDevice();
  const results = {
    sum: await ops.reduce(ReduceOp.SUM, grads, grads),
    mean: await ops.reduce(ReduceOp.MEAN, grads, grads),
    max: ops.reduceSync(ReduceOp.MAX, grads, grads),
  };
  const sum = (i) => inputs.reduce((a, x) => Math.fround(a + x[i]), 0);
  const expected = { sum, mean: (i) => sum(i) / devices.length, max: (i) => Math.max(...inputs.map((x) => x[i])) };
  const hash = createHash('sha256');
  for (const [op, mirrored] of Object.entries(results)) {
    for (const dev of devices) {
      const t = mirrored.get(dev);
      if (t.dtype !== 'float32' || JSON.stringify(t.shape) !== '[32,32]') problems.push(`${op} on ${dev}: ${t.dtype} ${JSON.stringify(t.shape)}`);
      let wrong = 0;
      for (let i = 0; i < n; i++) {
        const want = expected[op](i);
        const tolerance = op === 'mean' ? 1e-6 * Math.max(1, Math.abs(want)) : 0;
        if (!(Math.abs(t.data[i] - want) <= tolerance)) wrong++;
      }
      if (wrong) problems.push(`${op} on ${dev}: ${wrong} of ${n} elements wrong`);
      hash.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    }
  }
  if (backend() !== want) problems.push(`backend() is '${backend()}', expected '${want}'`);
  if (problems.length) {
    console.log(problems.join('\n'));
    process.exitCode = 1;
  } else {
    console.log(`backend ${backend()}, entry ${path.relative(process.cwd(), entry)}, 3 devices x ${n} float32 SUM/MEAN/MAX right`);
    console.log(`digest ${hash.digest('hex')}`);
  }
}
EOF
{
  echo "import { tensor, PerDevice, ReductionToOneDevice, ReduceOp, backend } from 'crossdev';"
  echo "import fs from 'node:fs'; import path from 'node:path'; import { createHash } from 'node:crypto'; import { fileURLToPath } from 'node:url';"
  cat "$W/body.js"
  echo "await run({ tensor, PerDevice, ReductionToOneDevice, ReduceOp, backend }, { entry: fileURLToPath(import.meta.resolve('crossdev')), want: process.argv[2], wantEntry: 'node_modules/crossdev/dist/index.js' });"
} >"$W/esm.mjs"
{
  echo "const { tensor, PerDevice, ReductionToOneDevice, ReduceOp, backend } = require('crossdev');"
  echo "const fs = require('node:fs'); const path = require('node:path'); const { createHash } = require('node:crypto');"
  cat "$W/body.js"
  echo "run({ tensor, PerDevice, ReductionToOneDevice, ReduceOp, backend }, { entry: require.resolve('crossdev'), want: process.argv[2], wantEntry: 'node_modules/crossdev/dist/index.cjs' }).catch((e) => { console.log(e.stack); process.exitCode = 1; });"
} >"$W/cjs.cjs"
cp "$W/esm.mjs" "$W/cjs.cjs" "$W/p1/"
cp "$W/esm.mjs" "$W/cjs.cjs" "$W/p2/"

FIRST=
# client DIR SCRIPT BACKEND: the client passes and its result bytes equal the first run's.
client() {
  user "$1" node "$2" "$3" || return 1
  local digest
  digest=$(sed -n 's/^digest //p' "$W/out")
  [ -n "$digest" ] || { echo "no digest"; return 1; }
  if [ -z "$FIRST" ]; then FIRST=$digest; elif [ "$digest" != "$FIRST" ]; then echo "result bytes differ from the first run's ($FIRST)"; return 1; fi
}
check "ESM import from 'crossdev' reduces on the native addon (platform package)" client "$W/p1" esm.mjs native
check "CJS require('crossdev') reduces on the native addon, same result bytes" client "$W/p1" cjs.cjs native

# 4. The shipped types, as a user's TypeScript sees them (ESM and CJS resolution).
cat >"$W/p1/check.mts" <<'EOF'
import { tensor, PerDevice, ReductionToOneDevice, ReduceOp, backend, type BackendName, type Mirrored } from 'crossdev';
// @ts-expect-error: not an export (so the types are crossdev's, not `any`)
import { notAnExport } from 'crossdev';
const name: BackendName = backend();
const out: Promise<Mirrored> = new ReductionToOneDevice().reduce(ReduceOp.SUM, new PerDevice({ '/cpu:0': tensor(new Float32Array([1]), [1]) }), '/cpu:0');
export { name, out, notAnExport };
EOF
cat >"$W/p1/check.cts" <<'EOF'
import crossdev = require('crossdev');
const name: crossdev.BackendName = crossdev.backend();
// @ts-expect-error: a number is no tensor
crossdev.tensor(1, 'x');
export = name;
EOF
cat >"$W/p1/tsconfig.json" <<'EOF'
{ "compilerOptions": { "module": "node16", "moduleResolution": "node16", "target": "ES2022", "lib": ["ES2022"],
  "strict": true, "noEmit": true, "skipLibCheck": false, "types": [] }, "files": ["check.mts", "check.cts"] }
EOF
check "TypeScript resolves the shipped .d.ts (import and require)" user "$W/p1" node "$ROOT/node_modules/typescript/bin/tsc" -p .

# 5. The bin.
help() { user "$W/p1" npx --offline crossdev --help && grep -q 'Usage: crossdev' "$W/out"; }
check "npx crossdev --help runs the installed bin" help

# 6. A platform package of another version is refused (WebAssembly runs instead).
other_version() {
  node -e 'const f = process.argv[1], p = JSON.parse(require("fs").readFileSync(f)); p.version = "0.0.0-other"; require("fs").writeFileSync(f, JSON.stringify(p))' \
    "$W/p1/node_modules/crossdev-linux-x64-gnu/package.json" || return 1
  client "$W/p1" esm.mjs wasm || return 1
  user "$W/p1" CROSSDEV_BACKEND=native node -e 'try { require("crossdev").backend(); console.log("loaded"); process.exit(1) } catch (e) { console.log(e.message); process.exit(/ERR_BACKEND/.test(e.code) && /version 0\.0\.0-other does not match/.test(e.message) ? 0 : 1) }'
}
check "platform package of another version refused, WebAssembly instead, same result bytes" other_version

# 7. The platform package absent: the WebAssembly fallback, same bytes.
rm -rf "$W/p1/node_modules/crossdev-linux-x64-gnu"
check "platform package removed: ESM falls back to WebAssembly, same result bytes" client "$W/p1" esm.mjs wasm
check "platform package removed: CJS falls back to WebAssembly, same result bytes" client "$W/p1" cjs.cjs wasm
main_only() {
  user "$W/p2" npm install --offline --no-audit --no-fund "$MAIN" || return 1
  [ ! -e "$W/p2/node_modules/crossdev-linux-x64-gnu" ] || { echo "the platform package was installed"; return 1; }
  client "$W/p2" esm.mjs wasm
}
check "main tarball alone (its optional platform package unavailable offline): installs, WebAssembly, same result bytes" main_only

finish
