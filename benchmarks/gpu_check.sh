#!/usr/bin/env bash
# The GPU figures in one run, on a machine with CUDA and the real samples at ../shared/data:
#   1. the CUDA tests (tests/mlcore/test_cuda.py) and the mlcore tests that train and infer, on the GPU;
#   2. inference speed on the GPU with its default backbone (benchmarks/infer_speed.py --device cuda);
#   3. all three stages on the real samples with the GPU's default backbone (ResNet-18, 3x3 stem), seed
#      after seed while the time given lasts, each seed's wall time against the CPU's 30-minute budget.
#
#   benchmarks/gpu_check.sh OUT_DIR [SECONDS]      (PYTHON=... to use another interpreter than .venv's)
#
# Writes tests.txt, infer_gpu.txt and train_r18_seedN.log / train_r18_seedN_results.json (train_real
# results files: `train_real.py --combine` reads them) under OUT_DIR; SECONDS (default 1800) bounds
# the whole run. Needs no Django, Celery or database: the mlcore tests run without the root conftest.
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [SECONDS]}
BUDGET=${2:-1800}
PYTHON=${PYTHON:-.venv/bin/python}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }

nvidia-smi -L 2>&1
"$PYTHON" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.cuda.is_available() and torch.cuda.get_device_name())"

echo "== CUDA tests at $(elapsed)s"
timeout $(( BUDGET / 6 )) "$PYTHON" -m pytest -q -p no:cacheprovider -p no:django --confcutdir=tests/mlcore \
  tests/mlcore/test_cuda.py tests/mlcore/test_backbones.py tests/mlcore/test_checkpoint.py \
  tests/mlcore/test_training.py tests/mlcore/test_predict.py tests/mlcore/test_infer.py tests/mlcore/test_stages.py \
  tests/mlcore/test_compare_models.py tests/mlcore/test_crop_inputs.py tests/mlcore/test_cli_end_to_end.py \
  > "$OUT_DIR/tests.txt" 2>&1
echo "pytest exit $?"; grep -E "passed|failed|FAILED|SKIPPED|^E " "$OUT_DIR/tests.txt" | tail -20

echo "== inference speed at $(elapsed)s"
timeout 120 "$PYTHON" benchmarks/infer_speed.py --device cuda --backbone auto --threads 8 --repeats 5 \
  > "$OUT_DIR/infer_gpu.txt" 2>&1
echo "infer_speed exit $?"; cat "$OUT_DIR/infer_gpu.txt"

for SEED in 0 1 2 3 4; do
  LEFT=$(( BUDGET - $(elapsed) ))
  [ "$LEFT" -lt 90 ] && break
  echo "== all three stages, seed $SEED, at $(elapsed)s (${LEFT}s left)"
  timeout "$LEFT" "$PYTHON" benchmarks/train_real.py --skip-single --tta --threads 8 --concepts none --seeds "$SEED" \
    --set backbone=auto --set 'backbone_kwargs={}' --set device=auto --out "/tmp/gpu_check_r18_$SEED" \
    > "$OUT_DIR/train_r18_seed$SEED.log" 2>&1
  echo "train_real exit $?"
  grep -v -E "epoch [0-9]+/[0-9]+ loss|^read |config:" "$OUT_DIR/train_r18_seed$SEED.log" | tail -40
  cp "/tmp/gpu_check_r18_$SEED/results.json" "$OUT_DIR/train_r18_seed${SEED}_results.json" 2>/dev/null
done
echo "== done at $(elapsed)s"
