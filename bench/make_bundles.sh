#!/usr/bin/env bash
# Build the deployment bundles of the digits default and deit_small_patch16_224 with the README's main command,
# check them as a device would (verify + device-bench; on a machine without TensorRT that is the ONNX Runtime
# fallback, said so in the reports), merge workstation and device reports, and copy the small files (reports,
# charts, deploy.json, SHA256SUMS — not the ONNX files or tarballs) to bench/results/bundles/<model>/.
#
#   bash bench/make_bundles.sh [WORK_DIR] [digits|deit|all]   # ~25 min on 2 CPU cores (deit dominates)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d)}"
which="${2:-all}"
dest=bench/results/bundles
runs="${RUNS:-30}"

one() {  # name, then the model argument(s) of `pela-export run`
  local name="$1"; shift
  local out="$work/$name"
  pela-export run "$@" --out "$out"
  pela-export verify "$out/bundle.tar.gz"
  pela-export device-bench "$out/bundle.tar.gz" --out "$out/device" --runs "$runs" || [ $? -eq 1 ]
  pela-export report "$out" "$out/device"
  rm -rf "${dest:?}/$name" && mkdir -p "$dest/$name"
  cp "$out"/report.{json,md} "$out"/ranks.md "$dest/$name/"
  cp -r "$out/charts" "$dest/$name/charts"
  cp "$out"/bundle/{deploy.json,SHA256SUMS} "$dest/$name/"
  cp "$out"/device/device-report.{json,md} "$dest/$name/"
  cp -r "$out/comparison" "$dest/$name/comparison"
  du -sh "$dest/$name"
}

if [ "$which" = all ] || [ "$which" = digits ]; then one digits-vit; fi
if [ "$which" = all ] || [ "$which" = deit ]; then one deit_small_patch16_224 timm:deit_small_patch16_224; fi
echo "work files (ONNX, bundles) left in $work"
