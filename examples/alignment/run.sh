#!/bin/sh
# The alignment chain on the orders task, one command: SFT → reward model → DPO, each stage its own recipe and run.
# A stage names the run it starts from in model.name; it starts from that run's merged model.
#
#   sh examples/alignment/run.sh                 # from the repository root; runs/align-sft, align-rm, align-dpo
#   sh examples/alignment/run.sh train.max_steps=4   # extra overrides go to every stage (a quick smoke run)
#
# Recipes: examples/quickstart/recipe.yaml (SFT), examples/preference/rm.yaml and dpo.yaml (pairs from
# examples/preference/generate.py, held-out pairs on held-out orders only, plus the SFT model's own mistakes mined by
# examples/preference/mine.py).
set -eu
cd "$(dirname "$0")/../.."
TUNELAB="${TUNELAB:-tunelab}"
PYTHON="${PYTHON:-$(dirname "$(command -v "$TUNELAB")")/python}"   # the Python that tunelab is installed in
"$TUNELAB" run examples/quickstart/recipe.yaml name=align-sft "$@"
"$TUNELAB" run examples/preference/rm.yaml name=align-rm model.name=runs/align-sft "$@"
# DPO also learns from the SFT model's own wrong answers on training orders (examples/preference/mine.py)
"$PYTHON" examples/preference/mine.py --model runs/align-sft --out runs/align-sft/mined.jsonl
"$TUNELAB" run examples/preference/dpo.yaml name=align-dpo model.name=runs/align-sft \
    data.sources.1.path="$PWD/runs/align-sft/mined.jsonl" "$@"
echo "reports: runs/align-sft/eval/report.html runs/align-rm/eval/report.html runs/align-dpo/eval/report.html"
