"""The docstring examples run as written: every module of the package."""
import doctest
import importlib
import pkgutil

import pytest
import torch

import lightning_ldam

MODULES = ["lightning_ldam"] + sorted(f"lightning_ldam.{m.name}" for m in pkgutil.iter_modules(lightning_ldam.__path__)
                                      if m.name != "__main__")
#: Modules whose docstrings must hold examples (a guard against a parametrisation that finds nothing to run).
WITH_EXAMPLES = {"lightning_ldam", "lightning_ldam.sampling.targets", "lightning_ldam.sampling.api", "lightning_ldam.sampling.discriminator",
                 "lightning_ldam.sampling.unit_axes", "lightning_ldam.report.realism", "lightning_ldam.sampling.activations"}
for _name in MODULES:  # at collection: importing Lightning sets environment variables, which a test may not
    importlib.import_module(_name)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with torch.random.fork_rng(devices=[]):  # the examples build models from the global RNG
        results = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                                  verbose=False)
    assert results.attempted > 0 or name not in WITH_EXAMPLES, f"{name} has no doctest examples"
    assert results.failed == 0
