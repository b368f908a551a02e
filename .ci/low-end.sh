#!/usr/bin/env bash
# The low end of divrl's transformers range (pyproject: transformers>=5.0,<6), in its own venv (.venv-low): torch
# 2.13 CPU, transformers 5.0.0 (which brings tokenizers 0.22, huggingface_hub 1.x) and divrl's core dependencies only;
# runs the model, sampler, deprecation and RL-trainer tests. Not part of .ci/run: measured on the 2-core dev machine
# beside other jobs, 88 s to install (fresh venv) and 73-143 s of tests (123 passed, 3 skipped: peft is not installed,
# and the two transformers-5.24 deprecation checks).
#
# Usage: bash .ci/low-end.sh   (reuses .venv-low, or $LOW_END_VENV, when it exists; LOW_END_FRESH=1 rebuilds it)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${LOW_END_VENV:-.venv-low}
if [ "${LOW_END_FRESH:-0}" = 1 ]; then rm -rf "$VENV"; fi
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    echo '*' > "$VENV/.gitignore"  # keep the venv out of git without touching the repository's .gitignore
fi
. "$VENV/bin/activate"
pip install --quiet torch==2.13.0 "transformers==5.0.0" -e . pytest hypothesis 2> >(grep -v "^WARNING: Location" >&2)
python -c "import transformers, torch; print(f'transformers {transformers.__version__}, torch {torch.__version__}')"
python -m pytest -q tests/models tests/test_deprecations.py tests/trainer/test_rl.py
