# Stages of the toolkit. `make demo` and `make test` are the two commands a new machine needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BUILD ?= build
DEMO := $(BUILD)/demo
MASTER ?= local[*]
OPENCLIPART ?= /usr/share/openclipart
SPARK_SUBMIT := PYSPARK_PYTHON=$(abspath $(PY)) PYSPARK_DRIVER_PYTHON=$(abspath $(PY)) $(VENV)/bin/spark-submit --master '$(MASTER)'
export PYTHONHASHSEED := 0

.PHONY: setup dataset vocab label resample shards demo test test-all bench clean

setup:
	@bash scripts/setup.sh

$(DEMO)/manifest.parquet: | setup
	$(PY) -m jobs.ingest_openclipart --root $(OPENCLIPART) --out $(DEMO)

vocab: setup $(DEMO)/manifest.parquet
	$(SPARK_SUBMIT) jobs/vocab.py --manifest $(DEMO)/manifest.parquet --out $(DEMO)/vocab

TAIL_THRESHOLD ?= 10  # openclipart: natural head share 0.86 > alpha, so resampling flattens the head
SAMPLES ?= 20000
ALPHA ?= 0.7
SEED ?= 0

label: vocab
	$(SPARK_SUBMIT) jobs/label.py --manifest $(DEMO)/manifest.parquet --vocab $(DEMO)/vocab --out $(DEMO)/labeled --tail-threshold $(TAIL_THRESHOLD)

resample: label
	$(SPARK_SUBMIT) jobs/resample.py --labeled $(DEMO)/labeled --out $(DEMO)/samples --samples $(SAMPLES) --alpha $(ALPHA) --seed $(SEED)

dataset: resample

demo: dataset
	$(PY) -m pipeline.show_vocab $(DEMO)/vocab

test: setup
	$(VENV)/bin/pytest -q

test-all: setup
	$(VENV)/bin/pytest -q -m ''

bench: setup
	$(PY) -m bench.run

clean:
	rm -rf $(BUILD)/demo
