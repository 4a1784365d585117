# pdfgc — `make help` lists the targets.
PY ?= .venv/bin/python
PIP ?= .venv/bin/pip
SHELL := /bin/bash

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F ':.*?## ' '{printf "  %-12s %s\n", $$1, $$2}'

.venv/done: requirements.txt pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q -r requirements.txt
	LWS_USE_CYTHON=1 $(PIP) install -q --no-build-isolation lws==1.2.8
	$(PIP) install -q --no-deps -e .
	touch $@

setup: .venv/done ## create .venv and install everything (pinned)
	@command -v espeak-ng >/dev/null || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq espeak-ng) >/dev/null 2>&1; } || \
	  echo "note: espeak-ng not installed; the sample speech falls back to a synthetic voice"

browser: ## Debian's chromium and chromium-driver, for the app's browser tests (where missing)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)

test: setup browser ## run the test suite (fast tests; `make test-all` adds the slow ones)
	$(PY) -m pytest -m "not slow"

test-all: setup browser ## run every test, slow ones included
	$(PY) -m pytest

demo: setup ## the main job: synthetic data -> every stage -> evaluation -> demo video (~10-15 min)
	$(PY) -m pdfgc.demo

sample: setup ## render the built-in sample with random tiny weights (the inference pipeline)
	$(PY) -m pdfgc.samples outputs/sample
	$(PY) infer.py model=tiny weights=outputs/sample/weights audio=outputs/sample/speech.wav \
	  appearance=outputs/sample/portrait.png pose=outputs/sample/driver.mp4 \
	  eye=outputs/sample/driver.mp4 panel=true output=outputs/sample/result.mp4

app: setup ## the web app on 127.0.0.1:7860 (python -m pdfgc.app; options in conf/app.yaml)
	$(PY) -m pdfgc.app

bench: setup ## inference speed at official size on this machine
	$(PY) benchmarks/inference.py

bench-data: setup ## DataModule samples/s at 64 and 224 px beside the training step rate
	$(PY) benchmarks/data.py

lint: setup ## ruff
	$(PY) -m ruff check src tests benchmarks *.py

clean: ## remove outputs (keeps .venv)
	rm -rf outputs multirun .pytest_cache

.PHONY: help setup browser test test-all demo sample app bench bench-data lint clean
