# llmcloud: every command sets itself up on a fresh machine (Python 3.11+).
#   make plan [STACK=dev]      offline plan of a stack (no Pulumi CLI, no AWS credentials)
#   make test                  lint + the whole test suite
#   make docs                  regenerate the README's config tables from the config model
#   make preview STACK=prod    real `pulumi preview` with the policy pack (needs the Pulumi CLI + AWS)
#   make up STACK=dev          real `pulumi up` with the policy pack (needs the Pulumi CLI + AWS)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STACK  ?= dev
FORMAT ?= table
STAMP  := $(VENV)/.installed
# checkov pins its own dependencies (some clash with ours), so it lives in a venv of its own.
CHECKOV_VENV  := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: setup plan test lint docs bench preview up clean
# Recipes print only their tools' output (`make plan FORMAT=json > plan.json` is pure JSON);
# the one-time setup writes its progress to stderr.
.SILENT:
MAKEFLAGS += --no-print-directory

$(STAMP): pyproject.toml
	echo "setting up $(VENV) (once)" >&2
	$(PYTHON) -m venv $(VENV) >&2
	$(BIN)/pip install --quiet --upgrade pip >&2
	$(BIN)/pip install --quiet "torch==2.13.0" >&2
	$(BIN)/pip install --quiet -e ".[dev]" >&2
	touch $(STAMP)

$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV) >&2
	$(CHECKOV_VENV)/bin/pip install --quiet "checkov==3.3.30" >&2
	touch $(CHECKOV_STAMP)

setup: $(STAMP)

plan: $(STAMP)
	$(BIN)/llmcloud plan --stack $(STACK) --format $(FORMAT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

docs: $(STAMP)
	$(BIN)/python -m infra.config.docs

test: lint $(CHECKOV_STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/plan.py
	$(BIN)/python benchmarks/stage.py
	$(BIN)/python benchmarks/train.py

preview: $(STAMP)
	pulumi preview --stack $(STACK) --policy-pack policies --policy-pack-config policies/config/$(STACK).json --diff

up: $(STAMP)
	pulumi up --stack $(STACK) --policy-pack policies --policy-pack-config policies/config/$(STACK).json

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .pytest_cache .ruff_cache *.egg-info
