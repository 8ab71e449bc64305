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

# pandas: the whole suite runs with the pandas the test extra resolves (lifelines caps it
# below 3). The pandas-compat set then runs again with the newest pandas (what a fresh
# `pip install healthfed` resolves, 3.x) and with the oldest one pyproject.toml declares,
# each installed alone (--no-deps) into its own folder that goes first on PYTHONPATH.
PANDAS_OLDEST := 2.2.2
COMPAT := .venv-compat
PANDAS_COMPAT_TESTS := tests/test_pandas_range.py tests/data tests/compute/test_stats.py \
	tests/compute/test_glm.py tests/compute/test_preprocess.py tests/compute/test_evaluation.py \
	tests/trust/test_fairness.py tests/trust/test_oversight.py tests/cli/test_cli_error_causes.py \
	tests/governance/test_gov_round_path.py

$(COMPAT)/pandas-newest/.installed: $(STAMP)
	rm -rf $(COMPAT)/pandas-newest
	$(BIN)/python -m pip install --quiet --no-deps --target $(COMPAT)/pandas-newest 'pandas>=$(PANDAS_OLDEST)'
	touch $@

$(COMPAT)/pandas-oldest/.installed: $(STAMP)
	rm -rf $(COMPAT)/pandas-oldest
	$(BIN)/python -m pip install --quiet --no-deps --target $(COMPAT)/pandas-oldest 'pandas==$(PANDAS_OLDEST)'
	touch $@

# Three pytest workers on two cores: the Flower tests mostly wait on SuperNode polls.
test: $(STAMP) $(COMPAT)/pandas-newest/.installed $(COMPAT)/pandas-oldest/.installed
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(BIN)/lint-imports --no-cache
	FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 $(BIN)/python -m pytest -n 3 --dist loadfile
	for v in newest oldest; do \
		echo "pandas-compat tests with the $$v pandas ($(COMPAT)/pandas-$$v)"; \
		PYTHONPATH=$(COMPAT)/pandas-$$v HEALTHFED_PANDAS_UNDER_TEST=$$v \
		FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 \
		$(BIN)/python -m pytest -n 3 --dist loadfile -p no:cacheprovider $(PANDAS_COMPAT_TESTS) \
		|| exit 1; \
	done

lint: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check healthfed tests bench
	$(BIN)/mypy healthfed

bench: $(STAMP)
	$(BIN)/python bench/stats.py

clean:
	rm -rf $(VENV) $(COMPAT) healthfed-demo .pytest_cache
