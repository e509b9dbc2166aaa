#!/usr/bin/env bash
# The GPU check, one script: every method trains 4 steps of `dualloop train --profile smoke` in bf16 on
# CUDA (TRL's fused head with its Triton kernel), generation runs on CUDA (fp32 and bf16), one step
# equals TRL's DPOTrainer under bf16 on CUDA (the tests marked `gpu`), then the step times of every
# trainer beside TRL's on the GPU (benchmarks/bench_train_step.py --device cuda).
#
#     bash benchmarks/gpu_check.sh [LOG_DIR]     # LOG_DIR defaults to runs/gpu_check of the repository
#
# PYTHON names the interpreter (default .venv/bin/python; a GPU machine's venv is made with
# `make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`). One GPU:
# CUDA_VISIBLE_DEVICES defaults to 0 (on several, HF's Trainer would wrap the model in DataParallel).
# The logs land in LOG_DIR; the exit status is non-zero without a CUDA device with bf16 and Triton, or
# when a test or the benchmark failed.
set -uo pipefail
mkdir -p "${1:-runs/gpu_check}"
log=$(cd "${1:-runs/gpu_check}" && pwd)
cd "$(dirname "$0")/.." || exit 1
python=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}

"$python" - <<'PY' 2>&1 | tee "$log/environment.txt"
import importlib.util

import torch, transformers, trl, peft, accelerate

print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, "
      f"trl {trl.__version__}, peft {peft.__version__}, accelerate {accelerate.__version__}")
print(f"CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name()}, bf16 supported: {torch.cuda.is_bf16_supported()}")
triton = importlib.util.find_spec("triton") is not None
print(f"triton installed: {triton}")
if not (torch.cuda.is_available() and torch.cuda.is_bf16_supported() and triton):
    raise SystemExit("gpu_check: needs a CUDA device with bf16 and Triton; the gpu tests would only skip here")
PY
[ $? -eq 0 ] || exit 1

tests=$(grep -l "pytest.mark.gpu" tests/test_*.py)
"$python" -m pytest -m gpu -v -s -p no:cacheprovider --durations=0 $tests 2>&1 | tee "$log/pytest.txt"
pytest_status=$?
"$python" benchmarks/bench_train_step.py --profile smoke --device cuda --steps 30 --warmup 5 --json 2>&1 |
    tee "$log/bench_train_step.txt"
bench_status=$?
echo "gpu_check: pytest exit $pytest_status, bench_train_step exit $bench_status; logs in $log"
[ "$pytest_status" -eq 0 ] && [ "$bench_status" -eq 0 ]
