"""Coloured MNIST digits on coloured backgrounds (3x32x32, offline) and the RGB networks the benchmarks use."""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Tuple

import torch
from mnist_models import JudgeNet, load_mnist_splits
from torch import nn

#: Smallest L2 distance between a digit's colour and its background's in [0, 1]^3: below it the digit
#: could blend into the background and the label would no longer be readable from the image.
MIN_COLOR_DISTANCE = 0.4
IMAGE_SIZE = 32
MAX_OFFSET = 2


def _color_pairs(n: int, generator: torch.Generator, min_distance: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` (foreground, background) colour pairs, uniform in [0, 1]^3, redrawn until ``min_distance`` apart."""
    fg = torch.rand(n, 3, generator=generator)
    bg = torch.rand(n, 3, generator=generator)
    close = (fg - bg).norm(dim=1) < min_distance
    while close.any():  # rejection sampling: ~8% of pairs are redrawn for 0.4, so this ends in a few rounds
        k = int(close.sum())
        fg[close] = torch.rand(k, 3, generator=generator)
        bg[close] = torch.rand(k, 3, generator=generator)
        close = (fg - bg).norm(dim=1) < min_distance
    return fg, bg


def colorize_digits(digits: torch.Tensor, generator: torch.Generator, size: int = IMAGE_SIZE,
                    max_offset: int = MAX_OFFSET, min_distance: float = MIN_COLOR_DISTANCE
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste grey digits in a random colour onto a random background colour.

    Each 28x28 digit is placed in a ``size``x``size`` canvas, centred and then moved by a random offset of
    up to ``max_offset`` pixels per axis; the pixel value is ``bg·(1 - m) + fg·m`` with ``m`` the digit's
    intensity, so images stay in [0, 1].

    Args:
        digits: ``[N, 1, 28, 28]`` intensities in [0, 1].
        generator: the source of every random choice (placement and colours).
        size: canvas side.
        max_offset: largest shift from the centred position, per axis.
        min_distance: smallest L2 distance between foreground and background colours.

    Returns:
        ``(images [N, 3, size, size], fg [N, 3], bg [N, 3])``.
    """
    n, _, h, w = digits.shape
    margin = (size - h) // 2
    if margin < max_offset or size - w < 2 * max_offset:
        raise ValueError(f"colorize_digits: a {h}x{w} digit moved by {max_offset} pixels leaves a {size} canvas")
    offsets = torch.randint(-max_offset, max_offset + 1, (n, 2), generator=generator)
    mask = torch.zeros(n, 1, size, size)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        top, left = margin + dy, (size - w) // 2 + dx
        mask[i, :, top:top + h, left:left + w] = digits[i]
    fg, bg = _color_pairs(n, generator, min_distance)
    images = bg[:, :, None, None] * (1 - mask) + fg[:, :, None, None] * mask
    return images, fg, bg


def load_rgb_splits(seed: int = 0) -> Dict[str, torch.Tensor]:
    """The MNIST splits of :func:`mnist_models.load_mnist_splits` (same seed, same digits), coloured.

    Returns ``target_x``/``judge_x``/``held_x`` (``[N, 3, 32, 32]`` in [0, 1]), their labels, and ``mean``/``std``
    (``[3]``): the per-channel statistics of ``target_x``, the normalisation the target network is trained with.
    """
    data = load_mnist_splits(seed)
    gen = torch.Generator().manual_seed(seed)
    for part in ("target", "judge", "held"):
        data[f"{part}_x"] = colorize_digits(data[f"{part}_x"], gen)[0]
    data["mean"] = data["target_x"].mean(dim=(0, 2, 3))
    data["std"] = data["target_x"].std(dim=(0, 2, 3))
    return data


class RGBNet(nn.Module):
    """The RGB target: conv32-BN-ReLU-pool, conv64-BN-ReLU-pool, a 128-unit hidden layer, 10 logits.

    Expects normalised inputs (``(x - mean) / std``). Layers: ``features.conv1`` (32 channels),
    ``features.conv2`` (64 channels), ``classifier.fc1`` (128 units, pre-ReLU), ``classifier.fc2`` (logits).
    """

    def __init__(self, num_classes: int = 10, image_size: int = IMAGE_SIZE, in_channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_channels, 32, 3, padding=1), bn1=nn.BatchNorm2d(32), relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(32, 64, 3, padding=1), bn2=nn.BatchNorm2d(64), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2)))
        side = image_size // 4
        self.classifier = nn.Sequential(OrderedDict(
            flatten=nn.Flatten(), fc1=nn.Linear(64 * side * side, 128), relu=nn.ReLU(), dropout=nn.Dropout(0.3),
            fc2=nn.Linear(128, num_classes)))

    def forward(self, x):
        return self.classifier(self.features(x))


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as a module (the judge takes pixel-space images)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def rgb_judge(mean: torch.Tensor, std: torch.Tensor, image_size: int = IMAGE_SIZE) -> nn.Module:
    """The independent RGB judge: the LeNet-style :class:`mnist_models.JudgeNet` (5x5 convs, average
    pooling, no BN) on 3x32x32 images (or as many channels as ``mean`` has), normalised inside (statistics of its
    own training images)."""
    return nn.Sequential(Normalize(mean, std), JudgeNet(in_channels=len(mean), image_size=image_size))
