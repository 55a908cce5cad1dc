#!/usr/bin/env bash
# Reproduce research/RESULTS.md on real radiographs:
#   1. set images aside with `cxr holdout` before any run (once; reused afterwards),
#   2. train each profile once per seed on the rest (the full flow: validation, gate, packaging),
#   3. evaluate every model of every run on the unseen images with `cxr evaluate`
#      (the packaged model when the gate passed, the run's checkpoint otherwise),
#   4. copy each run's small record (config, metrics, unseen metrics) into the committed
#      research/results/runs/ and write research/RESULTS.md from those records
#      (`python -m research.results`).
# Settings (environment): DATA, WORK, PROFILES, SEEDS, UNSEEN_PER_CLASS, SETTINGS
# (SETTINGS="train.epochs=32 ..." trains a variant: each k=v becomes a --set).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data/COVID-19_Radiography_Dataset}
WORK=${WORK:-runs/results}
PROFILES=${PROFILES:-recipe}
SEEDS=${SEEDS-"1 2 3"}  # SEEDS="" trains nothing: evaluate what is there, write the report
UNSEEN_PER_CLASS=${UNSEEN_PER_CLASS:-200}
CXR=${CXR:-.venv/bin/cxr}
PYTHON=${PYTHON:-.venv/bin/python}
SETTINGS=${SETTINGS:-}
overrides=()
for setting in $SETTINGS; do overrides+=(--set "$setting"); done

if [ ! -f "$WORK/holdout/holdout.csv" ]; then  # written last; cxr holdout refuses a partial one
  "$CXR" holdout --data-dir "$DATA" --out "$WORK/holdout" --per-class "$UNSEEN_PER_CLASS"
fi

for profile in $PROFILES; do
  for seed in $SEEDS; do
    run_id="$profile-seed$seed-$(date -u +%Y%m%d-%H%M%S)"
    status=0
    "$CXR" train --profile "$profile" --data-dir "$WORK/holdout/pool" --seed "$seed" \
      --runs-dir "$WORK/runs" --run-id "$run_id" "${overrides[@]}" \
      > "$WORK/$run_id.train.log" || status=$?
    echo "run $run_id: cxr train exit $status"
    [ "$status" -eq 0 ] || [ "$status" -eq 4 ] || exit "$status"  # 4: the gate rejected
  done
done

# every model of every run not evaluated yet: the packaged one by its tag, others by checkpoint
for run_dir in "$WORK"/runs/*/; do
  for checkpoint in "$run_dir"models/*.keras; do
    [ -f "$checkpoint" ] || continue
    model=$(basename "$checkpoint" .keras)
    out="$run_dir/unseen/$model.json"
    [ -f "$out" ] && continue
    reference=$("$PYTHON" - "$run_dir" "$model" "$checkpoint" <<'PY'
import json, sys
from pathlib import Path
run, model, checkpoint = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
metrics = json.loads((run / "metrics.json").read_text())
config = json.loads((run / "config.json").read_text())
shipped = "package" in metrics and config["gate"]["model"] == model
if metrics.get("models"):  # a run that stopped before evaluation is not reported
    print(metrics["package"]["model_tag"] if shipped else checkpoint)
PY
)
    [ -n "$reference" ] || continue
    echo "unseen images: $model of $(basename "$run_dir") ($reference)"
    "$CXR" evaluate --model "$reference" --data-dir "$WORK/holdout/unseen" --output "$out" \
      > /dev/null
  done
done

# records: research/results/runs
"$PYTHON" -m research.results --runs-dir "$WORK/runs" --out research/RESULTS.md
