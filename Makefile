# The README's two commands. Both create .venv (or reuse it) and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-lowest-lightning docs install install-dev quality screenshot clean

# The lowest Lightning pyproject.toml allows ("lightning>=X.Y"): the averager matrix runs on it too.
LOWEST_LIGHTNING := $(shell sed -n 's/.*"lightning>=\([0-9.]*\),.*/\1/p' pyproject.toml)

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
	$(VENV)/bin/mypy
	$(MAKE) docs
	$(PY) -m pytest
	$(MAKE) test-lowest-lightning

# The docs site (docs/, mkdocs.yml), warnings as errors, offline; open build/site/index.html
docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build

# lightning==LOWEST.* beside the venv's own (no dependencies: the venv has them), first on the path
test-lowest-lightning: $(VENV)/.installed-dev
	rm -rf .lowest-lightning
	$(PY) -m pip install -q --no-deps --target .lowest-lightning "lightning==$(LOWEST_LIGHTNING).*"
	PYTHONPATH=.lowest-lightning $(PY) -m pytest -q -p no:cacheprovider tests/test_lightning_averagers.py

quality: $(VENV)/.installed
	$(PY) benchmarks/quality.py

# The README's TensorBoard screenshot, from the demo's logs (needs Debian's chromium package).
screenshot: $(VENV)/.installed
	$(PY) examples/tensorboard_screenshot.py --logdir runs/demo --out docs/images/tensorboard_demo.png

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .lowest-lightning
