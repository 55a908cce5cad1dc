# Two entry points: `make run` (main job on the synthetic demo data) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export BENTOML_DO_NOT_TRACK ?= true
export GX_ANALYTICS_ENABLED ?= false
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: run test test-fast results lint format clean

$(STAMP): pyproject.toml requirements-lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements-lock.txt -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cxr train

# The whole suite, what CI runs (.ci/run). With CI=true a missing ../shared/data fails it.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# Code tests only (no training, no servers, no real images): for development.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow and not real_data"

# research/RESULTS.md from real data (research/real_data_results.sh): ~50 min per recipe
# seed on 2 cores with AVX512-BF16, about three hours without (research/train_speed.py)
results: $(STAMP)
	CXR=$(BIN)/cxr PYTHON=$(BIN)/python research/real_data_results.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) runs data/demo .pytest_cache
