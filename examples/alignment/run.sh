#!/bin/sh
# The alignment chain on the orders task, one command: SFT → reward model → DPO, each stage its own recipe and run.
# A stage names the run it starts from in model.name; it starts from that run's merged model.
#
#   sh examples/alignment/run.sh                 # from the repository root; $RUNS/align-sft, align-rm, align-dpo
#   sh examples/alignment/run.sh train.max_steps=4   # extra overrides go to every stage (a quick smoke run)
#
# Recipes: examples/quickstart/recipe.yaml (SFT), examples/preference/rm.yaml and dpo.yaml (pairs from
# examples/preference/generate.py on training orders; held-out pairs on held-out orders only). DPO trains on the express
# and size twins, which target the SFT run's two commonest mistakes; examples/preference/README.md has the runs that
# chose them.
set -eu
cd "$(dirname "$0")/../.."
TUNELAB="${TUNELAB:-tunelab}"
RUNS="${RUNS:-runs}"                 # where the three runs go (relative to the repository root, or absolute)
"$TUNELAB" run examples/quickstart/recipe.yaml output_dir="$RUNS" name=align-sft "$@"
"$TUNELAB" run examples/preference/rm.yaml output_dir="$RUNS" name=align-rm model.name="$RUNS"/align-sft "$@"
"$TUNELAB" run examples/preference/dpo.yaml output_dir="$RUNS" name=align-dpo model.name="$RUNS"/align-sft "$@"
echo "reports: $RUNS/align-sft/eval/report.html $RUNS/align-rm/eval/report.html $RUNS/align-dpo/eval/report.html"
