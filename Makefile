# Two commands do everything on a fresh machine with Python 3.10+:
#   make demo   install, then make a small synthetic dataset, train, evaluate (CPU, < 10 min)
#   make test   install, then run the test suite
#   make lint   ruff check (make fixup applies ruff's safe fixes)
# Set VENV= to use the current environment instead of ./.venv (e.g. on Colab or in conda).

PYTHON ?= python3
VENV ?= .venv
PIP_ARGS ?=

ifeq ($(strip $(VENV)),)
PY := $(PYTHON)
STAMP := .installed.stamp
VENV_DEP :=
else
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed.stamp
VENV_DEP := $(PY)
endif

DEMO ?= runs/demo
PYTEST_ARGS ?= -n 2

.PHONY: install demo test test-fast lint fixup results clean-demo

ifneq ($(strip $(VENV)),)
$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "maskdepth needs Python 3.10+, this is " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
endif

$(STAMP): pyproject.toml requirements.txt | $(VENV_DEP)
	$(PY) -m pip install --disable-pip-version-check -q $(PIP_ARGS) -e '.[dev]'
	@touch $@

install: $(STAMP)

demo: install
	$(PY) scripts/demo.py --out $(DEMO)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m 'not slow' $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .

fixup: install
	$(PY) -m ruff check --fix .

# the tables of docs/results.md from the benchmarks' data files (docs/results/*.json); standard library only
results:
	$(PYTHON) benchmarks/render.py

clean-demo:
	rm -rf $(DEMO)
