"""The docstring examples run as written."""
import doctest
import importlib

import pytest
import torch


@pytest.mark.parametrize("name", [
    "lightning_ldam", "lightning_ldam.targets", "lightning_ldam.sampler", "lightning_ldam.discriminator",
])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with torch.random.fork_rng(devices=[]):  # the examples build models from the global RNG
        results = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                                  verbose=False)
    assert results.attempted > 0, f"{name} has no doctest examples"
    assert results.failed == 0
