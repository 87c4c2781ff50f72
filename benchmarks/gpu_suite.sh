#!/usr/bin/env bash
# One prepared run of every GPU benchmark, for the `device` tool (a lent H100/H200, ~15 min per session).
#
#   1. here, once: download the extra wheels for the device's Python (3.12) into .whl/ (git-ignored):
#        P="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
#           --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl"
#        pip download --no-deps $P mlxtend torch-lucent kornia kornia_rs decorator && pip download $P ipython
#   2. run (device tool), carry [".whl"], in calls that fit one session's 15 minutes with the start:
#        "PART=gputests,throughput bash benchmarks/gpu_suite.sh"  (timeout_s 330; the GPU tests first, ~20 s,
#                                                    they are the first run of cuda_graph on a GPU; then ~4 min)
#        "PART=overhead bash benchmarks/gpu_suite.sh"    (timeout_s 330; ~4-5 min, estimated)
#      and "PART=quality ..." (quality with bf16 + channels_last + cuda_graph, ~3 min) only if time is left.
#   3. the tables land in $OUT/*.txt; copy the figures into benchmarks/README.md with the device name.
#
# Each part has its own time limit so one slow part cannot eat the others. PART: comma-separated parts
# (default: all four). QUICK=1: CPU-sized smoke run of the same commands (checks the script, not figures),
# e.g. here: QUICK=1 SKIP_WHEELS=1 PY=.venv/bin/python OUT=/tmp/gs bash benchmarks/gpu_suite.sh
set -uo pipefail
OUT=${OUT:-/tmp/ldam_out}
mkdir -p "$OUT"
PY=${PY:-python3}
if [ -d .whl ] && [ -z "${SKIP_WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/device.txt" 2>&1
"$PY" -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" >> "$OUT/device.txt"
cat "$OUT/device.txt"
part() { [ -z "${PART:-}" ] || [[ ",$PART," == *",$1,"* ]]; }
if [ -n "${QUICK:-}" ]; then
  THR="--quick --steps 2 --lucent-steps 2 --only main,lucent"; OVH="--epochs 1 --configs mnist --steps 2 --chains 2 --no-ema"
  QUA="--set steps=8 --epochs 1"
else
  THR=""; OVH="--epochs 10 --cifar-images 5000"; QUA=""
fi
if part gputests; then
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15 | tee "$OUT/gputests.txt"
fi
if part throughput; then
  timeout 280 "$PY" benchmarks/throughput.py $THR 2>&1 | grep -v Warning | tee "$OUT/throughput.txt"
fi
if part overhead; then
  timeout 310 "$PY" benchmarks/overhead.py $OVH 2>&1 | grep "^|\|^device\|LDAMCallback: step\|skipping" \
    | tee "$OUT/overhead.txt"
fi
if part quality; then  # quality with the speed options on (must not lower the figures)
  CG=""; [ -z "${QUICK:-}" ] && CG="--set cuda_graph=true"
  timeout 240 "$PY" benchmarks/quality.py --lambdas 0,default --set autocast_dtype=bfloat16 \
    --set channels_last=true $CG $QUA 2>&1 | tail -8 | tee "$OUT/quality_speed_options.txt"
fi
