#!/usr/bin/env bash
# crossdev's GPU check: one command on a GPU machine (x86-64, CUDA 13 driver, no internet,
# PyTorch in its python3, Node.js possibly absent). Runs the GPU tests with
# CROSSDEV_VIRTUAL_GPUS=8 (the plan executor: every algorithm's plan over 8 logical GPUs sharing
# this machine's GPU(s), a CUDA stream per logical device, against the host executor, for every
# dtype and op, with a context per GPU and with a context per logical device; schedule and
# kernel tests; every op on GPU tensors against host tensors, all-reduces in device memory;
# NCCL over this machine's GPUs, directly, as NcclAllReduce of GPU tensors and as the NCCL
# level of nccl/xring and nccl/rechd of two workers) and the GPU benchmark (the N-way reduce kernel
# against a device-to-device copy and against PyTorch's torch.stack(xs).sum(0), and a ring
# all-reduce over 8 logical GPUs, in the same run), then GPU tensors from Node.js
# (test/gpu/tensors.mjs through the built package: every op class on GPU tensors of 8 logical
# GPUs against the same op on host tensors, bit for bit; toHost, dispose, the finalizer), then
# writes benches/results/gpu-<date>.json and prints a short table.
#
# Before (on a machine with Rust, Node.js and the project set up by `npm run setup`; no GPU needed):
#     flock /tmp/crossdev-cargo.lock bash scripts/gpu-check.sh --prepare
#   builds the test and benchmark binaries, the native addon and dist/ (napi build, tsup), and
#   puts them into target/gpu-check/ with an xz-compressed copy of this machine's node binary
#   (about 35 MB in all; it must stay under 60 MB). Bring along target/gpu-check. NVRTC comes
#   from the GPU machine's python (PyTorch's nvidia-cuda-nvrtc dependency), else from
#   .tools/python (scripts/setup.sh installs it; about 100 MB).
# On the GPU machine, from the repository root (it needs neither Node.js nor internet there):
#     bash scripts/gpu-check.sh
# Takes a few minutes; nothing is compiled there except the kernels (by NVRTC, at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/gpu-check

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p "$OUT"
  cargo build --release -p crossdev-cuda --bin gpu-bench
  cp target/release/gpu-bench "$OUT/"
  # The test binaries of crossdev-cuda (names carry a hash): ask cargo where it put them.
  cargo test --release -p crossdev-cuda --no-run --message-format=json \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])' \
    | while read -r name exe; do cp "$exe" "$OUT/test-$name"; done
  # GPU tensors from Node.js: the package as npm would install it (package.json, dist/, the
  # addon) plus the check script, and a node binary (the GPU machine may have none).
  npx napi build --platform --release --manifest-path crates/crossdev-node/Cargo.toml \
    --package-json-path package.json --output-dir native --no-js --dts napi.d.ts
  npx tsup --silent
  rm -rf "$OUT/pkg" && mkdir -p "$OUT/pkg/native" "$OUT/pkg/test/gpu"
  cp package.json "$OUT/pkg/"
  cp -r dist "$OUT/pkg/"
  cp native/crossdev.linux-x64-gnu.node "$OUT/pkg/native/"
  cp test/gpu/tensors.mjs "$OUT/pkg/test/gpu/"
  node_bin=$(readlink -f "$(command -v node)")
  if [ ! -f "$OUT/node.xz" ] || [ "$node_bin" -nt "$OUT/node.xz" ]; then
    xz -T2 -6 -c "$node_bin" > "$OUT/node.xz.tmp" && mv "$OUT/node.xz.tmp" "$OUT/node.xz"
  fi
  ls -la "$OUT" "$OUT/pkg"
  size=$(du -sm "$OUT" | cut -f1)
  echo "gpu-check: $OUT holds ${size} MB"
  [ "$size" -le 60 ] || { echo "gpu-check: $OUT is over 60 MB: it must be carried to the GPU machine (64 MiB at most)" >&2; exit 1; }
  exit 0
fi

[ -x "$OUT/gpu-bench" ] || { echo "gpu-check: run 'bash scripts/gpu-check.sh --prepare' first (on a machine with Rust) and bring $OUT along" >&2; exit 2; }
NVRTC_DIR="$PWD/.tools/python/nvidia/cu13/lib"
if [ ! -f "$NVRTC_DIR/libnvrtc.so.13" ]; then
  NVRTC_DIR=$(python3 -c 'import os, nvidia
for p in nvidia.__path__:
    d = os.path.join(p, "cu13", "lib")
    if os.path.exists(os.path.join(d, "libnvrtc.so.13")): print(d)' 2>/dev/null | head -n 1 || true)
fi
[ -n "$NVRTC_DIR" ] || echo "gpu-check: NVRTC (libnvrtc.so.13) not found in python3 or .tools/python: kernels cannot be compiled"
export LD_LIBRARY_PATH="$NVRTC_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# NCCL from PyTorch's pip dependency (nvidia-nccl-cu13): it ships only libnccl.so.2, a name
# cudarc does not try, so link it as libnccl.so.
NCCL_DIR=$(python3 -c 'import os, nvidia.nccl as n; print(os.path.join(list(n.__path__)[0], "lib"))' 2>/dev/null || true)
if [ -n "$NCCL_DIR" ] && [ -f "$NCCL_DIR/libnccl.so.2" ]; then
  mkdir -p "$OUT/lib" && ln -sf "$NCCL_DIR/libnccl.so.2" "$OUT/lib/libnccl.so"
  export LD_LIBRARY_PATH="$PWD/$OUT/lib:$NCCL_DIR:$LD_LIBRARY_PATH"
else
  echo "gpu-check: no pip NCCL found (python3 -c 'import nvidia.nccl'): the NCCL test will say skipped"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

status=0
# 8 logical GPUs on however many physical ones (the executor's tests that read it).
export CROSSDEV_VIRTUAL_GPUS=8
for t in "$OUT"/test-*; do
  echo "== $(basename "$t")"
  "$t" --test-threads=1 || status=1
done

echo "== gpu-bench (256 MiB × 8 inputs; ring over 8 logical GPUs)"
ours=$("$OUT/gpu-bench" 256 8) || status=1
echo "$ours"
echo "== GPU tensors from Node.js (test/gpu/tensors.mjs on 8 logical GPUs)"
node_summary='{"skipped": "not run"}'
if [ -f "$OUT/node.xz" ] && [ -f "$OUT/pkg/test/gpu/tensors.mjs" ]; then
  NODE="$OUT/node"
  [ -x "$NODE" ] && [ "$NODE" -nt "$OUT/node.xz" ] || { xz -dc "$OUT/node.xz" > "$NODE.tmp" && chmod +x "$NODE.tmp" && mv "$NODE.tmp" "$NODE"; }
  node_log="$OUT/gpu-tensors.log"
  node_status=0
  # Without NCCL, which combines in its own order on several GPUs (nccl_ops checks its route).
  CROSSDEV_NCCL=0 CROSSDEV_BACKEND=native "$NODE" --expose-gc "$OUT/pkg/test/gpu/tensors.mjs" > "$node_log" 2>&1 || node_status=$?
  grep -v '^{"gpuTensors"' "$node_log" | tail -n 40 || true
  node_summary=$(tail -n 1 "$node_log" | python3 -c 'import json, sys
try: print(json.dumps(json.loads(sys.stdin.read())["gpuTensors"]))
except Exception as e: print(json.dumps({"failed": 1, "error": "no summary line (%s)" % e}))')
  echo "$node_summary"
  [ "$node_status" = 0 ] || status=1
  # A skip on a machine with a GPU is a failure (e.g. the addon found no NVRTC).
  if echo "$node_summary" | grep -q '"skipped"' && nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: GPU tensors were skipped although nvidia-smi sees a GPU"
    status=1
  fi
else
  echo "gpu-check: $OUT/node.xz or $OUT/pkg missing: rerun --prepare (GPU tensors from Node.js not checked)"
  status=1
fi

echo "== PyTorch torch.stack(xs).sum(0)"
torch=$(python3 benches/gpu/torch_stack_sum.py 256 8 2>/dev/null) || torch='{"skipped": "PyTorch with CUDA not available in python3"}'
echo "$torch"

mkdir -p benches/results
file="benches/results/gpu-$(date -u +%Y-%m-%d).json"
python3 - "$file" "$ours" "$torch" "$status" "$node_summary" <<'PY'
import json, sys
file, ours, torch, status = sys.argv[1], json.loads(sys.argv[2] or "{}"), json.loads(sys.argv[3]), int(sys.argv[4])
gpu_tensors = json.loads(sys.argv[5])
report = {"crossdev": ours, "pytorch": torch, "gpu_tensors_from_node": gpu_tensors, "tests_passed": status == 0}
if "reduce_ms" in ours and "stack_sum_ms" in torch:
    report["speedup_over_torch_stack_sum"] = round(torch["stack_sum_ms"] / ours["reduce_ms"], 2)
json.dump(report, open(file, "w"), indent=2)
print(f"\n| GPU | reduce (GB/s) | d2d copy (GB/s) | reduce/copy | torch stack+sum (ms) | crossdev (ms) | speedup | ring, 8 logical GPUs (ms) | ring bus bw (GB/s) |")
print(f"| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
print(f"| {ours.get('gpu')} | {ours.get('reduce_gbs')} | {ours.get('copy_gbs')} | {ours.get('reduce_over_copy')} | {torch.get('stack_sum_ms', '-')} | {ours.get('reduce_ms')} | {report.get('speedup_over_torch_stack_sum', '-')} | {ours.get('ring_ms', '-')} | {ours.get('ring_busbw_gbs', '-')} |")
print(f"\nGPU tensors from Node.js: {gpu_tensors.get('passed', 0)} checks passed, {gpu_tensors.get('failed', 0)} failed" + (f", skipped: {gpu_tensors['skipped']}" if 'skipped' in gpu_tensors else ""))
print(f"\nwritten: {file}")
PY
exit $status
