#!/usr/bin/env bash
# Device smoke test for the next lent GPU (issue 14), in the repository root, offline, in about 10 minutes on
# one H100:
#   1. versions: NVIDIA driver and its CUDA, the CUDA toolkit, cuda-python and the runtime it bundles, torch and
#      its CUDA, TensorRT (if importable), ONNX Runtime and its providers
#   2. the torch-free CUDA backend on the real cuda-python (start-up version check, memory round trip, events)
#   3. torch CUDA FP16 latency, original vs compressed, batch 1/8/32, ranks unaligned / --align 8 / --align 64,
#      on the digits default and timm:deit_small_patch16_224; ONNX Runtime CUDA EP where installed
#   4. `pela-export run` on the embedded digits default, with defaults (ends in a bundle)
#   5. `pela-export device-bench` on the digits bundle (TensorRT, else ONNX Runtime, said in its report)
#   6. `pela-export device-latency` on a --rank-policy latency bundle of the digits default, then a workstation
#      `compress --latency-table` that ranks by the table it wrote
#   7. `pytest -m tensorrt` where TensorRT is importable (real builds, the torch-free runner, device-bench)
# Everything goes to bench/results/gpu/<date>-<device>/ (meta.json: device, versions, date, command and each
# part's status, seconds and skip reason; logs/), and when $OUT is set also to $OUT/gpu-smoke.tar.gz.
# A part whose needs are missing is skipped with the reason printed; exit status 1 when a part that ran failed.
#
# Usage: bash bench/device_smoke.sh [--dry-run] [--quick] [--results DIR] [--budget SECONDS] [--scale N]
#   --dry-run  print what each part would run or why it would be skipped; runs nothing but the version probe
#   --quick    smaller settings (batch 1/8, two alignments, 30 runs; digits run without bench/report)
#   --budget   seconds for all parts together (default 570); --scale N multiplies each part's time limit (slow CPUs)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
COMMAND="bash bench/device_smoke.sh${*:+ $*}"
DRY=0 QUICK=0 RESULTS="" BUDGET=570 SCALE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --quick) QUICK=1 ;;
    --results) RESULTS="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    --scale) SCALE="$2"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "device_smoke.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
START=$(date +%s)
DATE=$(date -u +%Y-%m-%d)
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
SLUG=$(printf '%s' "${GPU_NAME:-cpu}" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9.' '-' | sed 's/-*$//')
RES="${RESULTS:-bench/results/gpu/$DATE-$SLUG}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pela-smoke.XXXXXX")
mkdir -p "$RES/logs"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PELA_EXPORT_CACHE="$WORK/cache"
STATUS="$RES/parts.tsv"
: > "$STATUS"

say() { echo "device_smoke: $*"; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$STATUS"; }  # part, status, seconds, note
skip() { say "SKIP $1: $2"; record "$1" skipped 0 "$2"; }

# part NAME TIMEOUT COMMAND...: run with a timeout (never past the budget), log to logs/NAME.log
part() {
  local name="$1" limit=$(( $2 * SCALE )); shift 2
  local left=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$DRY" = 1 ]; then say "would run $name (<= ${limit}s): $*"; record "$name" dry-run 0 "$*"; return 0; fi
  if [ "$left" -lt 20 ]; then skip "$name" "the ${BUDGET}s budget is spent"; return 0; fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "RUN $name (<= ${limit}s): $*"
  local t0=$(date +%s) rc
  timeout "$limit" "$@" > "$RES/logs/$name.log" 2>&1; rc=$?
  local dt=$(( $(date +%s) - t0 ))
  tail -n 5 "$RES/logs/$name.log" | sed 's/^/    /'
  if [ "$rc" = 0 ]; then record "$name" ok "$dt" ""
  elif [ "$rc" = 124 ]; then say "TIMEOUT $name after ${dt}s"; record "$name" timeout "$dt" "killed after ${limit}s"
  else say "FAILED $name (exit $rc)"; record "$name" failed "$dt" "exit $rc, see logs/$name.log"; fi
}

has() { "$PY" -c "import $1" >/dev/null 2>&1; }

# 0. the checkout, importable without the network (no dependency is downloaded)
if [ "$DRY" = 0 ]; then
  "$PY" -m pip install -q -e . --no-deps --no-build-isolation > "$RES/logs/install.log" 2>&1 \
    || say "note: pip install -e . failed (see logs/install.log); using PYTHONPATH=$PWD"
fi
has pela_export || { say "pela_export is not importable with $PY; giving up"; exit 2; }

# 1. versions (also in dry runs: they decide what runs)
"$PY" bench/gpu_latency.py --versions "$RES/versions.json" > "$RES/logs/versions.log" 2>&1 \
  || say "note: version probe failed (see logs/versions.log)"
"$PY" - "$RES/versions.json" <<'PYEOF' || true
import json, sys
v = json.load(open(sys.argv[1]))
d, t, o = v["device_facts"], v.get("torch") or {}, v.get("onnxruntime") or {}
py = d.get("cuda_python") or {}
print(f"    nvidia-smi: {v.get('nvidia_smi') or 'not available'}\n"
      f"    CUDA: driver {d.get('cuda_driver')}, toolkit {d.get('cuda_toolkit')}; cuda-python: "
      f"{py.get('package')} (bundles CUDA {py.get('runtime')})\n"
      f"    torch {t.get('version')} (CUDA {t.get('cuda')}, GPU: {t.get('gpu')}); TensorRT: {d.get('tensorrt')}\n"
      f"    onnxruntime {o.get('version')}: {', '.join(o.get('providers') or [])}")
PYEOF
TORCH_CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
SIMPLIFIER=()
has onnxsim || { has onnxslim && SIMPLIFIER=(--simplifier onnxslim) || SIMPLIFIER=(--simplifier none); }

# 2. the torch-free CUDA backend on the real cuda-python
if "$PY" -c 'from pela_export.tensorrt.cuda_backend import import_cudart as f; raise SystemExit(f() is None)' 2>/dev/null
then part cuda-python 120 "$PY" -m pytest -q -p no:cacheprovider -k real tests/tensorrt/test_trt_cuda_backend.py \
       tests/tensorrt/test_trt_cuda_versions.py tests/runtime/test_runtime_device.py
else skip cuda-python "cuda-python (cuda.bindings / cuda.cudart) is not importable"; fi

# 3. torch CUDA FP16 latency (and ONNX Runtime's CUDA EP), original vs compressed; trains the digits default
#    into the cache, which the digits run below reuses
LAT=(--model default --model timm:deit_small_patch16_224 --out "$RES" --work "$WORK/latency")
[ "$QUICK" = 1 ] && LAT+=(--aligns none,8 --batch-sizes 1,8 --runs 30 --warmup 5)
if [ "$TORCH_CUDA" = 1 ]; then part gpu-latency 300 "$PY" bench/gpu_latency.py "${LAT[@]}"
else skip gpu-latency "torch sees no CUDA GPU (torch CUDA FP16 and ONNX Runtime CUDA EP latency need one)"; fi

# 4. the digits default, with defaults
DIGITS=(--out "$WORK/digits" --no-progress "${SIMPLIFIER[@]}")
[ "$QUICK" = 1 ] && DIGITS+=(--skip bench --skip report --calib-samples 32 --eval-samples 200)
part digits-run 360 "$PY" -m pela_export run "${DIGITS[@]}"
for f in report.md report.json; do [ -f "$WORK/digits/$f" ] && cp "$WORK/digits/$f" "$RES/digits-$f"; done

# 5. device-bench on the bundle: TensorRT where it runs, else ONNX Runtime (its report says which and why)
if [ -f "$WORK/digits/bundle.tar.gz" ] || [ "$DRY" = 1 ]; then
  part device-bench 240 "$PY" -m pela_export device-bench "$WORK/digits/bundle.tar.gz" --out "$RES/device-bench" \
    --runs 50 --warmup 5
else skip device-bench "no bundle: the digits run did not finish (see logs/digits-run.log)"; fi

# 6. the device's own per-layer latency table: a latency-policy bundle of the digits default, device-latency on it
#    (one TensorRT fp16 engine per layer graph, else ONNX Runtime), then a workstation run ranking by that table
LATRUN=(--out "$WORK/digits-latency" --no-progress "${SIMPLIFIER[@]}" --rank-policy latency --latency-budget 0.7
        --skip bench --skip report --precision fp16 --calib-samples 32 --eval-samples 200)
part latency-run 240 "$PY" -m pela_export run "${LATRUN[@]}"
if [ -f "$WORK/digits-latency/bundle.tar.gz" ] || [ "$DRY" = 1 ]; then
  part device-latency 240 "$PY" -m pela_export device-latency "$WORK/digits-latency/bundle.tar.gz" \
    --out "$RES/device-latency" --runs 30 --warmup 5
  part latency-table-run 120 "$PY" -m pela_export compress --out "$WORK/digits-latency-device" --rank-policy latency \
    --latency-budget 0.7 --latency-table "$RES/device-latency/latency_table.json"
else skip device-latency "no bundle: the latency-policy run did not finish (see logs/latency-run.log)"; fi

# 7. TensorRT's own tests (last: their digits run reuses the cached default)
if has tensorrt; then
  part pytest-tensorrt 300 "$PY" -m pytest -q -p no:cacheprovider -m tensorrt -rs tests/tensorrt \
    tests/runtime/test_runtime_real_device.py
else skip pytest-tensorrt "TensorRT Python bindings are not importable (\`import tensorrt\` failed)"; fi

# meta.json and summary.md: device, versions, date, command, parts
"$PY" - "$RES" "$COMMAND" "$DATE" "${GPU_NAME:-none}" "$(( $(date +%s) - START ))" "$DRY" <<'PYEOF'
import json, subprocess, sys
from pathlib import Path
res, command, date, gpu, seconds, dry = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6] == "1"
parts = [dict(zip(("part", "status", "seconds", "note"), line.split("\t"))) for line in
         (res / "parts.tsv").read_text().splitlines() if line.strip()]
try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
except (OSError, subprocess.CalledProcessError):
    commit = None
versions = json.loads((res / "versions.json").read_text()) if (res / "versions.json").is_file() else None
meta = {"date": date, "device": gpu, "command": command, "commit": commit, "dry_run": dry, "seconds": seconds,
        "parts": parts, "versions": versions}
(res / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
rows = [f"| {p['part']} | {p['status']} | {p['seconds']} | {p['note']} |" for p in parts]
(res / "summary.md").write_text("\n".join([f"# Device smoke test: {gpu}, {date}", "",
    f"`{command}` ({seconds} s{', dry run' if dry else ''}; commit {commit or 'unknown'}). Versions: versions.json; "
    "logs: logs/.", "", "| part | status | seconds | note |", "|---|---|---:|---|", *rows]) + "\n")
print((res / "summary.md").read_text())
PYEOF
rm -f "$STATUS"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  tar czf "$OUT/gpu-smoke.tar.gz" -C "$(dirname "$RES")" "$(basename "$RES")" && say "copied to \$OUT/gpu-smoke.tar.gz"
fi
rm -rf "$WORK"
say "results in $RES"
if grep -q '"status": "failed"\|"status": "timeout"' "$RES/meta.json"; then exit 1; fi
exit 0
