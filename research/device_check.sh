#!/usr/bin/env bash
# The accuracy check a GPU host can make and a 2-core CPU cannot: one profile (recipe or
# paper) at 224 px on the real sample, on Keras's JAX backend, through research/gpu_run.py:
# test and unseen accuracy, wall time, and each model's OOD refusals of Tuberculosis films.
#
# Prepared here, once (both folders are ignored through .git/info/exclude):
#   .venv/bin/cxr holdout --data-dir ../shared/data --out /tmp/holdout --per-class 200 --seed 2026
#   .venv/bin/python -m research.gpu_run bundle --pool /tmp/holdout/pool \
#       --unseen /tmp/holdout/unseen --out .bundle --size 224 \
#       --tuberculosis ../shared/data/TB_Chest_Radiography_Database/Tuberculosis
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl \
#       keras pydantic pydantic_core annotated-types typing-inspection namex optree
#       (the versions of .venv; the H200 image has the rest)
# Then on the device, from the repository root (about 62 MiB travel):
#   run(command="bash research/device_check.sh recipe", carry=[".whl", ".bundle"])
# It writes $OUT/gpu_run_<profile>.json, its log and the GPU's name.
set -euo pipefail
PROFILE=${1:-recipe}
OUT=${OUT:-runs/device}
PYTHON=${PYTHON:-python3}
BUNDLE=${BUNDLE:-.bundle}
mkdir -p "$OUT"
if [ -d .whl ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv >"$OUT/gpu.txt" 2>&1 || true
# shellcheck disable=SC2086  # EXTRA_SET: more --set key=value options, split on spaces
"$PYTHON" -m research.gpu_run train --bundle "$BUNDLE" --profile "$PROFILE" \
  --set preprocess.image_size=224 ${EXTRA_SET:-} --out "$OUT/gpu_run_$PROFILE.json" \
  2>&1 | tee "$OUT/$PROFILE.log"
