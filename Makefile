# The README's two commands. Both create .venv (or reuse it) and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install install-dev quality screenshot clean

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
	$(PY) examples/mnist.py --logdir runs/demo

test: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

quality: $(VENV)/.installed
	$(PY) benchmarks/quality.py

# The README's TensorBoard screenshot, from the demo's logs (needs Debian's chromium package).
screenshot: $(VENV)/.installed
	$(PY) examples/tensorboard_screenshot.py --logdir runs/demo --out examples/tensorboard_demo.png

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
