#!/usr/bin/env bash
# Accuracy bench: `python -m export evaluate` for a model on its test split.
#
#   bench/accuracy.sh MODEL_DIR [extra evaluate options...]
#
# For a model trained with a test split (`python -m export train ... --set test_frac=0.15`):
# export/ selects that split from a hash of each message and the seed and fractions recorded
# in MODEL_DIR/split.json, so it is the same mail on any machine with the same corpus
# (FILTERD_CORPUS, default ../shared/corpus). The shipped model_artifacts/ is trained on all
# the corpus and has no test split: evaluate then says so and this exits 1 (its figures are
# cross-validated: `python -m export cv`, docs/model.md).
# Prints the figures and writes them to bench/results/accuracy-<time>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
MODEL=${1:?usage: bench/accuracy.sh MODEL_DIR [extra evaluate options...]}
shift
CORPUS=${FILTERD_CORPUS:-../shared/corpus}
mkdir -p bench/results
OUT=bench/results/accuracy-$(date -u +%Y%m%dT%H%M%S).json
"$PY" -m export evaluate --model "$MODEL" --corpus "$CORPUS" --json "$OUT" "$@"
echo "wrote $OUT"
