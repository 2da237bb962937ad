#!/usr/bin/env bash
# Every bench, one after the other, with the figures the README quotes (a few minutes).
#
#   bench/all.sh            (from anywhere; runs in the repository root)
#   ACCURACY_MODEL=DIR bench/all.sh   also the accuracy bench, for a model with a test split
#
# Results: bench/results/{e2e,model,memory,accuracy}-<UTC time>.json. Runs `uptime` between
# benches: on a shared machine, read each figure beside the load it was measured under.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
step() { echo; echo "== $* ($(date -u +%H:%M:%SZ), load: $(cut -d' ' -f1-3 /proc/loadavg))"; }
step e2e;      "$PY" -m bench.e2e --targets direct plain tuned filterd "filterd[workers=1]"
step model;    "$PY" -m bench.model --seconds 0.5
step memory;   "$PY" -m bench.memory
# accuracy: for a model trained with a test split (the shipped one has none: its figures are
# cross-validated, `python -m export cv`); ACCURACY_MODEL=DIR names one.
if [ -n "${ACCURACY_MODEL:-}" ]; then
    step accuracy; PYTHON="$PY" bench/accuracy.sh "$ACCURACY_MODEL"
else
    echo; echo "== accuracy skipped: set ACCURACY_MODEL=DIR to a model trained with --set test_frac=..."
fi
