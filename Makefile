# The two commands of a fresh machine:
#   make demo   set up .venv and run the offline demo campaign
#   make test   set up .venv and run every check CI runs (lint, types, import contracts, tests)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
# CI exports this; locally PostgreSQL tests run when the server answers, else skip with a reason.
export MEDCROWD_TEST_POSTGRES_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test

.PHONY: install demo test lint typecheck contracts pytest clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# constraints.txt pins torch to the local CPU wheel: no CUDA download, ever.
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@! $(BIN)/pip list 2>/dev/null | grep -i '^nvidia-' || (echo "CUDA packages were installed" && exit 1)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/medcrowd demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck contracts pytest

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
