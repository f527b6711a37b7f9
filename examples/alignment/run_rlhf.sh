#!/bin/sh
# The classic RLHF chain on the orders task, one command: SFT → reward model → PPO against that reward model.
# Each stage is its own recipe and run; a stage names the run it starts from in model.name.
#
#   sh examples/alignment/run_rlhf.sh                  # from the repository root; $RUNS/rlhf-sft, rlhf-rm, rlhf-ppo
#   sh examples/alignment/run_rlhf.sh train.max_steps=4   # extra overrides go to every stage (a quick smoke run)
#
# Recipes: examples/quickstart/recipe.yaml (SFT), examples/preference/rm.yaml (the reward model, on pairs from
# examples/preference/generate.py) and examples/rl/ppo.yaml with its rewards replaced by the reward-model run.
set -eu
cd "$(dirname "$0")/../.."
TUNELAB="${TUNELAB:-tunelab}"
RUNS="${RUNS:-runs}"                 # where the three runs go (relative to the repository root, or absolute)
"$TUNELAB" run examples/quickstart/recipe.yaml output_dir="$RUNS" name=rlhf-sft "$@"
"$TUNELAB" run examples/preference/rm.yaml output_dir="$RUNS" name=rlhf-rm model.name="$RUNS"/rlhf-sft "$@"
"$TUNELAB" run examples/rl/ppo.yaml output_dir="$RUNS" name=rlhf-ppo model.name="$RUNS"/rlhf-sft \
  "reward=[{type: reward_model, run: $(cd "$RUNS" && pwd)/rlhf-rm}]" "$@"
echo "reports: $RUNS/rlhf-sft/eval/report.html $RUNS/rlhf-rm/eval/report.html $RUNS/rlhf-ppo/eval/report.html"
