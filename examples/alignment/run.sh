#!/bin/sh
# The alignment chain on the orders task, one command: SFT → reward model → DPO, each stage its own recipe and run.
# A stage names the run it starts from in model.name; it starts from that run's merged model.
#
#   sh examples/alignment/run.sh                 # from the repository root; runs/align-sft, align-rm, align-dpo
#   sh examples/alignment/run.sh train.max_steps=4   # extra overrides go to every stage (a quick smoke run)
#
# Recipes: examples/quickstart/recipe.yaml (SFT), examples/preference/rm.yaml and dpo.yaml (pairs from
# examples/preference/generate.py on training orders; held-out pairs on held-out orders only). DPO trains on the express
# twins, which target the SFT run's commonest mistake; examples/preference/README.md has the runs that chose them.
set -eu
cd "$(dirname "$0")/../.."
TUNELAB="${TUNELAB:-tunelab}"
"$TUNELAB" run examples/quickstart/recipe.yaml name=align-sft "$@"
"$TUNELAB" run examples/preference/rm.yaml name=align-rm model.name=runs/align-sft "$@"
"$TUNELAB" run examples/preference/dpo.yaml name=align-dpo model.name=runs/align-sft "$@"
echo "reports: runs/align-sft/eval/report.html runs/align-rm/eval/report.html runs/align-dpo/eval/report.html"
