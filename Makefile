# Two commands for a fresh clone: `make demo` and `make test`. Both set up .venv on first run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: setup demo test bench lab clean

setup: $(STAMP) $(CHROMIUM)

# Reinstall only when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian's chromium renders exported notebooks in the browser tests (playwright drives it; its own browser
# download needs a network the CI machine does not have). Installed when missing and apt can, else a warning.
$(CHROMIUM):
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "warning: $(CHROMIUM) missing and apt-get unavailable: install chromium for tests/test_notebooks_browser.py"; \
	fi

# Ends by serving the monitoring dashboard over the demo's store on 127.0.0.1 until Ctrl-C (`tradebook demo --no-serve`
# stops after the report).
demo: setup
	$(BIN)/tradebook demo

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m bench

lab: setup
	$(BIN)/jupyter lab notebooks/

# Everything the demo, the notebooks and paper sessions made: the venv, the store and its paper runs
# (<store>.runs/; <store>.session/ from before runs had names), and stores made inside notebooks/.
clean:
	rm -rf $(VENV) .pytest_cache .hypothesis tradebook.duckdb tradebook.duckdb.wal tradebook.duckdb.holder \
		*.duckdb.runs *.duckdb.session *.duckdb.cache *.duckdb.reports notebooks/*.duckdb*
