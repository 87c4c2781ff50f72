#!/usr/bin/env bash
# One prepared run of every GPU benchmark, for the `device` tool (a lent H100/H200, ~15 min per session).
#
#   1. here, once: download the extra wheels for the device's Python (3.12) into .whl/ (git-ignored):
#        P="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
#           --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl"
#        pip download --no-deps $P mlxtend torch-lucent kornia kornia_rs decorator && pip download $P ipython
#   2. run (device tool): command "bash benchmarks/gpu_suite.sh", carry [".whl"], timeout_s 540
#   3. the tables land in $OUT/*.txt; copy the figures into benchmarks/README.md with the device name.
#
# Each part has its own time limit so one slow part cannot eat the others; PART=throughput|overhead|quality
# runs one part only.
set -uo pipefail
OUT=${OUT:-/tmp/ldam_out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/device.txt" 2>&1
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" >> "$OUT/device.txt"
cat "$OUT/device.txt"
part() { [ -z "${PART:-}" ] || [ "$PART" = "$1" ]; }
if part throughput; then
  timeout 240 python3 benchmarks/throughput.py 2>&1 | grep -v Warning | tee "$OUT/throughput.txt"
fi
if part overhead; then
  timeout 260 python3 benchmarks/overhead.py --epochs 3 2>&1 | grep "^|\|^device\|LDAMCallback: step\|skipping" \
    | tee "$OUT/overhead.txt"
fi
if part quality; then  # quality with the speed options on (must not lower the figures)
  timeout 200 python3 benchmarks/quality.py --lambdas 0,default --set autocast_dtype=bfloat16 \
    --set channels_last=true 2>&1 | tail -8 | tee "$OUT/quality_bf16_cl.txt"
fi
