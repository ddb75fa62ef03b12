#!/usr/bin/env bash
# Installs what crossdev needs and builds it: npm packages, the wasm32 toolchain, wasm-bindgen-cli
# at the crate's exact version, the native addon (napi), the WebAssembly module (wasm-bindgen +
# wasm-opt), Open MPI and the MPI addon, and the TypeScript build. Idempotent: steps whose outputs are up to date are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@";
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@";
  else
    log "needs root to run: $*"
    log "run it yourself (e.g. 'sudo $*'), then run 'npm run setup' again"
    exit 1
  fi
}

# Newest modification time under the given paths (0 when none exist).
newest() { find "$@" -type f -printf '%T@\n' 2>/dev/null | sort -n | tail -1 | cut -d. -f1; }
# True when $1 is missing or older than any file under the remaining paths.
stale() { local out=$1; shift; [ ! -e "$out" ] || [ "$(newest "$@")" -gt "$(stat -c %Y "$out")" ]; }

# 1. npm packages, from the committed lockfile.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund
fi

# 2. Rust for the native addon (rustup's stable).
command -v cargo >/dev/null || { log "cargo not found: install Rust (https://rustup.rs) and rerun"; exit 1; }

# 3. A wasm32 toolchain that can rebuild the standard library with atomics (the module's memory is
#    shared, and only a std built with +atomics links into it): rustup's rust-src component where it
#    can be had, else Debian's rustc-web + rust-web-src (+ lld-22); either with -Zbuild-std.
WASM_CARGO=(cargo)
WASM_ENV=(RUSTC_BOOTSTRAP=1)
if rustup component list --installed 2>/dev/null | grep -q '^rust-src' \
   || rustup component add rust-src >/dev/null 2>&1; then
  log "wasm32: rustup's rust-src with -Zbuild-std"
else
  if ! dpkg -s rustc-web cargo-web rust-web-src lld-22 >/dev/null 2>&1; then
    log "installing Debian's rustc-web, cargo-web, rust-web-src and lld-22 (rustup cannot fetch rust-src here)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src lld-22 >/dev/null
  fi
  log "wasm32: Debian rustc-web with -Zbuild-std"
  WASM_CARGO=(/usr/bin/cargo)
  WASM_ENV=(RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1)
fi
WASM_STD=(-Zbuild-std=std,panic_unwind)

# 4. wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock.
WB_VERSION=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)
TOOLS="$ROOT/.tools"
WB="$TOOLS/bin/wasm-bindgen"
if ! { [ -x "$WB" ] && "$WB" --version | grep -q " $WB_VERSION\$"; }; then
  if command -v wasm-bindgen >/dev/null && wasm-bindgen --version | grep -q " $WB_VERSION\$"; then
    mkdir -p "$TOOLS/bin" && ln -sf "$(command -v wasm-bindgen)" "$WB"
  else
    log "installing wasm-bindgen-cli $WB_VERSION (a few minutes, once)"
    cargo install --quiet --root "$TOOLS" wasm-bindgen-cli --version "$WB_VERSION" --locked \
      || cargo install --quiet --root "$TOOLS" wasm-bindgen-cli --version "$WB_VERSION"
  fi
fi

# 5. NVRTC (pip wheel, project-local) so that the CUDA kernels are compile-checked without a GPU.
#    Pinned to CUDA 13.0: PTX from a newer NVRTC is refused by the 13.0 driver of the GPU machines.
NVRTC_VERSION=13.0.88
if [ ! -f "$TOOLS/python/nvidia/cu13/lib/libnvrtc.so.13" ]; then
  log "installing NVRTC $NVRTC_VERSION (pip wheel nvidia-cuda-nvrtc) into .tools/python"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$TOOLS/python" \
    "nvidia-cuda-nvrtc==$NVRTC_VERSION" 2>&1 | grep -v "Running pip as the 'root' user" || true
  [ -f "$TOOLS/python/nvidia/cu13/lib/libnvrtc.so.13" ] || { log "NVRTC install failed"; exit 1; }
fi

SOURCES=(crates/crossdev-core crates/crossdev-node crates/crossdev-wasm Cargo.toml)

# 6. The native addon.
NODE_FILE=native/crossdev.linux-x64-gnu.node
if stale "$NODE_FILE" "${SOURCES[@]}" crates/crossdev-cuda; then
  log "building the native addon (napi build --release --platform)"
  npx napi build --platform --release --manifest-path crates/crossdev-node/Cargo.toml \
    --package-json-path package.json --output-dir native --no-js --dts napi.d.ts
fi

# 7. The WebAssembly module (SIMD128; atomics and a shared memory of up to 4 GiB, which
#    wasm-bindgen instantiates itself for Node.js; panic=unwind over WebAssembly exception
#    handling, in its legacy form that Node.js 20 runs, so that running out of memory unwinds
#    the call rather than trapping), bound with wasm-bindgen and optimised with wasm-opt.
WASM_OUT=wasm/crossdev_wasm_bg.wasm
WASM_RUSTFLAGS="-C target-feature=+simd128,+atomics,+bulk-memory,+mutable-globals,+exception-handling -C panic=unwind"
for arg in --shared-memory --max-memory=4294967296 --import-memory --export=__wasm_init_tls \
  --export=__tls_size --export=__tls_align --export=__tls_base; do
  WASM_RUSTFLAGS+=" -C link-arg=$arg"
done
if stale "$WASM_OUT" "${SOURCES[@]}"; then
  log "building the WebAssembly module"
  env "${WASM_ENV[@]}" RUSTFLAGS="$WASM_RUSTFLAGS" \
    "${WASM_CARGO[@]}" build --quiet --release "${WASM_STD[@]}" --target wasm32-unknown-unknown \
    -p crossdev-wasm --target-dir target/wasm
  "$WB" --target nodejs --out-dir wasm --out-name crossdev_wasm \
    target/wasm/wasm32-unknown-unknown/release/crossdev_wasm.wasm
  npx wasm-opt -O3 --enable-simd --enable-threads --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-exception-handling "$WASM_OUT" -o "$WASM_OUT"
  echo '{ "type": "commonjs" }' > wasm/package.json
fi

# 8. Open MPI and the MPI build of the addon (native/crossdev-mpi.*.node: the native addon plus
#    crossdev-mpi's process group, used after `init({ backend: 'mpi' })`). A separate file, so that
#    the default addon does not need libmpi; rsmpi's bindings are generated by bindgen (libclang).
if ! { command -v mpirun >/dev/null && dpkg -s libopenmpi-dev libclang-dev >/dev/null 2>&1; }; then
  log "installing Open MPI (openmpi-bin, libopenmpi-dev) and libclang-dev (for rsmpi's bindgen)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openmpi-bin libopenmpi-dev libclang-dev >/dev/null
fi
MPI_FILE=native/crossdev-mpi.linux-x64-gnu.node
if stale "$MPI_FILE" "${SOURCES[@]}" crates/crossdev-mpi crates/crossdev-cuda; then
  log "building the MPI addon (crossdev-node with the mpi feature)"
  cargo build --quiet --release -p crossdev-node --features mpi --target-dir target/mpi
  cp target/mpi/release/libcrossdev_node.so "$MPI_FILE"
fi

# 9. The TypeScript build (ESM + CJS + .d.ts, and the CLI).
if stale dist/index.js ts tsup.config.ts package.json; then
  log "building the TypeScript facade (tsup)"
  npx tsup --silent
fi
log "ready: native addon, WebAssembly module and dist/ are built"
