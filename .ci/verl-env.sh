#!/usr/bin/env bash
# CI for the verl integration, in its own venv (.venv-verl): verl 0.9 pins transformers<5.11, the main env has 5.23.
#
# Installs the CPU build of torch, divrl with its `verl` extra (verl>=0.9,<0.10, which brings ray, tensordict, hydra,
# transformers 5.10.x; no vllm, flash-attn or CUDA packages) and the few modules verl's v1 trainer imports that verl
# leaves to its `verl-core` extra (TransferQueue, pyzmq, msgspec, cachetools, fastapi, uvicorn), then runs
# tests/integrations/verl. Measured on the 2-core dev machine (Nov 2026): 94 s to install alone (237 s beside other
# jobs), a 2.0 GB venv (149 packages; torch 754 MB, ray 240 MB, pyarrow 170 MB), 7-11 s of tests.
#
# Usage: bash .ci/verl-env.sh   (reuses .venv-verl when it exists; VERL_ENV_FRESH=1 rebuilds it)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-verl
if ! python3 -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] < (3, 13)))'; then
    echo "verl 0.9 needs Python >=3.10,<3.13; python3 is $(python3 -V)" >&2
    exit 1
fi
if [ "${VERL_ENV_FRESH:-0}" = 1 ]; then rm -rf "$VENV"; fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    echo '*' > "$VENV/.gitignore"  # keep the venv out of git without touching the repository's .gitignore
fi
. "$VENV/bin/activate"
pip install --quiet --upgrade pip >/dev/null 2>&1 || true
# The torch pin takes the CPU wheel on this machine's disk (pip's find-links); unpinned, verl would pull a CUDA build.
# No `-c constraints.txt` here: it pins the main environment (transformers 5.24), which verl 0.9 (< 5.11) cannot use;
# this environment takes the newest releases verl allows, so its versions are not pinned.
pip install --quiet torch==2.13.0 -e ".[verl]" \
    "TransferQueue>=0.1.10" pyzmq msgspec cachetools fastapi uvicorn \
    pytest hypothesis 2> >(grep -v "^WARNING: Location" >&2)
python -W ignore -c "import verl, transformers, torch; print(f'verl {verl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}')" 2>&1 | tail -1
echo "verl env: install $(( $(date +%s) - start )) s, size $(du -sh "$VENV" | cut -f1)"

python -m pytest tests/integrations/verl -q
