"""Tiny networks and an independent reading of their units, for tests that sample them."""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Optional, Sequence, Tuple

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
