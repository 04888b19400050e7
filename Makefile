# Two commands do all the set-up on a fresh machine (either may run first; both are idempotent):
#   make demo   installs moelens and runs the main job on the embedded model (report + dashboard)
#   make test   installs everything the tests need and runs the whole test suite
# torch is installed pinned first: on CPU-only machines an unpinned torch pulls a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test install install-dev browser clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install -q --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
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

clean:
	rm -rf $(VENV) demo .pytest_cache
