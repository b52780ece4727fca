#!/usr/bin/env bash
# The first run on a GPU machine: everything it should measure, in at most 10 minutes on one
# GPU, into one summary file.
#
#   bash bench/gpu_check.sh [--out DIR]      # on the GPU; DIR defaults to $OUT, else gpu-check-<time>
#   bash bench/gpu_check.sh --dry-run        # on a CPU: is every step wired?
#
# Run it where sae-sweep is installed (README, Quick start), from any folder. The step
# budgets add up to 575 s.
#
# Steps (each under its own time budget; one that fails or runs out of time is recorded and
# the next one runs):
#   gpu_tests    python -m pytest -m gpu: the kernels on CUDA against float64, TF32 and bf16
#                products, a CUDA run resumed to identical weights, the loader feeding the GPU
#   step_memory  bench/step.py --memory: each step's peak memory at large dictionaries
#   step_speed   bench/step.py: dense and sparse steps against their matrix-product bound
#   loader       bench/loader.py: does the input pipeline keep ahead of the step?
#   sweep        the quick sweep on the GPU (packed 4 SAEs a job, target-L0 rounds, analysis)
#   sweep_status sae-sweep-status on it: each job's L0, FVU and time
# DIR/summary.md holds, per step, its status, duration and key figures (the tail of its
# output); DIR/logs/<step>.log the whole output. Exit status 1 if any step did not pass.
#
# --dry-run runs every step's command on the CPU at toy sizes (pytest only collects the gpu
# tests): the same scripts and options, with `cuda` replaced by `cpu` and size options
# appended (the last value of an option or override wins). tests/test_gpu_check.py runs it.
set -uo pipefail

dry_run=0
out="${OUT:-gpu-check-$(date -u +%Y%m%d-%H%M%S)}"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --out) out="${2:?--out needs a folder}"; shift ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1' (use --dry-run and/or --out DIR)" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out/logs" || exit 2
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."  # the repository: bench/ and tests/ are read from there
summary="$out/summary.md"
export WANDB_MODE="${WANDB_MODE:-disabled}" HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" MPLBACKEND=Agg

if ! command -v sae-sweep > /dev/null || ! python -c 'import sae_sweep' 2> /dev/null; then
    echo "gpu_check.sh: sae-sweep is not installed here; set up first (README, Quick start)" >&2
    exit 2
fi
if [ "$dry_run" = 0 ] && ! python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu_check.sh: torch sees no CUDA device; on a CPU run it with --dry-run" >&2
    exit 2
fi

{
    echo "# GPU check$([ "$dry_run" = 1 ] && echo ' (dry run on the CPU: wiring only, no figures)')"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    python -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, " + (", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "no GPU"))'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
    echo
    echo "| step | status | seconds | budget s |"
    echo "|---|---|---|---|"
} > "$summary"
details=$(mktemp)
failed=0

# step NAME BUDGET_S COMMAND TOY_OPTIONS: run COMMAND (on the CPU with --dry-run: COMMAND with
# cuda -> cpu, then TOY_OPTIONS), log it, and add its row and key figures to the summary.
step() {
    local name=$1 budget=$2 cmd=$3 toy=$4
    if [ "$dry_run" = 1 ]; then cmd="${cmd//cuda/cpu} $toy"; fi
    local log="$out/logs/$name.log" start=$SECONDS status
    echo "== $name: $cmd" >&2
    timeout --kill-after=10 "$budget" bash -c "$cmd" > "$log" 2>&1
    case $? in
        0) status=passed ;;
        124|137) status="timed out"; failed=1 ;;
        *) status=failed; failed=1 ;;
    esac
    echo "| $name | $status | $((SECONDS - start)) | $budget |" >> "$summary"
    { echo; echo "## $name: $status"; echo; echo "\`$cmd\`"; echo; echo '```'
      tail -n 40 "$log"; echo '```'; } >> "$details"
    echo "   $status in $((SECONDS - start)) s" >&2
}

step gpu_tests 140 \
    "python -m pytest -q -p no:cacheprovider -m gpu tests" \
    "--collect-only"
step step_memory 80 \
    "python bench/step.py --device cuda --memory --d-in 768 --d-sae 32768 131072" \
    "--kinds gated --d-in 16 --d-sae 64 --batch 32"
step step_speed 45 \
    "python bench/step.py --device cuda --d-in 768 --d-sae 24576 --paths dense sparse --density 0.01" \
    "--kinds gated --d-in 16 --d-sae 256 --batch 32 --steps 2 --rounds 1"
step loader 90 \
    "python bench/loader.py --device cuda" \
    "--d 16 --rows 8192 --shard-rows 4096 --shuffle-buffer 2048 --batch 256 --epochs 1 --d-sae 64 --step-repeats 2"
step sweep 200 \
    "sae-sweep +sweep=quick device=cuda pack=4 hydra.launcher.n_jobs=1 hydra.sweep.dir=$out/sweep" \
    "variant=gated_original lambda_multiplier=1.0 seed=0 train.steps=20 'l0_targets=[]' hydra.sweeper.analysis=false"
step sweep_status 20 "sae-sweep-status $out/sweep" ""

cat "$details" >> "$summary"
rm -f "$details"
echo "summary: $summary" >&2
exit "$failed"
