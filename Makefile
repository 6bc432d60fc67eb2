# Fresh machine: `make demo` builds the embedded demo corpus, `make test` runs the tests. Both run `make setup`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup browser demo test test-fast bench crash clean-demo

$(VENV)/.setup-done: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.setup-done

demo: setup
	$(PY) jobs/build_longvid.py

# Debian's chromium for the report's browser test (skips with a reason where it cannot be installed).
browser:
	sh scripts/install_chromium.sh

test: setup browser
	$(PY) -m pytest -q tests

# About a minute: everything that needs neither Ray nor a whole build (tests marked `slow` are deselected).
test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

# Each benchmark prints its tables and writes them into its marked section of benchmarks/RESULTS.md.
bench: setup
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/hico.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/annotate.py
	$(PY) benchmarks/loader.py
	$(PY) benchmarks/preprocess.py

# Kill the build at N random moments across all stages, rerun, compare with uninterrupted builds (docs/robustness.md).
N ?= 10
crash: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/crash.py --kills $(N)

clean-demo:
	rm -rf longvid-demo
