# Two commands for a newcomer: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 $(BIN)/healthfed demo

# Three pytest workers on two cores: the Flower tests mostly wait on SuperNode polls.
test: $(STAMP)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(BIN)/lint-imports --no-cache
	FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 $(BIN)/python -m pytest -n 3 --dist loadfile

lint: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check healthfed tests bench
	$(BIN)/mypy healthfed

bench: $(STAMP)
	$(BIN)/python bench/stats.py

clean:
	rm -rf $(VENV) healthfed-demo .pytest_cache
