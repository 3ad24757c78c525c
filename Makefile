# Stages of the toolkit. `make demo` and `make test` are the two commands a new machine needs.
#
# Every stage is a file target: its output's completion marker (a stats.json, _SUCCESS or
# result.json written last), rebuilt only when an input changed: the stage before it, the code it
# runs, or its settings (a stamp under $(DEMO)/.settings/ rewritten only when they change). A
# finished training run whose inputs changed is kept as DIR.previous and a new one starts; an
# interrupted one (no result.json) resumes from its checkpoints.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BUILD ?= build
DEMO := $(BUILD)/demo
MASTER ?= local[*]
OPENCLIPART ?= /usr/share/openclipart
SPARK_SUBMIT := PYSPARK_PYTHON=$(abspath $(PY)) PYSPARK_DRIVER_PYTHON=$(abspath $(PY)) $(VENV)/bin/spark-submit --master '$(MASTER)' --conf spark.log.level=WARN --conf spark.ui.showConsoleProgress=false
TORCHRUN := $(VENV)/bin/torchrun --standalone
NPROC ?= 1
export PYTHONHASHSEED := 0

.PHONY: setup dataset dedup vocab label shards resample card pretrain transfer compare compare-sampling demo demo-lit groups ablation \
	test test-fast test-all bench clean FORCE

setup:
	@bash scripts/setup.sh

# The code a stage runs: its entry point plus the shared layers below it.
SCHEMA_CODE := $(wildcard schemas/*.py)
PIPELINE_CODE := $(wildcard pipeline/*.py pipeline/data/*) $(SCHEMA_CODE)
JOB_CODE = jobs/$(1).py $(wildcard jobs/lib/*.py) $(PIPELINE_CODE)
DEDUP_CODE := $(call JOB_CODE,dedup) $(wildcard dedup/*.py)
TRAINER_CODE := $(shell find trainer -name '*.py' -o -name '*.yaml') $(PIPELINE_CODE)
TRANSFER_CODE := $(wildcard transfer/*.py) $(TRAINER_CODE)
EXPERIMENT_CODE := $(wildcard experiments/*.py) $(TRANSFER_CODE)

# $(call settings,NAME,TEXT): a file whose content is TEXT, rewritten only when TEXT changes
SETTINGS := $(DEMO)/.settings
settings = $(SETTINGS)/$(1)
$(SETTINGS)/%: FORCE
	@mkdir -p $(@D); printf '%s\n' '$(SETTING_$*)' | cmp -s - $@ || printf '%s\n' '$(SETTING_$*)' > $@
FORCE:

# A finished run directory ($(1)/result.json) is set aside before a rerun; an unfinished one resumes.
set_aside_finished = if [ -f $(1)/result.json ]; then rm -rf $(1).previous && mv $(1) $(1).previous; fi

# --- dataset: ingest -> dedup -> vocab -> label -> shards -> resample -> card -----------------------
$(DEMO)/manifest.parquet: jobs/ingest_openclipart.py pipeline/openclipart.py $(SCHEMA_CODE) | setup
	$(PY) -m jobs.ingest_openclipart --root $(OPENCLIPART) --out $(DEMO)

# Near-duplicates of the evaluation set(s) leave the manifest before the vocab/label chain reads it.
EVAL ?= $(DEMO)/heldout.parquet
PRETRAIN_MANIFEST := $(DEMO)/dedup/manifest.parquet
SETTING_dedup = $(EVAL)
$(DEMO)/dedup/stats.json: $(DEMO)/manifest.parquet $(DEDUP_CODE) $(call settings,dedup) | setup
	$(SPARK_SUBMIT) jobs/dedup.py --manifest $(DEMO)/manifest.parquet $(foreach e,$(EVAL),--eval $(e)) --out $(DEMO)/dedup

$(DEMO)/vocab/stats.json: $(DEMO)/dedup/stats.json $(call JOB_CODE,vocab) | setup
	$(SPARK_SUBMIT) jobs/vocab.py --manifest $(PRETRAIN_MANIFEST) --out $(DEMO)/vocab

TAIL_THRESHOLD ?= 10  # openclipart: natural head share 0.86 > alpha, so resampling flattens the head
SETTING_label = $(TAIL_THRESHOLD)
$(DEMO)/labeled/stats.json: $(DEMO)/vocab/stats.json $(call JOB_CODE,label) $(call settings,label) | setup
	$(SPARK_SUBMIT) jobs/label.py --manifest $(PRETRAIN_MANIFEST) --vocab $(DEMO)/vocab --out $(DEMO)/labeled \
		--tail-threshold $(TAIL_THRESHOLD)

# Shards store every labelled image once; the sample index (resample --shards) says which images
# each epoch trains on, applied by the loaders: another alpha or strategy needs no new shards.
FORMAT ?= wds,ffcv
SHARD_SIZE ?= 250
MAX_SIDE ?= 320
SETTING_shards = $(FORMAT) $(SHARD_SIZE) $(MAX_SIDE)
$(DEMO)/shards/_SUCCESS: $(DEMO)/labeled/stats.json $(call JOB_CODE,shards) $(call settings,shards) | setup
	$(SPARK_SUBMIT) jobs/shards.py --labeled $(DEMO)/labeled --out $(DEMO)/shards --format $(FORMAT) \
		--shard-size $(SHARD_SIZE) --max-side $(MAX_SIDE)

NUM_SAMPLES ?= 20000
ALPHA ?= 0.7
SEED ?= 0
EPOCHS ?= 1
RESAMPLE = $(SPARK_SUBMIT) jobs/resample.py --labeled $(DEMO)/labeled --shards $(DEMO)/shards \
	--num-samples $(NUM_SAMPLES) --alpha $(ALPHA) --seed $(SEED)
SETTING_resample = $(NUM_SAMPLES) $(ALPHA) $(SEED) $(EPOCHS)
$(DEMO)/samples/stats.json: $(DEMO)/shards/_SUCCESS $(call JOB_CODE,resample) $(call settings,resample) | setup
	$(RESAMPLE) --out $(DEMO)/samples --epochs $(EPOCHS)

$(DEMO)/card/dataset_card.md: $(DEMO)/samples/stats.json $(call JOB_CODE,dataset_card) | setup
	$(PY) -m jobs.dataset_card --manifest $(PRETRAIN_MANIFEST) --vocab $(DEMO)/vocab --labeled $(DEMO)/labeled \
		--samples $(DEMO)/samples --out $(DEMO)/card --ingest-stats $(DEMO)/ingest_stats.json \
		--dedup-stats $(DEMO)/dedup/stats.json

dedup: $(DEMO)/dedup/stats.json
vocab: $(DEMO)/vocab/stats.json
label: $(DEMO)/labeled/stats.json
shards: $(DEMO)/shards/_SUCCESS
resample: $(DEMO)/samples/stats.json
card: $(DEMO)/card/dataset_card.md
dataset: card

# --- pretraining ---------------------------------------------------------------------------------
PRETRAIN_CONFIG ?= trainer/configs/demo_cpu.yaml
SETTING_pretrain = $(PRETRAIN_CONFIG) $(NPROC)
# $(call pretrain_run,RUN_DIR,SAMPLE_INDEX_DIR): a hashtag pretraining run on the demo's shards
define pretrain_run
	$(call set_aside_finished,$(1))
	$(TORCHRUN) --nproc_per_node=$(NPROC) -m trainer.pretrain --config $(PRETRAIN_CONFIG) \
		shards=$(DEMO)/shards sample_index=$(2) vocab=$(DEMO)/vocab run_dir=$(1)
endef
$(DEMO)/pretrain/result.json: $(DEMO)/card/dataset_card.md $(TRAINER_CODE) $(call settings,pretrain) | setup
	$(call pretrain_run,$(DEMO)/pretrain,$(DEMO)/samples)
pretrain: $(DEMO)/pretrain/result.json

# Sampling ablations from one shard set (WSL's natural / sqrt / uniform against SWAG's importance):
# `make ablation` draws one index per strategy and pretrains on each; `make pretrain-unique
# UNIQUE_IMAGES=N` is SWAG appendix C.2 (the same samples drawn from a seeded subset of N images).
STRATEGIES := importance natural sqrt uniform
UNIQUE_IMAGES ?= 1000
$(foreach s,$(STRATEGIES),$(eval SETTING_index-$(s) = $(NUM_SAMPLES) $(ALPHA) $(SEED)))
SETTING_index-unique = $(NUM_SAMPLES) $(ALPHA) $(SEED) $(UNIQUE_IMAGES)
$(foreach s,$(STRATEGIES),$(DEMO)/samples-$(s)/stats.json): $(DEMO)/samples-%/stats.json: \
		$(DEMO)/shards/_SUCCESS $(call JOB_CODE,resample) $(SETTINGS)/index-% | setup
	$(RESAMPLE) --out $(DEMO)/samples-$* --strategy $*
$(DEMO)/samples-unique/stats.json: $(DEMO)/shards/_SUCCESS $(call JOB_CODE,resample) $(SETTINGS)/index-unique | setup
	$(RESAMPLE) --out $(DEMO)/samples-unique --unique-images $(UNIQUE_IMAGES)
$(DEMO)/pretrain-%/result.json: $(DEMO)/samples-%/stats.json $(TRAINER_CODE) $(call settings,pretrain) | setup
	$(call pretrain_run,$(DEMO)/pretrain-$*,$(DEMO)/samples-$*)
$(addprefix pretrain-,$(STRATEGIES) unique metaclip): pretrain-%: $(DEMO)/pretrain-%/result.json
ablation: $(addprefix pretrain-,$(STRATEGIES))
.PHONY: $(addprefix pretrain-,$(STRATEGIES) unique metaclip)

# --- transfer (SWAG section 4) -------------------------------------------------------------------
# Linear probe and few-shot for a random and the hashtag-pretrained trunk of the same architecture,
# zero-shot through WordNet, a short finetune of each; table -> transfer.json.
DOWNSTREAM ?= $(DEMO)/downstream
$(DOWNSTREAM)/task.json: $(DEMO)/manifest.parquet transfer/heldout_task.py | setup
	$(PY) -m transfer.heldout_task heldout=$(DEMO)/heldout.parquet out=$(DOWNSTREAM)

TRANSFER ?= $(DEMO)/transfer
# TRANSFER_ARCH: $(PRETRAIN_CONFIG)'s model; FINETUNE_LR is at batch 512 (0.025 at the demo's 32)
TRANSFER_ARCH ?= regnety_002
TRANSFER_IMG ?= 64
FEW_SHOT_SEEDS ?= 3
FINETUNE_STEPS ?= 30
FINETUNE_BATCH ?= 32
FINETUNE_LR ?= 0.4
SETTING_transfer = $(TRANSFER_ARCH) $(TRANSFER_IMG) $(FEW_SHOT_SEEDS) $(FINETUNE_STEPS) $(FINETUNE_BATCH) $(FINETUNE_LR) $(NPROC)
PROBE = $(PY) -m transfer.$(1) data=$(DOWNSTREAM) img_size=$(TRANSFER_IMG) cache_dir=$(TRANSFER)/features
FINETUNE = $(TORCHRUN) --nproc_per_node=$(NPROC) -m transfer.finetune data=$(DOWNSTREAM) img_size=$(TRANSFER_IMG) \
	steps=$(FINETUNE_STEPS) batch_size=$(FINETUNE_BATCH) base_lr=$(FINETUNE_LR) workers=1 log_every=5
# the trunk of each arm, and what a result of it depends on
TRUNK_random_init = random:$(TRANSFER_ARCH)
TRUNK_pretrained = $(DEMO)/pretrain/export
ARM_INPUTS_random_init =
ARM_INPUTS_pretrained = $(DEMO)/pretrain/result.json
TRANSFER_INPUTS = $(DOWNSTREAM)/task.json $(TRANSFER_CODE) $(call settings,transfer)
.SECONDEXPANSION:
$(TRANSFER)/linear_%.json: $$(ARM_INPUTS_$$*) $(TRANSFER_INPUTS) | setup
	$(call PROBE,linear_probe) model=$(TRUNK_$*) out=$@
$(TRANSFER)/few_shot_%.json: $$(ARM_INPUTS_$$*) $(TRANSFER_INPUTS) | setup
	$(call PROBE,few_shot) model=$(TRUNK_$*) out=$@ seeds=$(FEW_SHOT_SEEDS)
$(TRANSFER)/zero_shot.json: $(DEMO)/pretrain/result.json $(TRANSFER_INPUTS) | setup
	$(call PROBE,zero_shot) model=$(TRUNK_pretrained) out=$@ class_synsets=pipeline/data/openclipart_class_synsets.yaml
$(TRANSFER)/finetune_%.json: $$(ARM_INPUTS_$$*) $(TRANSFER_INPUTS) | setup
	$(call set_aside_finished,$(TRANSFER)/finetune_$*_run)
	$(FINETUNE) model=$(TRUNK_$*) out=$@
TRANSFER_RESULTS := $(foreach p,linear few_shot finetune,$(foreach a,random_init pretrained,$(TRANSFER)/$(p)_$(a).json)) \
	$(TRANSFER)/zero_shot.json
$(DEMO)/transfer.json: $(TRANSFER_RESULTS) | setup
	$(PY) -m transfer.show collect=$(TRANSFER) out=$@ > /dev/null
transfer: $(DEMO)/transfer.json

# --- the papers' comparison at equal compute (SWAG vs SEER, MAWS) --------------------------------
# Every arm of an architecture gets COMPARE_BUDGET CPU seconds of measured training steps;
# COMPARE_SEEDS pretraining seeds each; linear probe and few-shot k=5 on the held-out task,
# bootstrap CIs -> compare.json, compare.md, compare.png.
COMPARE ?= $(DEMO)/compare
COMPARE_BUDGET ?= 150
COMPARE_SEEDS ?= 0 1 2
comma := ,
space := $(subst ,, )
SETTING_compare = $(COMPARE_BUDGET) $(COMPARE_SEEDS) $(NPROC) $(TRANSFER_IMG)
$(DEMO)/compare.json: $(DEMO)/card/dataset_card.md $(DOWNSTREAM)/task.json $(EXPERIMENT_CODE) $(call settings,compare) | setup
	mkdir -p $(COMPARE)
	$(PY) -m experiments.compare plan shards=$(DEMO)/shards sample_index=$(DEMO)/samples vocab=$(DEMO)/vocab \
		budget_cpu_s=$(COMPARE_BUDGET) nproc=$(NPROC) out=$(COMPARE)
	$(PY) -m experiments.compare run out=$(COMPARE) data=$(DOWNSTREAM) seeds=[$(subst $(space),$(comma),$(strip $(COMPARE_SEEDS)))] \
		img_size=$(TRANSFER_IMG)
	$(PY) -m experiments.compare report out=$(COMPARE) json=$@
compare: $(DEMO)/compare.json

# --- MetaCLIP balancing vs SWAG's importance resampling at equal compute (issue 31) -------------
# Two corpora of the openclipart images: the authors' keywords as hashtags (the demo's vocab, shards,
# samples) and the SVG titles/descriptions as captions, their WordNet noun entries as the hashtags
# (under $(CAPTIONS)); each gets an importance index (samples) and a MetaCLIP one (cap CAP,
# METACLIP_EPOCHS fresh draws: samples-metaclip). Four RegNetY hashtag arms (experiments/arms.py
# arms=sampling), COMPARE_BUDGET CPU-s each -> compare-sampling.json, $(COMPARE_SAMPLING)/compare.{md,png}.
CAPTIONS := $(DEMO)/captions
COMPARE_SAMPLING ?= $(DEMO)/compare-sampling
# CAP: MetaCLIP's t, a label of f images keeps each with min(1, CAP / f) (~2,500 images an epoch at 50);
# METACLIP_EPOCHS: demo_cpu's 38,400 samples are ~15 such epochs, a fresh draw for each
CAP ?= 50
METACLIP_EPOCHS ?= 16
$(CAPTIONS)/vocab/stats.json: $(DEMO)/dedup/stats.json $(call JOB_CODE,vocab) | setup
	$(SPARK_SUBMIT) jobs/vocab.py --manifest $(PRETRAIN_MANIFEST) --out $(CAPTIONS)/vocab \
		--tags-from caption --caption-column text
$(CAPTIONS)/labeled/stats.json: $(CAPTIONS)/vocab/stats.json $(call JOB_CODE,label) $(call settings,label) | setup
	$(SPARK_SUBMIT) jobs/label.py --manifest $(PRETRAIN_MANIFEST) --vocab $(CAPTIONS)/vocab --out $(CAPTIONS)/labeled \
		--tail-threshold $(TAIL_THRESHOLD)
$(CAPTIONS)/shards/_SUCCESS: $(CAPTIONS)/labeled/stats.json $(call JOB_CODE,shards) $(call settings,shards) | setup
	$(SPARK_SUBMIT) jobs/shards.py --labeled $(CAPTIONS)/labeled --out $(CAPTIONS)/shards --format $(FORMAT) \
		--shard-size $(SHARD_SIZE) --max-side $(MAX_SIDE)
# $(call resample_in,CORPUS): jobs/resample.py on CORPUS/labeled, bound to CORPUS/shards
resample_in = $(SPARK_SUBMIT) jobs/resample.py --labeled $(1)/labeled --shards $(1)/shards --seed $(SEED)
$(CAPTIONS)/samples/stats.json: $(CAPTIONS)/shards/_SUCCESS $(call JOB_CODE,resample) $(call settings,resample) | setup
	$(call resample_in,$(CAPTIONS)) --out $(CAPTIONS)/samples --num-samples $(NUM_SAMPLES) --alpha $(ALPHA) \
		--epochs $(EPOCHS)
SETTING_metaclip = $(CAP) $(METACLIP_EPOCHS) $(SEED)
$(DEMO)/samples-metaclip/stats.json $(CAPTIONS)/samples-metaclip/stats.json: %/samples-metaclip/stats.json: \
		%/shards/_SUCCESS $(call JOB_CODE,resample) $(call settings,metaclip) | setup
	$(call resample_in,$*) --out $*/samples-metaclip --strategy metaclip --cap $(CAP) --epochs $(METACLIP_EPOCHS)
# $(call corpus,DIR): DIR's shards, vocab and both indices, as experiments.compare plan's corpora= reads them
corpus = {shards: $(1)/shards, vocab: $(1)/vocab, indices: {importance: $(1)/samples, metaclip: $(1)/samples-metaclip}}
SAMPLING_INDICES := $(foreach c,$(DEMO) $(CAPTIONS),$(c)/samples/stats.json $(c)/samples-metaclip/stats.json)
$(DEMO)/compare-sampling.json: $(SAMPLING_INDICES) $(DOWNSTREAM)/task.json $(EXPERIMENT_CODE) $(call settings,compare) | setup
	mkdir -p $(COMPARE_SAMPLING)
	$(PY) -m experiments.compare plan arms=sampling budget_cpu_s=$(COMPARE_BUDGET) nproc=$(NPROC) \
		out=$(COMPARE_SAMPLING) 'corpora={keywords: $(call corpus,$(DEMO)), captions: $(call corpus,$(CAPTIONS))}'
	$(PY) -m experiments.compare run out=$(COMPARE_SAMPLING) data=$(DOWNSTREAM) \
		seeds=[$(subst $(space),$(comma),$(strip $(COMPARE_SEEDS)))] img_size=$(TRANSFER_IMG)
	$(PY) -m experiments.compare report out=$(COMPARE_SAMPLING) json=$@
compare-sampling: $(DEMO)/compare-sampling.json
.PHONY: compare-sampling

# --- LiT zero-shot (MAWS) ------------------------------------------------------------------------
# A text tower trained against the locked demo export on the pretraining images' SVG titles and
# descriptions, then zero-shot by class name next to SWAG's WordNet route (both aggregations) and
# the majority rate, with bootstrap CIs -> $(LIT)/zero_shot.json and .md.
LIT ?= $(DEMO)/lit
LIT_CONFIG ?= trainer/configs/lit_demo_cpu.yaml
SETTING_lit = $(LIT_CONFIG) $(NPROC) $(TRANSFER_IMG)
CLASS_SYNSETS := class_synsets=pipeline/data/openclipart_class_synsets.yaml
ZERO_SHOT = $(PY) -m transfer.zero_shot data=$(DOWNSTREAM) img_size=$(TRANSFER_IMG) cache_dir=$(LIT)/features
$(LIT)/run/result.json: $(DEMO)/pretrain/result.json $(TRAINER_CODE) $(call settings,lit) | setup
	$(call set_aside_finished,$(LIT)/run)
	$(TORCHRUN) --nproc_per_node=$(NPROC) -m trainer.lit --config $(LIT_CONFIG) shards=$(DEMO)/shards \
		image_tower=$(DEMO)/pretrain/export run_dir=$(LIT)/run img_size=$(TRANSFER_IMG)
$(LIT)/zero_shot.json: $(LIT)/run/result.json $(DOWNSTREAM)/task.json $(TRANSFER_CODE) | setup
	$(ZERO_SHOT) method=lit model=$(LIT)/run/export out=$(LIT)/lit.json
	$(ZERO_SHOT) method=wordnet aggregation=average model=$(DEMO)/pretrain/export $(CLASS_SYNSETS) out=$(LIT)/wordnet_average.json
	$(ZERO_SHOT) method=wordnet aggregation=split_max model=$(DEMO)/pretrain/export $(CLASS_SYNSETS) out=$(LIT)/wordnet_split_max.json
	$(PY) -m transfer.zero_shot_table data=$(DOWNSTREAM) lit=$(LIT)/lit.json wordnet_average=$(LIT)/wordnet_average.json \
		wordnet_split_max=$(LIT)/wordnet_split_max.json out=$@
demo-lit: $(LIT)/zero_shot.json

# --- per-group analyses (SWAG section 5, SEER's fairness indicators) -------------------------------
# Hashtag associations (SWAG Figure 7, with #man's rate per group) and SEER's harmful label types for
# the demo export on the held-out val images, their category as the group: the tools at work, not a
# fairness result (clipart categories are not people). Tables printed; $(GROUPS)/*.{json,md,png}.
GROUPS ?= $(DEMO)/groups
GROUPS_MIN ?= 10
GROUPS_HASHTAG ?= man
GROUPS_CODE := $(wildcard transfer/groups/*.py) $(TRANSFER_CODE)
GROUPS_RUN = $(PY) -m transfer.groups $(1) model=$(TRUNK_pretrained) data=$(DOWNSTREAM)/val layout=folder \
	group=folder img_size=$(TRANSFER_IMG) min_group_size=$(GROUPS_MIN) cache_dir=$(GROUPS)/features
SETTING_groups = $(GROUPS_MIN) $(GROUPS_HASHTAG) $(TRANSFER_IMG)
$(GROUPS)/associations.json: $(DEMO)/pretrain/result.json $(DOWNSTREAM)/task.json $(GROUPS_CODE) $(call settings,groups) | setup
	$(call GROUPS_RUN,associations) hashtag=$(GROUPS_HASHTAG) out=$@ > /dev/null
$(GROUPS)/harmful.json: $(DEMO)/pretrain/result.json $(DOWNSTREAM)/task.json $(GROUPS_CODE) $(call settings,groups) | setup
	$(call GROUPS_RUN,harmful) out=$@ > /dev/null
groups: $(GROUPS)/associations.json $(GROUPS)/harmful.json
	@cat $(GROUPS)/associations.md; echo; cat $(GROUPS)/harmful.md

# --- the main job --------------------------------------------------------------------------------
demo: $(DEMO)/transfer.json
	$(PY) -m pipeline.show_vocab vocab=$(DEMO)/vocab
	$(PY) -m trainer.show_run run_dir=$(DEMO)/pretrain
	$(PY) -m transfer.show table=$(DEMO)/transfer.json
	@echo "dataset card: $(DEMO)/card/dataset_card.md; shards: $(DEMO)/shards; transfer: $(TRANSFER)/*.md"

# --- tests and benchmarks ------------------------------------------------------------------------
# test: everything CI runs (.ci/run), with the 25 slowest tests; test-fast: the edit loop (tests/unit/
# without Spark or torchrun: no spark, multiprocess, cluster, integration or slow test); test-all: also
# the slow end-to-end tests. The markers are given by tests/conftest.py (pyproject lists them).
FAST := not spark and not multiprocess and not cluster and not integration and not slow
test: setup
	$(VENV)/bin/pytest -q --durations=25

test-fast: setup
	$(VENV)/bin/pytest -q -m '$(FAST)'

test-all: setup
	$(VENV)/bin/pytest -q -m '' --durations=25

bench: setup
	$(PY) -m bench.run

clean:
	rm -rf $(DEMO)
