# Two commands do all the set-up on a fresh machine (either may run first; both are idempotent):
#   make demo   installs moelens and runs the main job on the embedded model (report + dashboard)
#   make test   installs everything the tests need and runs the whole test suite
# torch is installed pinned first: on CPU-only machines an unpinned torch pulls a multi-GB CUDA build.
# Both install from the lock (constraints.txt: versions known to pass). `make test-latest` runs the same
# suite in .venv-latest against the newest releases of the day; `make lock` rewrites the lock from it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
LOCK := constraints.txt
PIP := -m pip install -q --disable-pip-version-check
LATEST_VENV := .venv-latest
LATEST_PY := $(LATEST_VENV)/bin/python

.PHONY: demo test test-latest lock install install-dev browser clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	touch $@

$(VENV)/.installed: pyproject.toml $(LOCK) $(VENV)/.torch
	$(PY) $(PIP) -c $(LOCK) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(LOCK) $(VENV)/.torch
	$(PY) $(PIP) -c $(LOCK) -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# Debian's Chromium for the dashboard's browser tests (driven headless by Playwright, no download)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

demo: install
	$(VENV)/bin/moelens demo --out demo

test: install-dev browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The same suite against the newest release of every dependency (no lock), in its own venv.
test-latest: browser
	test -x $(LATEST_PY) || $(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_PY) $(PIP) "$(TORCH)"
	echo "$(TORCH)" > $(LATEST_VENV)/torch-pin.txt  # everything newest except torch (a CUDA build is GBs)
	$(LATEST_PY) $(PIP) --upgrade --upgrade-strategy eager -c $(LATEST_VENV)/torch-pin.txt -e ".[dev]"
	$(LATEST_PY) -m pip list --disable-pip-version-check 2>/dev/null | grep -iE "^(transformers|torch|duckdb|polars|pyarrow|numpy|nnsight|triton|altair) "
	$(LATEST_PY) -m pytest $(PYTEST_ARGS)

# Rewrite the lock from the newest releases (after `make test-latest` passed).
lock:
	test -x $(LATEST_PY) || $(MAKE) test-latest
	{ sed -n '1,3p' $(LOCK); echo "# Python $$($(LATEST_PY) -c 'import platform; print(platform.python_version())'), $$(uname -s) $$(uname -m), $$(date +%Y-%m-%d)."; \
	  $(LATEST_PY) -m pip freeze --disable-pip-version-check | grep -vE "^(-e |moelens|torch==)"; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

clean:
	rm -rf $(VENV) $(LATEST_VENV) demo .pytest_cache
