# Stages of the toolkit. `make demo` and `make test` are the two commands a new machine needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BUILD ?= build
DEMO := $(BUILD)/demo
MASTER ?= local[*]
OPENCLIPART ?= /usr/share/openclipart
SPARK_SUBMIT := PYSPARK_PYTHON=$(abspath $(PY)) PYSPARK_DRIVER_PYTHON=$(abspath $(PY)) $(VENV)/bin/spark-submit --master '$(MASTER)' --conf spark.log.level=WARN --conf spark.ui.showConsoleProgress=false
export PYTHONHASHSEED := 0

.PHONY: setup dataset dedup vocab label resample report shards pretrain transfer demo demo-maws demo-lit test test-all bench clean

setup:
	@bash scripts/setup.sh

# re-ingested when the ingest code changes (a new manifest column reaches every later stage)
$(DEMO)/manifest.parquet: jobs/ingest_openclipart.py pipeline/openclipart.py schemas/__init__.py | setup
	$(PY) -m jobs.ingest_openclipart --root $(OPENCLIPART) --out $(DEMO)

# Near-duplicates of the evaluation set(s) leave the manifest before the vocab/label chain reads it.
EVAL ?= $(DEMO)/heldout.parquet
PRETRAIN_MANIFEST := $(DEMO)/dedup/manifest.parquet
dedup: setup $(DEMO)/manifest.parquet
	$(SPARK_SUBMIT) jobs/dedup.py --manifest $(DEMO)/manifest.parquet $(foreach e,$(EVAL),--eval $(e)) --out $(DEMO)/dedup

vocab: dedup
	$(SPARK_SUBMIT) jobs/vocab.py --manifest $(PRETRAIN_MANIFEST) --out $(DEMO)/vocab

TAIL_THRESHOLD ?= 10  # openclipart: natural head share 0.86 > alpha, so resampling flattens the head
SAMPLES ?= 20000
ALPHA ?= 0.7
SEED ?= 0

label: vocab
	$(SPARK_SUBMIT) jobs/label.py --manifest $(PRETRAIN_MANIFEST) --vocab $(DEMO)/vocab --out $(DEMO)/labeled --tail-threshold $(TAIL_THRESHOLD)

# Shards store every labelled image once; the sample index (resample --shards) says which images
# each epoch trains on, applied by the loaders: another alpha or strategy needs no new shards.
FORMAT ?= wds,ffcv
SHARD_SIZE ?= 250
MAX_SIDE ?= 320
shards: label
	$(SPARK_SUBMIT) jobs/shards.py --labeled $(DEMO)/labeled --out $(DEMO)/shards --format $(FORMAT) --shard-size $(SHARD_SIZE) --max-side $(MAX_SIDE)

EPOCHS ?= 1
resample: shards
	$(SPARK_SUBMIT) jobs/resample.py --labeled $(DEMO)/labeled --out $(DEMO)/samples --samples $(SAMPLES) --alpha $(ALPHA) --seed $(SEED) \
		--shards $(DEMO)/shards --epochs $(EPOCHS)

report: resample
	$(PY) -m jobs.report --manifest $(PRETRAIN_MANIFEST) --vocab $(DEMO)/vocab --labeled $(DEMO)/labeled --samples $(DEMO)/samples --out $(DEMO)/card \
		--ingest-stats $(DEMO)/ingest_stats.json --dedup-stats $(DEMO)/dedup/stats.json

dataset: report

# Sampling ablations from one shard set (WSL's natural / sqrt / uniform against SWAG's importance):
# `make ablation` draws one index per strategy and pretrains on each; `make pretrain-unique
# UNIQUE_IMAGES=N` is SWAG appendix C.2 (the same samples drawn from a seeded subset of N images).
STRATEGIES := importance natural sqrt uniform
UNIQUE_IMAGES ?= 1000
$(addprefix index-,$(STRATEGIES)): index-%: shards
	$(SPARK_SUBMIT) jobs/resample.py --labeled $(DEMO)/labeled --out $(DEMO)/samples-$* --samples $(SAMPLES) --alpha $(ALPHA) \
		--seed $(SEED) --strategy $* --shards $(DEMO)/shards
index-unique: shards
	$(SPARK_SUBMIT) jobs/resample.py --labeled $(DEMO)/labeled --out $(DEMO)/samples-unique --samples $(SAMPLES) --alpha $(ALPHA) \
		--seed $(SEED) --unique-images $(UNIQUE_IMAGES) --shards $(DEMO)/shards
$(addprefix pretrain-,$(STRATEGIES) unique): pretrain-%: index-%
	rm -rf $(DEMO)/pretrain-$*
	$(TORCHRUN) --nproc_per_node=$(NPROC) -m trainer.pretrain --config trainer/configs/demo_cpu.yaml \
		shards=$(DEMO)/shards samples=$(DEMO)/samples-$* vocab=$(DEMO)/vocab run_dir=$(DEMO)/pretrain-$*
ablation: $(addprefix pretrain-,$(STRATEGIES))
.PHONY: ablation index-unique $(addprefix index-,$(STRATEGIES)) $(addprefix pretrain-,$(STRATEGIES) unique)

TORCHRUN := $(VENV)/bin/torchrun --standalone
NPROC ?= 1
pretrain: dataset
	rm -rf $(DEMO)/pretrain
	$(TORCHRUN) --nproc_per_node=$(NPROC) -m trainer.pretrain --config trainer/configs/demo_cpu.yaml \
		shards=$(DEMO)/shards samples=$(DEMO)/samples vocab=$(DEMO)/vocab run_dir=$(DEMO)/pretrain

# MAWS on the demo: MAE pre-pretraining -> hashtag pretraining from its encoder -> linear probe,
# next to plain hashtag pretraining of the same ViT given the same compute (measured step times).
MAWS ?= $(DEMO)/maws
DOWNSTREAM ?= $(DEMO)/downstream
MAE_CONFIG ?= trainer/configs/mae_demo_cpu.yaml
VIT_CONFIG ?= trainer/configs/demo_vit_cpu.yaml
VIT_IMG ?= 64

$(DOWNSTREAM)/task.json: | $(DEMO)/manifest.parquet
	$(PY) -m transfer.heldout_task --heldout $(DEMO)/heldout.parquet --out $(DOWNSTREAM)

demo-maws: dataset $(DOWNSTREAM)/task.json
	rm -rf $(MAWS)
	mkdir -p $(MAWS)
	$(PY) -m transfer.maws_compare cost --mae-config $(MAE_CONFIG) --pretrain-config $(VIT_CONFIG) \
		--shards $(DEMO)/shards --out $(MAWS)/step_cost.json > $(MAWS)/plain_total_samples.txt
	$(TORCHRUN) --nproc_per_node=$(NPROC) -m trainer.mae --config $(MAE_CONFIG) shards=$(DEMO)/shards run_dir=$(MAWS)/mae
	$(TORCHRUN) --nproc_per_node=$(NPROC) -m trainer.pretrain --config $(VIT_CONFIG) shards=$(DEMO)/shards \
		samples=$(DEMO)/samples vocab=$(DEMO)/vocab run_dir=$(MAWS)/maws init_from=$(MAWS)/mae/export
	$(TORCHRUN) --nproc_per_node=$(NPROC) -m trainer.pretrain --config $(VIT_CONFIG) shards=$(DEMO)/shards \
		samples=$(DEMO)/samples vocab=$(DEMO)/vocab run_dir=$(MAWS)/plain total_samples=$$(cat $(MAWS)/plain_total_samples.txt)
	$(PY) -m transfer.linear_probe model=$(MAWS)/maws/export data=$(DOWNSTREAM) out=$(MAWS)/probe_maws.json img_size=$(VIT_IMG)
	$(PY) -m transfer.linear_probe model=$(MAWS)/plain/export data=$(DOWNSTREAM) out=$(MAWS)/probe_plain.json img_size=$(VIT_IMG)
	$(PY) -m transfer.linear_probe model=random:vit_tiny_patch16_224 data=$(DOWNSTREAM) out=$(MAWS)/probe_random.json img_size=$(VIT_IMG)
	$(PY) -m transfer.maws_compare report --cost $(MAWS)/step_cost.json --mae $(MAWS)/mae --maws $(MAWS)/maws \
		--plain $(MAWS)/plain --probe-maws $(MAWS)/probe_maws.json --probe-plain $(MAWS)/probe_plain.json \
		--probe-random $(MAWS)/probe_random.json --out $(DEMO)/maws.json
	@echo "MAE reconstructions: $(MAWS)/mae/reconstructions.png; loss curves: $(MAWS)/*/curves.png"

# The papers' comparison (SWAG vs SEER, MAWS): every arm of an architecture gets COMPARE_BUDGET CPU
# seconds of measured training steps; COMPARE_SEEDS pretraining seeds each; linear probe and
# few-shot k=5 on the held-out task, bootstrap CIs -> compare.json, compare.md, compare.png.
COMPARE ?= $(DEMO)/compare
COMPARE_BUDGET ?= 150
COMPARE_SEEDS ?= 0 1 2
compare: dataset $(DOWNSTREAM)/task.json
	mkdir -p $(COMPARE)
	$(PY) -m transfer.compare plan --shards $(DEMO)/shards --samples $(DEMO)/samples \
		--vocab $(DEMO)/vocab --budget-cpu-s $(COMPARE_BUDGET) --nproc $(NPROC) --out $(COMPARE)
	$(PY) -m transfer.compare run --out $(COMPARE) --data $(DOWNSTREAM) --seeds $(COMPARE_SEEDS) --img-size $(TRANSFER_IMG)
	$(PY) -m transfer.compare report --out $(COMPARE) --json $(DEMO)/compare.json
.PHONY: compare

# Transfer (SWAG section 4): linear probe and few-shot for a random and the hashtag-pretrained trunk of
# the same architecture, zero-shot through WordNet, a short finetune of each; table -> transfer.json.
TRANSFER ?= $(DEMO)/transfer
# TRANSFER_ARCH: trainer/configs/demo_cpu.yaml's model; FINETUNE_LR is at batch 512 (0.025 at the demo's 32)
TRANSFER_ARCH ?= regnety_002
TRANSFER_IMG ?= 64
FEW_SHOT_SEEDS ?= 3
FINETUNE_STEPS ?= 30
FINETUNE_BATCH ?= 32
FINETUNE_LR ?= 0.4
PROBE = $(PY) -m transfer.$(1) data=$(DOWNSTREAM) img_size=$(TRANSFER_IMG) cache_dir=$(TRANSFER)/features
FINETUNE = $(TORCHRUN) --nproc_per_node=$(NPROC) -m transfer.finetune data=$(DOWNSTREAM) img_size=$(TRANSFER_IMG) \
	steps=$(FINETUNE_STEPS) batch_size=$(FINETUNE_BATCH) base_lr=$(FINETUNE_LR) workers=1 log_every=5

transfer: pretrain $(DOWNSTREAM)/task.json
	rm -rf $(TRANSFER)
	$(call PROBE,linear_probe) model=random:$(TRANSFER_ARCH) out=$(TRANSFER)/linear_random_init.json
	$(call PROBE,linear_probe) model=$(DEMO)/pretrain/export out=$(TRANSFER)/linear_pretrained.json
	$(call PROBE,few_shot) model=random:$(TRANSFER_ARCH) out=$(TRANSFER)/few_shot_random_init.json seeds=$(FEW_SHOT_SEEDS)
	$(call PROBE,few_shot) model=$(DEMO)/pretrain/export out=$(TRANSFER)/few_shot_pretrained.json seeds=$(FEW_SHOT_SEEDS)
	$(call PROBE,zero_shot) model=$(DEMO)/pretrain/export out=$(TRANSFER)/zero_shot.json \
		class_synsets=pipeline/data/openclipart_class_synsets.yaml
	$(FINETUNE) model=random:$(TRANSFER_ARCH) out=$(TRANSFER)/finetune_random_init.json
	$(FINETUNE) model=$(DEMO)/pretrain/export out=$(TRANSFER)/finetune_pretrained.json
	$(PY) -m transfer.show --collect $(TRANSFER) --out $(DEMO)/transfer.json > /dev/null

# LiT zero-shot (MAWS): a text tower trained against the locked demo export on the pretraining
# images' SVG titles and descriptions, then zero-shot by class name next to SWAG's WordNet route
# (both aggregations) and the majority rate, with bootstrap CIs -> $(LIT)/zero_shot.json and .md.
LIT ?= $(DEMO)/lit
LIT_CONFIG ?= trainer/configs/lit_demo_cpu.yaml
CLASS_SYNSETS := class_synsets=pipeline/data/openclipart_class_synsets.yaml
ZERO_SHOT = $(PY) -m transfer.zero_shot data=$(DOWNSTREAM) img_size=$(TRANSFER_IMG) cache_dir=$(LIT)/features
demo-lit: pretrain $(DOWNSTREAM)/task.json
	rm -rf $(LIT)
	$(TORCHRUN) --nproc_per_node=$(NPROC) -m trainer.lit --config $(LIT_CONFIG) shards=$(DEMO)/shards \
		image_tower=$(DEMO)/pretrain/export run_dir=$(LIT)/run img_size=$(TRANSFER_IMG)
	$(ZERO_SHOT) method=lit model=$(LIT)/run/export out=$(LIT)/lit.json
	$(ZERO_SHOT) method=wordnet aggregation=average model=$(DEMO)/pretrain/export $(CLASS_SYNSETS) out=$(LIT)/wordnet_average.json
	$(ZERO_SHOT) method=wordnet aggregation=split_max model=$(DEMO)/pretrain/export $(CLASS_SYNSETS) out=$(LIT)/wordnet_split_max.json
	$(PY) -m transfer.zero_shot_table data=$(DOWNSTREAM) lit=$(LIT)/lit.json wordnet_average=$(LIT)/wordnet_average.json \
		wordnet_split_max=$(LIT)/wordnet_split_max.json out=$(LIT)/zero_shot.json

demo: transfer
	$(PY) -m pipeline.show_vocab $(DEMO)/vocab
	$(PY) -m trainer.show_run $(DEMO)/pretrain
	$(PY) -m transfer.show $(DEMO)/transfer.json
	@echo "dataset card: $(DEMO)/card/dataset_card.md; shards: $(DEMO)/shards; transfer: $(TRANSFER)/*.md"

test: setup
	$(VENV)/bin/pytest -q

test-all: setup
	$(VENV)/bin/pytest -q -m ''

bench: setup
	$(PY) -m bench.run

clean:
	rm -rf $(BUILD)/demo
