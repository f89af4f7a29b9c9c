#!/usr/bin/env bash
# GPU check: bf16 SFT and GRPO steps, vLLM and hf rollouts, FisherSFT features and greedy on one CUDA device, each
# figure on its own line (benchmarks/gpu_check.py says what each step runs). Needs no network.
#
#   bash benchmarks/gpu_check.sh               # on a CUDA machine: a few minutes
#   bash benchmarks/gpu_check.sh --cpu-smoke   # the same steps at tiny sizes on the CPU, to test the script
#
# Python: $PYTHON if set, else the repository's .venv, else python3; the first whose torch imports is used, so a
# machine that got only a copy of the working tree runs with the system torch. GPU_CHECK_TIMEOUT (seconds) caps the
# whole run: default 540 (under a 10-minute slot), 240 with --cpu-smoke.
set -u
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py=""
for candidate in "${PYTHON:-}" "$root/.venv/bin/python" python3; do
    if [ -n "$candidate" ] && "$candidate" -c "import torch" >/dev/null 2>&1; then
        py="$candidate"
        break
    fi
done
if [ -z "$py" ]; then
    echo "SKIP everything: no Python here imports torch (tried \$PYTHON, .venv/bin/python, python3)"
    exit 2
fi
limit="${GPU_CHECK_TIMEOUT:-540}"
case " $* " in *" --cpu-smoke "*) limit="${GPU_CHECK_TIMEOUT:-240}" ;; esac
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
timeout --kill-after=10 "$limit" "$py" benchmarks/gpu_check.py "$@"
status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "FAIL gpu_check: stopped after ${limit}s (GPU_CHECK_TIMEOUT); the figures above are the steps that finished"
fi
exit "$status"
