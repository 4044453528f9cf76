#!/bin/bash
# On the GPU machine (JAX, no TensorFlow): train compact models side by side, within a time budget.
# bash scripts/gpu/train.sh BUDGET_S "NAME:WIDTH:EPOCHS:MORE moodbot train OPTIONS" ...
# Needs .gpu/ (scripts/gpu/pack.py, plus Keras, namex and optree wheels in .gpu/whl); results go
# to $OUT as tar parts of at most 15 MB. Size the epochs to end ~1 min before the budget: weight
# averaging and writing the bundle come after the last epoch, and a run killed there leaves nothing
# (two of three 80-epoch runs were lost that way at 5.5-6.5 s an epoch: budget 7 s an epoch for three).
# Each run also gets --time-limit: it skips the epochs that would end within 2 minutes of the
# budget and still writes its bundle (from a cosine schedule cut short, so size epochs anyway).
set -u
start=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
python3 scripts/gpu/unpack.py || exit 1
nvidia-smi -L; python3 -c "import jax, keras; print(jax.__version__, keras.__version__, jax.devices())"
budget=$1; shift
pids=()
for spec in "$@"; do
  IFS=: read -r name width epochs extra <<< "$spec"
  left=$((budget - ($(date +%s) - start)))
  # --time-limit must be positive: with under 3 minutes left a run could not train an epoch anyway.
  if [ $left -lt 180 ]; then echo "skipping $name: ${left} s of the budget left"; continue; fi
  minutes=$(awk "BEGIN { print ($left - 120) / 60 }")
  timeout $left python3 -m training.cli train data/fer2013/train runs/$name \
    --val-dir data/fer2013/val --width $width --epochs $epochs --patience $epochs --name moodnet --time-limit $minutes $extra \
    > runs_$name.log 2>&1 &
  pids+=($!)
done
(sleep 90; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv; uptime) &
for p in "${pids[@]}"; do wait $p; echo "exit $?"; done
for spec in "$@"; do
  name=${spec%%:*}
  cp runs_$name.log runs/$name/train.log 2>/dev/null
  grep -v "^loading" runs_$name.log | grep -E "Epoch [0-9]+/|val_acc|Validation|Wrote|Error|error" | tail -8
  tar cf - -C runs $name/bundle $name/metrics.json $name/history.csv $name/curves.png $name/train.log 2>/dev/null \
    | split -b 15m -d - $OUT/$name.tar.
done
ls -la $OUT; echo "total $(( $(date +%s) - start )) s"
