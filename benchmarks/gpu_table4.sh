#!/usr/bin/env bash
# Table IV (CIFAR-10) on a bare GPU machine: venv, torch, the project, then a shortened run.
#
#   OUT=/path/for/results bash benchmarks/gpu_table4.sh            # ResNet-20, 3 methods, 30 epochs, bf16
#   MODELS=resnet56,vgg16 EPOCHS=200 bash benchmarks/gpu_table4.sh # the paper's schedule
#   bash benchmarks/gpu_table4.sh --dry-run                         # print the steps, check the plan, train nothing
#
# Settings (environment): OUT (results, log and per-run metrics; default ./out/table4_gpu), MODELS,
# METHODS, EPOCHS, DEVICE (cuda), EXTRA (more table4_cifar10.py options), RUNS (run folders with
# checkpoints; rerunning the script resumes them), CGAP_DATA_DIR (the folder holding cifar-10/; default
# ./shared/data, then ../shared/data), PYTHON (python3), VENV (.venv-gpu).
# A python that already has a CUDA torch is reused (the venv sees its packages); otherwise
# `pip install torch` fetches the CUDA build from PyPI. Nothing here downloads the dataset.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
if [ $# -gt 0 ]; then echo "usage: $0 [--dry-run]   (settings come from the environment, see the header)" >&2; exit 2; fi

OUT=${OUT:-$PWD/out/table4_gpu}
MODELS=${MODELS:-resnet20}
METHODS=${METHODS:-baseline,cgap,pruning-only}
EPOCHS=${EPOCHS:-30}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}
RUNS=${RUNS:-/tmp/table4_runs}
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-gpu}

step() { echo "+ $*"; if [ "$DRY" = 0 ]; then "$@"; fi; }

if [ -z "${CGAP_DATA_DIR:-}" ]; then
  for d in shared/data ../shared/data; do
    if [ -d "$d/cifar-10" ]; then CGAP_DATA_DIR=$(cd "$d" && pwd); break; fi
  done
fi
if [ -z "${CGAP_DATA_DIR:-}" ] || [ ! -d "$CGAP_DATA_DIR/cifar-10/cifar-10-batches-py" ]; then
  echo "error: no CIFAR-10 python batches found; set CGAP_DATA_DIR to the folder holding cifar-10/cifar-10-batches-py" >&2
  exit 2
fi
export CGAP_DATA_DIR PYTHONUNBUFFERED=1
mkdir -p "$OUT"

if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  HAVE_CUDA_TORCH=1
else
  HAVE_CUDA_TORCH=0
fi
echo "python: $("$PYTHON" --version 2>&1); CUDA torch already installed: $HAVE_CUDA_TORCH; data: $CGAP_DATA_DIR"
if [ "$HAVE_CUDA_TORCH" = 1 ]; then
  step "$PYTHON" -m venv --system-site-packages "$VENV"
  step "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e .
else
  step "$PYTHON" -m venv "$VENV"
  step "$VENV/bin/pip" install -q torch
  step "$VENV/bin/pip" install -q -e .
fi
if [ "$DRY" = 0 ]; then
  PY="$VENV/bin/python"
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU'; print(torch.__version__, torch.cuda.get_device_name(0))"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
else
  PY=${PLAN_PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo "$PYTHON")}  # the plan needs no GPU
fi

# shellcheck disable=SC2086
CMD=("$PY" benchmarks/table4_cifar10.py --device "$DEVICE" --models "$MODELS" --methods "$METHODS"
     --epochs "$EPOCHS" --bf16 --out "$RUNS" --results "$OUT/table4_cifar10.json" $EXTRA)
echo "+ ${CMD[*]}"
"${CMD[@]}" --plan | tee "$OUT/plan.txt"
if [ "$DRY" = 1 ]; then
  echo "dry run: nothing trained (the plan above is what the run would do)"
  exit 0
fi
"${CMD[@]}" 2>&1 | tee "$OUT/log.txt"
# the per-epoch metrics of each run, one folder down so they come back with the results
for m in ${MODELS//,/ }; do
  for d in "$RUNS/$m"/*/; do
    if [ -f "$d/metrics.jsonl" ]; then cp "$d/metrics.jsonl" "$OUT/metrics_${m}_$(basename "$d").jsonl"; fi
  done
done
echo "results: $OUT/table4_cifar10.json"
