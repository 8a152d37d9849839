# The README's commands. Each creates .venv on first use and installs pinned dependencies.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The other end of google-genai's range: .venv has the newest (constraints.txt), this one the
# floors of pyproject.toml's Google libraries beside apache-airflow-providers-google.
COMPAT := .venv-google-provider
COMPAT_STAMP := $(COMPAT)/.installed
COMPAT_CONSTRAINTS := constraints-google-provider.txt
# The tests that exercise google-genai: the hook, the emulator's conformance, the fan-out.
COMPAT_TESTS := tests/hooks tests/emulator tests/fanout
# The dependencies whose floors (pyproject.toml) the second environment pins.
FLOORS := google-genai google-auth google-cloud-storage
SIDE_LOG := .test-side.log

.PHONY: demo test test-compat test-packaging lint bench bench-cpu bench-triggers dist constraints constraints-google-provider clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

# No .pyc at install (about a minute of 2 GB of Google libraries); imports write the few it uses.
$(COMPAT_STAMP): pyproject.toml $(COMPAT_CONSTRAINTS)
	rm -rf $(COMPAT)
	$(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/python -m pip install --quiet --upgrade pip
	$(COMPAT)/bin/python -m pip install --quiet --no-compile -c $(COMPAT_CONSTRAINTS) \
	  -e ".[test-core]" apache-airflow-providers-google
	touch $(COMPAT_STAMP)

demo: $(STAMP)
	$(BIN)/python -m airflow_provider_ctxcache.demo

# The whole suite in .venv. Meanwhile, in the background, the wheel is checked (test-packaging)
# and the second environment installed and tested (test-compat); their output follows. On
# 2 cores the side job takes about half the suite's time, so it adds little to the total.
test: $(STAMP)
	@rm -f $(SIDE_LOG); \
	setsid $(MAKE) --no-print-directory -k test-packaging test-compat > $(SIDE_LOG) 2>&1 & side=$$!; \
	trap 'kill -TERM -$$side 2>/dev/null; exit 130' INT TERM; \
	$(BIN)/python -m pytest -q --ignore=tests/packaging; main=$$?; \
	echo "== waiting for test-packaging and test-compat (log: $(SIDE_LOG))"; \
	wait $$side; side=$$?; \
	cat $(SIDE_LOG); \
	[ $$main -eq 0 ] && [ $$side -eq 0 ]

# The wheel installed, not editable, in a fresh environment with constraints.txt (~2 min).
test-packaging: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/packaging

# The google-genai tests against the floors, beside apache-airflow-providers-google.
test-compat: $(COMPAT_STAMP)
	$(COMPAT)/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_TESTS)

# The wheel and the sdist, built with the pinned backend of the test extra (no download).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .

# The latency-bound, CPU-bound and quota-bound cases; all figures to bench-results.json.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.fanout

# The CPU-bound case alone: the operator's path vs a google-genai worker pool, CPU and RSS.
bench-cpu: $(STAMP)
	$(BIN)/python -m benchmarks.cpu

# 200 CacheExpiryTriggers against a minimal shared-client loop: start-up CPU, CPU per call, sockets.
bench-triggers: $(STAMP)
	$(BIN)/python -m benchmarks.triggers

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

# Re-pin the second environment: the floors of $(FLOORS) in pyproject.toml, the Airflow of
# constraints.txt, and the newest apache-airflow-providers-google that pip finds for them.
constraints-google-provider:
	rm -rf /tmp/ctxcache-pin-google && $(PYTHON) -m venv /tmp/ctxcache-pin-google
	/tmp/ctxcache-pin-google/bin/python -m pip install --quiet --upgrade pip
	floors=$$($(PYTHON) -c 'import re, tomllib; \
	  deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
	  print(" ".join(re.sub(r">=([^,]+).*", r"==\1", d) for d in deps if d.split(">=")[0] in "$(FLOORS)".split()))'); \
	/tmp/ctxcache-pin-google/bin/python -m pip install --quiet $$floors "$$(grep '^apache-airflow==' constraints.txt)" \
	  apache-airflow-providers-google -e ".[test-core]"
	{ echo "# The other end of google-genai's range, beside apache-airflow-providers-google: make test-compat."; \
	  echo "# Regenerate with 'make constraints-google-provider' after changing dependencies in pyproject.toml."; \
	  /tmp/ctxcache-pin-google/bin/python -m pip freeze --exclude-editable | grep -v '^airflow-provider-ctxcache' | sort -f; \
	} > $(COMPAT_CONSTRAINTS)

clean:
	rm -rf $(VENV) $(COMPAT) $(SIDE_LOG) dist .pytest_cache .mypy_cache .ruff_cache
