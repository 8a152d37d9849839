# The README's commands. Each creates .venv on first use and installs pinned dependencies.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench constraints clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m airflow_provider_ctxcache.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.fanout

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Re-pin after changing dependencies in pyproject.toml.
constraints:
	rm -rf /tmp/ctxcache-pin && $(PYTHON) -m venv /tmp/ctxcache-pin
	/tmp/ctxcache-pin/bin/python -m pip install --quiet --upgrade pip
	/tmp/ctxcache-pin/bin/python -m pip install --quiet -e ".[test]"
	{ echo "# Pinned versions for reproducible installs: pip install -c constraints.txt -e '.[test]'"; \
	  echo "# Regenerate with 'make constraints' after changing dependencies in pyproject.toml."; \
	  /tmp/ctxcache-pin/bin/python -m pip freeze --exclude-editable | grep -v '^airflow-provider-ctxcache' | sort -f; \
	} > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
