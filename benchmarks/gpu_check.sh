#!/usr/bin/env bash
# The GPU check, one script: every method trains 4 steps of `dualloop train --profile smoke` in bf16 on
# CUDA (TRL's fused head with its Triton kernel), generation runs on CUDA (fp32 and bf16), one step
# equals TRL's DPOTrainer under bf16 on CUDA (the tests marked `gpu`), then the step times of every
# trainer beside TRL's on the GPU (benchmarks/bench_train_step.py --device cuda).
#
#     bash benchmarks/gpu_check.sh [LOG_DIR]     # from the repository root; LOG_DIR defaults to runs/gpu_check
#
# PYTHON names the interpreter (default .venv/bin/python; a GPU machine's venv is made with
# `make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`).
# The logs land in LOG_DIR; the exit status is non-zero when a test or the benchmark failed.
set -uo pipefail
log=${1:-runs/gpu_check}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$log"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

"$python" - <<'PY' 2>&1 | tee "$log/environment.txt"
import importlib.util

import torch, transformers, trl, peft, accelerate

print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, "
      f"trl {trl.__version__}, peft {peft.__version__}, accelerate {accelerate.__version__}")
print(f"CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name()}, bf16 supported: {torch.cuda.is_bf16_supported()}")
print(f"triton installed: {importlib.util.find_spec('triton') is not None}")
PY

tests=$(grep -l "pytest.mark.gpu" tests/test_*.py)
"$python" -m pytest -m gpu -v -s -p no:cacheprovider --durations=0 $tests 2>&1 | tee "$log/pytest.txt"
pytest_status=$?
"$python" benchmarks/bench_train_step.py --profile smoke --device cuda --steps 8 --warmup 2 --json 2>&1 |
    tee "$log/bench_train_step.txt"
bench_status=$?
echo "gpu_check: pytest exit $pytest_status, bench_train_step exit $bench_status; logs in $log"
[ "$pytest_status" -eq 0 ] && [ "$bench_status" -eq 0 ]
