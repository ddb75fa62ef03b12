#!/usr/bin/env bash
# Runs every test: the Rust tests (cargo test), then the ava suite once per backend (native addon,
# WebAssembly), then the packaging test (scripts/pack-test.sh: both tarballs installed into an empty
# project with no Rust on PATH). Ends with one line "N passed, N failed" summing all of them.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT
passed=0
failed=0
status=0

echo "== cargo test (crossdev-core, crossdev-cuda)"
# NVRTC from the project-local wheel, for the kernel compile test (no GPU needed).
export LD_LIBRARY_PATH="$PWD/.tools/python/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cargo test --release -p crossdev-core -p crossdev-cuda 2>&1 | tee "$LOG/cargo.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
read -r p f < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$LOG/cargo.txt")
passed=$((passed + p)); failed=$((failed + f))

for b in native wasm; do
  echo "== ava ($b backend)"
  # Failures, the summary, and every skipped test with the reason its title gives.
  CROSSDEV_BACKEND=$b npx ava --tap 2>&1 | tee "$LOG/ava-$b.txt" | grep -E '^(not ok|# )| # SKIP$' || true
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  p=$(awk '/^# pass/ { print $3 }' "$LOG/ava-$b.txt"); f=$(awk '/^# fail/ { print $3 }' "$LOG/ava-$b.txt")
  if [ -z "$p" ]; then
    echo "ava ($b) printed no summary:"; tail -40 "$LOG/ava-$b.txt"; status=1; f=$((${f:-0} + 1))
  fi
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  grep -E '^not ok' -A 30 "$LOG/ava-$b.txt" | head -200 || true
done

bash scripts/pack-test.sh 2>&1 | tee "$LOG/pack.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
read -r p f < <(sed -n 's/^pack-test: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$LOG/pack.txt") || true
if [ -z "${p:-}" ]; then
  echo "pack-test printed no summary"; status=1; p=0; f=1
fi
passed=$((passed + p)); failed=$((failed + f))

echo "${passed} passed, ${failed} failed"
exit $status
