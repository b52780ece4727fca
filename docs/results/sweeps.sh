#!/usr/bin/env bash
# The sweeps behind docs/results.md, in the order the page needs them. Run from a clone placed
# beside ../shared (the TinyStories-260k model and stories):
#   bash docs/results/sweeps.sh            # every sweep
#   bash docs/results/sweeps.sh synth_gated_penalty lm_gated_penalty   # some of them
# Each sweep resumes where it stopped: rerunning the same command skips finished jobs and
# target rounds (the sweep folder is fixed). Then `python docs/results/collect.py` copies the
# run tables into docs/results/ and `python docs/results/rebuild.py` rebuilds the page's
# tables, plots and numbers from them.
#
# Settings shared by every sweep: 3000 steps of batch 1024; target L0s 4, 8, 16, 32 (inside
# [3, d/2] for d = 64), each placed by refinement rounds after a 3-lambda grid; 5 seeds for
# claims (a)-(c), 3 for (d), (e) and the modern architectures. On synthetic data every seed
# also draws its own data-generating process (`data.seed=${seed}`): the seeds cover data,
# initialisation and batch order, and runs of one seed stay paired across variants.
set -euo pipefail

TS=${TS:-../shared/data/tinystories-260k}
RUNS=${RUNS:-runs/results}
WORKERS=${WORKERS:-2}

# (l0_lambda_per=variant: these sweeps gave a variant's seeds one lambda per target, as every
# target sweep did before each seed found its own.)
COMMON=(hydra/launcher=joblib "hydra.launcher.n_jobs=$WORKERS" logger=disabled
        train.steps=3000 pack=4 'l0_targets=[4,8,16,32]' l0_lambda_per=variant)
SYNTH=('data.seed=${seed}')
# Layer-2 residual stream of TinyStories-260k: 1M cached training activations (about 3 passes
# in 3000 steps) and 256 held-out sequences (about 32k tokens) for the metrics and the splice.
LM=(data=hf "data.model=$TS" data.site=model.layers.2 "data.dataset=$TS/stories_train.jsonl"
    data.n_tokens=1000000 data.eval_sequences=256 "data.cache_dir=$RUNS/act_cache")

SEEDS5=seed=0,1,2,3,4
SEEDS3=seed=0,1,2
# Claims (a)-(c): the original recipe, the mixed case, fix (A) and fix (B).
PENALTY_VARIANTS=variant=gated_original,gated_dn_frozen_live,gated_dn_trainable_live,gated_dn_frozen_detached
# Claim (e) and the modern architectures: standard and gated under both recipes, then TopK,
# BatchTopK and JumpReLU (their multiplier maps to k or the threshold's lambda).
ARCH_VARIANTS=variant=standard_original,standard_dn,gated_original,gated_dn_trainable_live,topk,batchtopk,jumprelu

sweep() {  # name, then the sae-sweep arguments
    local name=$1
    shift
    echo "=== $name ($(date -u +%H:%M:%S))"
    sae-sweep "$@" "${COMMON[@]}" "hydra.sweep.dir=$RUNS/$name" || echo "=== $name: some jobs failed"
}

synth_gated_penalty() {
    sweep synth_gated_penalty +sweep=gated_penalty_ablation "$PENALTY_VARIANTS" \
        lambda_multiplier=1.4,2.4,4.0 "$SEEDS5" "${SYNTH[@]}"
}
lm_gated_penalty() {
    python -m sae_sweep.data.build_cache "${LM[@]}"
    # 4 rounds: the mixed case's L0 falls from 19 to 8 and from 8 to 3 within 2% of lambda
    sweep lm_gated_penalty +sweep=gated_penalty_ablation "$PENALTY_VARIANTS" \
        lambda_multiplier=1.0,2.0,4.0 "$SEEDS5" "${LM[@]}" l0_max_rounds=4
}
synth_architectures() {
    sweep synth_architectures +sweep=architectures_modern "$ARCH_VARIANTS" \
        lambda_multiplier=1.0,2.0,4.0 "$SEEDS3" "${SYNTH[@]}"
}
synth_recipe() {  # claim (d): both penalties x encoder-transpose init x lambda warm-up
    sweep synth_recipe +sweep=recipe_ablation lambda_multiplier=1.4,2.4,4.0 "$SEEDS3" "${SYNTH[@]}"
}
lm_architectures() {
    python -m sae_sweep.data.build_cache "${LM[@]}"
    sweep lm_architectures +sweep=architectures_modern "$ARCH_VARIANTS" \
        lambda_multiplier=1.0,2.0,4.0 "$SEEDS3" "${LM[@]}"
}
lm_recipe() {
    python -m sae_sweep.data.build_cache "${LM[@]}"
    sweep lm_recipe +sweep=recipe_ablation lambda_multiplier=1.0,2.0,4.0 "$SEEDS3" "${LM[@]}"
}

synthsaebench() {  # the benchmark's CPU preset, its own targets and seeds (sweeps/synthsaebench.yaml)
    sae-sweep +sweep=synthsaebench "hydra.sweep.dir=$RUNS/synthsaebench_benchmark" \
        require_clean_tree=true || echo "=== synthsaebench: some jobs failed"
}

ALL=(synth_gated_penalty lm_gated_penalty synth_architectures synth_recipe lm_architectures lm_recipe
     synthsaebench)
if [ $# -eq 0 ]; then set -- "${ALL[@]}"; fi
for name in "$@"; do
    "$name"
done
