# The README's two commands. Both create .venv (or reuse it) and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install install-dev quality clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[examples]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[dev,examples]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(PY) benchmarks/quality.py --lambdas 0,default --save-grid runs/demo/mnist

test: $(VENV)/.installed-dev
	$(PY) -m pytest

quality: $(VENV)/.installed
	$(PY) benchmarks/quality.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
