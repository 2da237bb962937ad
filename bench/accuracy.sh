#!/usr/bin/env bash
# Accuracy bench: `python -m export evaluate` for the shipped model on its test split.
#
#   bench/accuracy.sh [MODEL_DIR] [extra evaluate options...]
#
# The test split is the one the model was trained with: export/ selects it from a hash of
# each message and the seed and fractions recorded in MODEL_DIR/split.json, so it is the same
# mail on any machine with the same corpus (FILTERD_CORPUS, default ../shared/corpus).
# Prints the figures and writes them to bench/results/accuracy-<time>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
MODEL=${1:-model_artifacts}
shift || true
CORPUS=${FILTERD_CORPUS:-../shared/corpus}
mkdir -p bench/results
OUT=bench/results/accuracy-$(date -u +%Y%m%dT%H%M%S).json
"$PY" -m export evaluate --model "$MODEL" --corpus "$CORPUS" --json "$OUT" "$@"
echo "wrote $OUT"
