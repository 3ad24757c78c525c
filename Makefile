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

.PHONY: setup dataset vocab shards demo test test-all bench clean

setup:
	@bash scripts/setup.sh

$(DEMO)/manifest.parquet: | setup
	$(PY) -m jobs.ingest_openclipart --root $(OPENCLIPART) --out $(DEMO)

vocab: setup $(DEMO)/manifest.parquet
	$(SPARK_SUBMIT) jobs/vocab.py --manifest $(DEMO)/manifest.parquet --out $(DEMO)/vocab

dataset: vocab

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
