#!/usr/bin/env bash
# Every GPU figure of docs/throughput.md in one call, for a lent GPU of limited time (no hub needed):
#
#     bash benchmarks/gpu_session.sh OUT_DIR [SECONDS]
#
# Runs, in order of importance, each only while enough of SECONDS (default 540) is left:
#   1. tests/test_loop.py's CUDA test (joint runs = separate runs to bf16 rounding);
#   2. trainer_speed.py on real-size SD 1.5 with random weights, 512 px, bf16: --method ti at 4 samples per
#      step, eager and --compile (each compile takes ~2 min); 4 lego runs batched (16 samples), compiled and eager;
#   3. SDXL (1024 px, one lego run of 1 + 1), then SD 1.5 lego at 2 + 2.
# A 15-minute device lease does not fit all of it: what did not fit is reported as skipped.
# Writes OUT_DIR/log.txt (everything printed) and OUT_DIR/results.jsonl (one trainer_speed --json record per
# line, with its "name"). diffusers must be importable (on a bare GPU machine: a carried wheel on PYTHONPATH).
set -u
out=${1:?usage: bash benchmarks/gpu_session.sh OUT_DIR [SECONDS]}
budget=${2:-540}
mkdir -p "$out"
log=$out/log.txt
export PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
say() { echo "== $* (t=${SECONDS}s)" | tee -a "$log"; }
left() { echo $((budget - SECONDS)); }

# step NAME NEEDED_SECONDS -- command...: run it with what is left as its limit, if at least NEEDED is left.
step() {
    local name=$1 need=$2
    shift 3
    if [ "$(left)" -lt "$need" ]; then say "skip $name: $(left) s left, it needs $need"; return 1; fi
    say "start $name"
    timeout "$(left)" "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    say "end $name rc=$rc"
    return "$rc"
}

speed() {  # speed NAME NEEDED MODEL_DIR [trainer_speed args...]
    local name=$1 need=$2 model=$3
    shift 3
    rm -f /tmp/speed.json
    step "$name" "$need" -- python3 benchmarks/trainer_speed.py --model "$model" --device cuda \
        --mixed-precision bf16 --steps 20 --json /tmp/speed.json "$@" &&
        python3 -c "import json,sys; r=json.load(open('/tmp/speed.json')); r['name']=sys.argv[1]; \
print(json.dumps(r))" "$name" >> "$out/results.jsonl"
}

build() {  # build NAME NEEDED FAMILY FOLDER
    step "$1" "$2" -- python3 -c "import sys,time; from lego_inversion.testing import build_full_size; \
t=time.time(); build_full_size(sys.argv[2], sys.argv[1]); print(f'built {sys.argv[1]} in {time.time()-t:.0f} s')" \
        "$3" "$4"
}

say "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
python3 -c "import torch, transformers, diffusers; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'diffusers', diffusers.__version__)" 2>&1 | tee -a "$log"

step cuda-test 60 -- python3 -m pytest -q -p no:cacheprovider tests/test_loop.py -k cuda
if build build-sd15 120 sd15 /tmp/sd15; then
    speed sd15-ti-4 60 /tmp/sd15 --method ti --batch 4
    speed sd15-ti-4-compile 200 /tmp/sd15 --method ti --batch 4 --compile
    speed sd15-lego-4runs-compile 200 /tmp/sd15 --batch 2 --runs 4 --compile
    speed sd15-lego-4runs 70 /tmp/sd15 --batch 2 --runs 4
fi
build build-sdxl 150 sdxl /tmp/sdxl && speed sdxl-lego-1+1 90 /tmp/sdxl --batch 1
[ -d /tmp/sd15 ] && speed sd15-lego-2+2 60 /tmp/sd15 --batch 2
say "done"
