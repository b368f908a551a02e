#!/usr/bin/env bash
# examples/trl_darling_math.py on one 8-GPU node (docs/scale-out.md, "Launch: one node, vLLM server mode"):
# GPU 0 serves vLLM, GPUs 1-7 train under DeepSpeed ZeRO-3. Extra arguments go to the script (e.g. --dataset math).
# Not run by the test suite (it needs GPUs); tests/test_examples.py checks its syntax, the paths it names and that the
# installed TRL ships the accelerate config it uses.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CFG=$(python -c "import os, trl; print(os.path.join(os.path.dirname(trl.__file__), 'accelerate_configs'))")

CUDA_VISIBLE_DEVICES=0 trl vllm-serve --model Qwen/Qwen2.5-Math-1.5B --tensor_parallel_size 1 &
SERVER=$!
trap 'kill "$SERVER"' EXIT

CUDA_VISIBLE_DEVICES=1,2,3,4,5,6,7 accelerate launch \
    --config_file "$CFG/zero3.yaml" --num_processes 7 \
    "$HERE/trl_darling_math.py" "$@"
