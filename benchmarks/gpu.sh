#!/usr/bin/env bash
# One prepared run of the performance measurements on whatever accelerator is present, for NL3D,
# GLTR and TF-CLIP in float32 and bfloat16: train-step time, MFU against the device's peak, peak memory,
# preflight's predictions next to the measurements, the input pipeline's clips/s with this host's
# cores, and evaluation frames/s. Every result lands in one folder with a summary table.
#
#   bash benchmarks/gpu.sh [OUT_DIR]        # default OUT_DIR: benchmarks/results/gpu
#   SPECS="tfclip:bfloat16 tfclip:float32" bash benchmarks/gpu.sh OUT_DIR   # a subset
#
# On a GPU or TPU it runs the recipes' frame size (256x128) at larger batches (NL3D 128 clips of 8
# frames, GLTR 32 clips of 16, TF-CLIP's ViT-B/16 32 clips of 8) and stops starting new measurements
# after BUDGET_S seconds (default 450: the whole run stays under 8 minutes); bfloat16 first, NL3D's
# and TF-CLIP's, then float32. Without an accelerator it runs the same steps on tiny networks at
# 64x32 with the CPU peak estimate, which is how the script is tested. A failed measurement is
# recorded in the summary and the run goes on; the exit status is non-zero if any failed.
set -uo pipefail

cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
PYTHON=${PYTHON:-python}
BUDGET_S=${BUDGET_S:-450}
mkdir -p "$OUT/logs"
# Compiled programs are shared between the processes below (same steps, same shapes).
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1

BACKEND=$($PYTHON -c 'import jax; print(jax.default_backend())' 2>/dev/null) || BACKEND=none
CORES=$($PYTHON -c 'import os; print(len(os.sched_getaffinity(0)))')
if [[ $BACKEND == gpu || $BACKEND == tpu ]]; then
  SIZE=(); PREFLIGHT_SIZE=()
  NL3D=(--batch 128 --clip_len 8); GLTR=(--batch 32 --clip_len 16); TFCLIP=(--batch 32 --clip_len 8)
  EXTRACT=(--tracklets 64 --frames 64); STEPS=(--steps 5); PIPELINE_S=10
else
  SIZE=(--height 64 --width 32 --stage_sizes 1,1,1,1 --width_channels 8 --vit_size 64,2,4,64)
  PREFLIGHT_SIZE=(--config.input.height=64 --config.input.width=32
    "--config.model.stage_sizes=(1,1,1,1)" --config.model.width=8
    --config.model.tfclip.width=64 --config.model.tfclip.layers=2 --config.model.tfclip.heads=4
    --config.model.tfclip.output_dim=64
    --config.input.num_ids_per_batch=2 --config.input.num_instances=2
    --config.input.clip_len=4 --config.eval.batch_size=4 --config.eval.frame_batch_size=16)
  NL3D=(--batch 4 --clip_len 4); GLTR=(--batch 4 --clip_len 4); TFCLIP=(--batch 4 --clip_len 4)
  EXTRACT=(--tracklets 4 --frames 16 --batch 4); STEPS=(--steps 2); PIPELINE_S=2
fi

START=$SECONDS
FAILED=()
# run NAME COMMAND...: runs one measurement with its log in $OUT/logs/NAME.log, unless the budget
# is spent; a failure (or the budget) is noted and the run goes on.
run() {
  local name=$1 left=$((BUDGET_S - (SECONDS - START)))
  shift
  if ((left <= 10)); then
    echo "skipped (budget of ${BUDGET_S} s spent)" >"$OUT/logs/$name.log"
    FAILED+=("$name (skipped)")
    return
  fi
  echo "== $name ($((SECONDS - START)) s in)"
  if ! timeout "$left" "$@" >"$OUT/logs/$name.log" 2>&1; then
    FAILED+=("$name")
    echo "   FAILED: see $OUT/logs/$name.log"
  fi
  tail -n 1 "$OUT/logs/$name.log"
}

run input_pipeline $PYTHON benchmarks/input_pipeline.py --cores "$CORES" \
  --seconds "$PIPELINE_S" --out "$OUT/input_pipeline.json"
# NL3D in bfloat16 first: its MFU is the target. SPECS (model:dtype ...) runs a subset.
SPECS=${SPECS:-nl3d:bfloat16 tfclip:bfloat16 nl3d:float32 gltr:bfloat16 gltr:float32 tfclip:float32}
for spec in $SPECS; do
  model=${spec%%:*} dtype=${spec##*:}
  case $model in
    nl3d) shape=("${NL3D[@]}") ;;
    gltr) shape=("${GLTR[@]}") ;;
    *) shape=("${TFCLIP[@]}") ;;
  esac
  run "train_step_${model}_${dtype}" $PYTHON benchmarks/train_step.py --model "$model" \
    --dtype "$dtype" "${shape[@]}" "${SIZE[@]}" "${STEPS[@]}" \
    --input_result "$OUT/input_pipeline.json" --out "$OUT/train_step.json"
  run "preflight_${model}_${dtype}" $PYTHON -m vreid_jax.main \
    --config "configs/${model}_mars.py" --workdir "$OUT/preflight/${model}_${dtype}" \
    --config.mode=preflight --config.model.dtype="$dtype" "${PREFLIGHT_SIZE[@]}"
  run "extract_${model}_${dtype}" $PYTHON benchmarks/feature_extraction.py --model "$model" \
    --dtype "$dtype" "${EXTRACT[@]}" "${SIZE[@]}" --out "$OUT/feature_extraction.json"
done

$PYTHON benchmarks/gpu_summary.py "$OUT" | tee "$OUT/summary.md"
echo "took $((SECONDS - START)) s; results in $OUT"
if ((${#FAILED[@]})); then
  echo "failed or skipped: ${FAILED[*]}"
  exit 1
fi
