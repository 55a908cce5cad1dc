#!/usr/bin/env bash
# Reproduce docs/RESULTS.md on real radiographs:
#   1. set images aside with `cxr holdout` before any run (once; reused afterwards),
#   2. train each profile once per seed on the rest (the full flow: validation, gate, packaging),
#   3. evaluate every model of every run on the unseen images with `cxr evaluate`
#      (the packaged model when the gate passed, the run's checkpoint otherwise),
#   4. write docs/RESULTS.md with `cxr results`.
# Settings (environment): DATA, WORK, PROFILES, SEEDS, UNSEEN_PER_CLASS.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data/COVID-19_Radiography_Dataset}
WORK=${WORK:-runs/results}
PROFILES=${PROFILES:-recipe}
SEEDS=${SEEDS:-"1 2 3"}
UNSEEN_PER_CLASS=${UNSEEN_PER_CLASS:-200}
CXR=${CXR:-.venv/bin/cxr}
MODELS="resnet50_lstm resnet50 lstm"

if [ ! -d "$WORK/holdout" ]; then
  "$CXR" holdout --data-dir "$DATA" --out "$WORK/holdout" --per-class "$UNSEEN_PER_CLASS"
fi

for profile in $PROFILES; do
  for seed in $SEEDS; do
    run_id="$profile-seed$seed-$(date -u +%Y%m%d-%H%M%S)"
    run_dir="$WORK/runs/$run_id"
    status=0
    "$CXR" train --profile "$profile" --data-dir "$WORK/holdout/pool" --seed "$seed" \
      --runs-dir "$WORK/runs" --run-id "$run_id" > "$WORK/$run_id.train.json" || status=$?
    echo "run $run_id: cxr train exit $status"
    [ "$status" -eq 0 ] || [ "$status" -eq 4 ] || exit "$status"  # 4: gate rejected
    for model in $MODELS; do
      reference="$run_dir/models/$model.keras"
      if [ "$status" -eq 0 ] && [ "$model" = resnet50_lstm ]; then
        reference=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["model_tag"])' \
          "$WORK/$run_id.train.json")
      fi
      "$CXR" evaluate --model "$reference" --data-dir "$WORK/holdout/unseen" \
        --output "$run_dir/unseen/$model.json" > /dev/null
    done
  done
done

"$CXR" results --runs-dir "$WORK/runs" --out docs/RESULTS.md
